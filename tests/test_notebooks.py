"""The notebooks are committed without outputs and execute headless on tiny runs and a tiny search made here."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from optuna.trial import TrialState
from test_search import PLAIN_SEARCH

from ktg.cli import main
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec
from ktg.search.results import format_table, leaderboard, state_counts
from ktg.search.storage import load_study
from ktg.viz.graph_figure import summary

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = ["--dataset", "synthetic", "--image-size", "16", "--width", "4", "--batch-size", "16",
        "--dataset-option", "train_size=32", "--dataset-option", "test_size=16", "--dataset-option", "num_classes=4",
        "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel of this interpreter ("python3" resolves to ipykernel's own spec, which
    starts sys.executable); a failing cell raises with its traceback."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook


def images(notebook) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))


def printed(notebook: nbformat.NotebookNode, snippet: str) -> str:
    """What the one code cell whose source contains ``snippet`` printed."""
    (cell,) = [cell for cell in notebook.cells if cell.cell_type == "code" and snippet in cell.source]
    return "".join(output.text for output in cell.outputs if output.output_type == "stream" and output.name == "stdout")


def similarities(text: str) -> tuple[float, list[list[float]]]:
    """The mean similarity and the matrix that the attention notebook prints for one run."""
    mean, matrix = text.split("\n", 1)
    rows = matrix.replace("[", " ").replace("]", " ").split("\n")
    return float(mean.rsplit(" ", 1)[1]), [[float(value) for value in row.split()] for row in rows if row.strip()]


@pytest.mark.slow
def test_attention_notebook_runs_on_two_tiny_runs(tmp_path, monkeypatch):
    pushing = GraphSpec((NodeSpec(),) * 2, ("through", "through"),
                        (EdgeSpec(1, 0, "prob_cos+att_cos", "through"), EdgeSpec(0, 1, "att_cos", "linear")),
                        crop_sizes=(3, 5), name="push")
    pushing.save(tmp_path / "push.json")
    assert main(["train", "--graph", str(tmp_path / "push.json"), "--out", str(tmp_path / "optimised"),
                 "--epochs", "1", *TINY]) == 0
    assert main(["train", "--graph", "independent", "--nodes", "2", "--out", str(tmp_path / "independent"),
                 "--epochs", "1", *TINY]) == 0
    monkeypatch.setenv("KTG_RUN_DIR", str(tmp_path / "optimised"))
    monkeypatch.setenv("KTG_BASELINE_RUN_DIR", str(tmp_path / "independent"))
    monkeypatch.setenv("KTG_N_IMAGES", "3")
    notebook = execute("attention_maps.ipynb", tmp_path)
    assert images(notebook) == 4  # the graph, two grids, the chosen images
    optimised, independent = (GraphSpec.load(tmp_path / name / "graph.json") for name in ("optimised", "independent"))
    assert printed(notebook, "model = ktg.load_run(RUN_DIR)") == (
        f"{tmp_path / 'optimised'}: synthetic, checkpoint of epoch 1\n{summary(optimised)}\n")
    assert printed(notebook, "baseline = ktg.load_run(") == f"{summary(independent)}\n"  # same data: no note
    text = printed(notebook, "mean similarity between different nodes")
    runs = text.split("mean similarity between different nodes")
    assert runs[0].strip() == "this run:" and "independent:" in runs[1]
    for run in (text[:text.index("independent:")], text[text.index("independent:"):]):
        mean, matrix = similarities(run.split(":", 1)[1])
        assert len(matrix) == 2 and matrix[0][0] == matrix[1][1] == 1.0  # each map is itself
        assert matrix[0][1] == matrix[1][0] == pytest.approx(mean, abs=1e-3)  # the mean over the one pair


@pytest.mark.slow
def test_search_notebook_runs_on_a_tiny_search(tmp_path, monkeypatch):
    search = tmp_path / "search"
    assert main(["search", *PLAIN_SEARCH, "--nodes", "2", "--trials", "6", "--epochs", "2", "--crop-sizes", "3", "5",
                 "--out", str(search), *TINY]) == 0
    monkeypatch.setenv("KTG_SEARCH_DIR", str(search))
    monkeypatch.setenv("KTG_TOP", "3")
    notebook = execute("search_analysis.ipynb", tmp_path)
    assert images(notebook) >= 5  # accuracy over trials, pruned vs complete, shares, importances, best graphs
    study = load_study(f"sqlite:///{search / 'study.db'}", None)
    counts = ", ".join(f"{n} {state}" for state, n in state_counts(study).items() if n)
    assert printed(notebook, "study = load_study(") == f"study 'synthetic-2nodes': {counts}\n"
    assert printed(notebook, "print(format_table(") == format_table(leaderboard(study), top=20) + "\n"
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    best = sorted(complete, key=lambda t: (-t.value, t.number))[:3]
    headlines = [line for line in printed(notebook, "for rank, (trial, spec)").splitlines() if line.startswith("#")]
    assert headlines == [f"#{rank}: trial {t.number}, {100 * t.value:.2f} % on the held-out split"
                         for rank, t in enumerate(best, 1)]
