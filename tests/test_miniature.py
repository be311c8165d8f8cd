"""experiments/miniature.py: Table 1 in miniature. Its table must be the runs' own numbers, its intervals
Student's, and a second call must reuse what is trained as planned and only that."""

import json
import math
import statistics

import pytest
from test_experiments import load_script

from ktg.errors import KTGError
from ktg.run_folder import RunFolder

miniature = load_script("miniature")

TINY = ["--dataset", "synthetic", "--image-size", "16", "--dataset-option", "train_size=48",
        "--dataset-option", "test_size=16", "--dataset-option", "num_classes=2", "--train-subset", "0.5",
        "--nodes", "2", "--epochs", "1", "--trials", "2", "--seeds", "2", "--jobs", "1", "--rescore-seeds", "3",
        "--search-args", "--crop-sizes 3 5", "--width", "4", "--batch-size", "8"]


def test_the_table_is_the_runs_metrics_and_a_second_call_trains_nothing(tmp_path, capsys):
    out = tmp_path / "mini"
    assert miniature.main([*TINY, "--out", str(out)]) == 0
    results = json.loads((out / "miniature.json").read_text())
    assert results["seeds"] == [0, 1]
    metrics = {name: [RunFolder(out / name / f"seed{seed}").read_metrics() for seed in (0, 1)]
               for name in ("independent", "dml", "searched")}
    for name, runs in metrics.items():
        for measure, key in (("ensemble", "ensemble_accuracy"), ("mean_node", "mean_node_accuracy")):
            values = [100 * getattr(m, key) for m in runs]
            assert results["graphs"][name][measure]["values"] == pytest.approx(values)
            assert results["graphs"][name][measure]["mean"] == pytest.approx(statistics.fmean(values))
            assert results["graphs"][name][measure]["std"] == pytest.approx(statistics.stdev(values))
        assert all(m.split == "test" and m.epochs == 1 for m in runs)
    for baseline in ("independent", "dml"):
        d = results["paired"][baseline]["ensemble"]
        differences = [100 * (c.ensemble_accuracy - b.ensemble_accuracy)
                       for c, b in zip(metrics["searched"], metrics[baseline])]
        half = 12.706 * statistics.stdev(differences) / math.sqrt(2)
        assert d["values"] == pytest.approx(differences)
        assert (d["low"], d["mean"], d["high"]) == pytest.approx(
            (statistics.fmean(differences) - half, statistics.fmean(differences), statistics.fmean(differences) + half),
            abs=1e-3)
        assert d["wins"] == sum(x > 0 for x in differences)
    # The searched graph is the race's best searched trial; its verdict against the baselines, which ran inside the
    # study, is the search's own, and the table says whether the test split agrees with it.
    verdict = json.loads((out / "search" / "verdict.json").read_text())
    assert results["search"]["verdict"] == verdict
    assert results["search"]["searched_trial"] == verdict["searched"]["trial"]
    assert [b["baseline"] for b in verdict["baselines"]] == ["independent", "dml"]
    for baseline in ("independent", "dml"):
        own, test = verdict["differences"][baseline], results["paired"][baseline]["ensemble"]
        agreed = results["agreement"][baseline]
        assert agreed["same_sign"] == (own["mean"] * test["mean"] >= 0)
        assert agreed["agree"] == (miniature.claim(own) == miniature.claim(test))
    searched = RunFolder(out / "searched" / "seed0")
    assert searched.read_graph().edges == RunFolder(out / "search" / "trials" / str(
        results["search"]["searched_trial"])).read_graph().edges
    for name in metrics:
        assert RunFolder(out / name / "seed1").read_config().data.options["train_subset"] == 0.5
    table = (out / "miniature.md").read_text()
    independent = results["graphs"]["independent"]["ensemble"]
    assert f"| independent | {independent['mean']:.2f} ± {independent['std']:.2f} |" in table
    assert "| independent (baseline, trial 0) |" in table.split("own verdict")[1]  # the race, in the table
    assert (out / "miniature.png").read_bytes()[:4] == b"\x89PNG"

    checkpoints = {path: path.stat().st_mtime_ns for path in out.glob("**/checkpoint.pt")}
    assert len(checkpoints) == 3 * 2  # the test runs; the search's trials and race runs keep no weights
    capsys.readouterr()
    assert miniature.main([*TINY, "--out", str(out)]) == 0
    assert "trained in" not in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in out.glob("**/checkpoint.pt")} == checkpoints
    # A run trained otherwise than planned is not reused.
    plan = miniature.make_plan(*miniature.get_args_parser().parse_known_args([*TINY, "--out", str(out)]))
    run = RunFolder(plan.run_dir("dml", 0))
    assert miniature.trained_as_planned(plan.train_argv("dml", "dml", 0), run)
    # the run was asked for --device auto and ran on the CPU: asked for on the CPU by name, it trains the same
    assert miniature.trained_as_planned(plan.train_argv("dml", "dml", 0) + ["--device", "cpu"], run)
    assert not miniature.trained_as_planned(plan.train_argv("dml", "dml", 0) + ["--lr", "0.5"], run)
    assert not miniature.trained_as_planned(plan.train_argv("dml", "independent", 0), run)


def test_options_it_sets_itself_or_ktg_rejects_are_refused_before_anything_runs(tmp_path):
    parse = miniature.get_args_parser().parse_known_args
    with pytest.raises(KTGError, match="--seed is set by this script"):
        miniature.make_plan(*parse(["--seed", "3"]))
    with pytest.raises(KTGError, match="rejects"):
        miniature.make_plan(*parse(["--no-such-option"]))
    assert miniature.main(["--seeds", "1", "--out", str(tmp_path / "x")]) == 2
    assert miniature.main(["--rescore-top", "0", "--rescore-seeds", "2", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_an_interrupt_ends_it_in_one_line_that_says_how_to_continue(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(miniature, "ktg", interrupted)  # Ctrl-C while the search runs
    assert miniature.main(["--quick", "--out", str(tmp_path / "x")]) == 130
    assert capsys.readouterr().err.strip() == (f"miniature.py: interrupted; the same command continues from what "
                                               f"{tmp_path / 'x'} holds")


def test_quick_plans_the_same_steps_on_the_digits_with_its_small_budget(tmp_path):
    """--quick is the same plan on a budget (the steps themselves are run by the test above)."""
    plan = miniature.make_plan(*miniature.get_args_parser().parse_known_args(["--quick", "--out", str(tmp_path)]))
    quick = miniature.QUICK
    assert (plan.seeds, plan.trials, plan.epochs) == (tuple(range(quick["seeds"])), quick["trials"], quick["epochs"])
    train = miniature.command_plan(plan.train_argv("dml", "dml", 0))
    assert train.source.name == "digits" and train.source.options["train_subset"] == quick["train_subset"]
    search = miniature.command_plan(plan.search_argv())
    assert (search.rescore_top, search.rescore_seeds, search.trials) == (
        quick["rescore_top"], quick["rescore_seeds"], quick["trials"])


def test_a_ktg_command_runs_in_its_own_process_with_its_output_in_a_log(tmp_path):
    log = tmp_path / "logs" / "graph.log"
    miniature.ktg(["graph", "show", "dml", "--nodes", "2"], log, threads=1)
    lines = log.read_text().splitlines()
    assert lines[0] == "ktg graph show dml --nodes 2" and any("1 → 0" in line for line in lines[1:])
    with pytest.raises(KTGError, match=r"ktg train failed \(exit status 2\): ktg: error: .* see .*train.log"):
        miniature.ktg(["train", "--dataset", "nope"], tmp_path / "train.log", threads=1)
