"""ktg compare: finished runs' accuracies side by side, as make demo prints the searched graph beside a baseline."""

import pytest

from ktg.cli import main
from ktg.run_folder import RunFolder

DATA = ["--dataset", "synthetic", "--dataset-option", "train_size=32", "--dataset-option", "test_size=16",
        "--dataset-option", "num_classes=4", "--image-size", "16", "--width", "4", "--batch-size", "16",
        "--epochs", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished 2-node dml run and a finished 3-node independent run."""
    folder = tmp_path_factory.mktemp("compare")
    assert main(["train", "--graph", "dml", "--nodes", "2", "--out", str(folder / "dml"), *DATA]) == 0
    assert main(["train", "--graph", "independent", "--nodes", "3", "--out", str(folder / "independent"), *DATA]) == 0
    return folder / "dml", folder / "independent"


def test_runs_are_printed_side_by_side_with_the_names_given(runs, capsys):
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--names", "searched graph", "baseline"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["searched", "graph", "baseline"]
    rows = {line.split("  ")[0].strip(): line for line in lines[1:]}
    assert list(rows) == ["dataset", "graph", "epochs", "evaluated on", "node 0", "node 1", "node 2", "mean node",
                          "ensemble"]
    dml, independent = (RunFolder(run).read_metrics() for run in runs)
    assert rows["ensemble"].split()[1:] == [f"{100 * dml.ensemble_accuracy:.2f}", "%",
                                            f"{100 * independent.ensemble_accuracy:.2f}", "%"]
    assert rows["node 2"].split()[2] == "—"  # the 2-node run has no node 2
    assert rows["graph"].split()[1:] == ["dml", "independent"]


@pytest.mark.parametrize("problem", ["names", "unfinished", "missing"])
def test_a_bad_comparison_is_one_line(runs, tmp_path, capsys, problem):
    if problem == "names":
        argv = ["compare", *map(str, runs), "--names", "one"]
    elif problem == "unfinished":
        unfinished = tmp_path / "unfinished"
        unfinished.mkdir()
        for path in runs[0].iterdir():
            if path.is_file() and path.name != "metrics.json":
                (unfinished / path.name).write_bytes(path.read_bytes())
        argv = ["compare", str(runs[0]), str(unfinished)]
    else:
        argv = ["compare", str(runs[0]), str(tmp_path / "nothing")]
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("ktg: error: ") and error.count("\n") == 1
    assert {"names": "one per run", "unfinished": "has not finished", "missing": "does not exist"}[problem] in error


def test_a_long_graph_name_is_cut_in_the_table():
    """A search's chosen graph names its verdict at length; the table keeps a column a screen can show."""
    from ktg.cli.compare import GRAPH_CELL, format_comparison
    from ktg.run_folder import FinalMetrics

    name = "independent, chosen by the race over fresh seeds; trial 3 − independent = +0.15 [-8.53, +8.83]"
    final = FinalMetrics(dataset="digits", split="test", graph=name, epochs=4, stopped_early=False,
                         node_accuracy=(0.5,), ensemble_accuracy=0.5, mean_node_accuracy=0.5)
    graph_row = next(line for line in format_comparison(["recommended"], [final]).splitlines()
                     if line.startswith("graph"))
    assert graph_row.split(None, 1)[1] == name[:GRAPH_CELL - 1] + "…"
