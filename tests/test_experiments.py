"""Experiment configs: every protocol's config validates, a dry run of each starts and finishes on a tiny budget,
and collect.py turns the finished runs into tables beside the papers' numbers."""

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CONFIGS = sorted((EXPERIMENTS / "configs").glob("*.json"))
PROTOCOLS = {"dogs_search", "dogs_baselines", "dogs_retrain", "cub_retrain", "cars_retrain", "cifar100_ktg_search",
             "cifar100_ktg_retrain", "hand_made_low_data", "mnist20_picks", "mnist20_race_regime",
             "mnist20_random_picks", "mnist20_learning_rate"}


def load_script(name):
    """Import experiments/<name>.py; the scripts import their shared module ``protocols`` from their folder."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    module_name = name if name == "protocols" else f"experiments_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, EXPERIMENTS / f"{name}.py")
        sys.modules[module_name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module_name])
    return sys.modules[module_name]


protocols = load_script("protocols")


def test_there_is_one_config_per_protocol():
    assert {path.stem for path in CONFIGS} == PROTOCOLS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_every_command_parses(path):
    config = protocols.load_config(path)
    assert config.name == path.stem
    jobs = protocols.expand(config, "RUNS")
    assert len(jobs) == len(config.seeds) * len(list(itertools.product(*config.grid.values())))
    for job in jobs:
        assert str(job.out).startswith("RUNS/") and job.args["out"] == str(job.out)
        assert "{" not in " ".join(job.argv()), job.argv()


def test_the_reference_protocol_is_the_papers():
    from ktg.config import TrainConfig
    from ktg.registry import RECIPES

    paper = TrainConfig.from_recipe("paper", {})
    schedule = (paper.lr, paper.momentum, paper.weight_decay, paper.batch_size, paper.epochs, paper.schedule)
    assert schedule == (0.1, 0.9, 1e-4, 16, 300, "step") and paper.amp is False  # fp32, as the papers
    assert paper.milestones == (150, 225) and paper.gamma == 0.1 and not paper.nesterov and paper.drop_last
    assert RECIPES["paper"].node_options == {"attention_residual": False}  # M·g
    assert {**RECIPES["paper-bf16"].train, "amp": False} == RECIPES["paper"].train
    fine_grained = [protocols.load_config(EXPERIMENTS / "configs" / f"{name}.json").args
                    for name in ("dogs_baselines", "dogs_retrain", "cub_retrain", "cars_retrain", "dogs_search")]
    assert all(args["model"] == "abn_resnet18" for args in fine_grained)
    assert [args["recipe"] for args in fine_grained] == ["paper"] * 4 + ["paper-bf16"]
    search = fine_grained[-1]
    assert search["trials"] == 6000 and search["nodes"] == 3 and search["holdout"] == 0.5
    cifar = protocols.load_config(EXPERIMENTS / "configs" / "cifar100_ktg_search.json").args
    assert cifar["designs"] == ["prob_kl"] and cifar["nesterov"] is True and cifar["milestones"] == [60, 120, 180]
    assert (cifar["weight-decay"], cifar["batch-size"], cifar["epochs"]) == (5e-4, 64, 200)


def test_a_bad_config_is_one_clear_error(tmp_path):
    good = json.loads((EXPERIMENTS / "configs" / "dogs_baselines.json").read_text())
    cases = [({**good, "args": {**good["args"], "learning-rate": 0.1}}, "ktg rejects the command line"),
             ({**good, "command": "fit"}, "is not one of train, search"),
             ({**good, "seed": [0]}, "unknown field(s) seed"),
             ({**good, "out": "{runs}/{colour}/seed{seed}"}, "unknown placeholder"),
             ({**good, "reference": [{"match": {"depth": 3}, "source": "x", "ensemble": 1.0}]}, "match on depth"),
             ({**good, "paired_with": {"graph": "merit"}}, "paired_with: expected an object naming"),
             ({**good, "paired_with": {"lr": 0.1}}, "paired_with: expected an object naming")]
    for number, (data, message) in enumerate(cases):
        path = tmp_path / f"bad{number}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(protocols.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            protocols.load_config(path)


def test_a_dry_run_trains_one_epoch_at_a_constant_rate_where_the_job_would_step(tmp_path):
    good = json.loads((EXPERIMENTS / "configs" / "dogs_baselines.json").read_text())  # the paper recipe: step
    cases = [(good["args"], "constant"),
             ({**good["args"], "schedule": "cosine"}, None),  # the job's own schedule replaces its recipe's
             ({**good["args"], "recipe": None, "schedule": "step", "milestones": [5], "epochs": 10}, "constant")]
    for number, (args, expected) in enumerate(cases):
        path = tmp_path / f"config{number}.json"
        path.write_text(json.dumps({**good, "args": args}))
        job = protocols.dry_run_job(protocols.expand(protocols.load_config(path), tmp_path)[0])
        assert job.args.get("schedule") == (expected or args.get("schedule")) and job.args["epochs"] == 1
        assert ("constant learning rate" in " ".join(job.notes)) == (expected == "constant")
        if expected:
            assert "milestones" not in job.args


def test_collect_pairs_every_variant_with_the_one_the_config_names_seed_by_seed():
    collect = load_script("collect")
    config = protocols.load_config(EXPERIMENTS / "configs" / "hand_made_low_data.json")

    def group(data_root, graph, ensembles):
        by_seed = {str(seed): {"ensemble": value, "node_mean": value - 10} for seed, value in ensembles.items()}
        return {"values": {"data_root": data_root, "graph": graph}, "by_seed": by_seed, "seeds": len(by_seed),
                "precision": "fp32", "reference": {},
                **{key: collect.mean_std([run[key] for run in by_seed.values()]) for key in ("ensemble", "node_mean")}}

    groups = [group("mnist20", "independent", {0: 80.0, 1: 82.0, 2: 84.0}),
              group("mnist20", "prob_push", {0: 81.0, 1: 81.0, 2: 87.0, 3: 99.0}),  # seed 3 has no partner
              group("digits20", "independent", {0: 10.0, 1: 10.0}),
              group("digits20", "dml", {5: 50.0})]  # no seed in common with its independent
    for g in groups:
        g["paired"] = collect.paired_against(config, g, groups)
    independent, push, _, dml = groups
    assert independent["paired"] is None and dml["paired"] is None
    difference = push["paired"]["ensemble"]  # +1, −1, +3 over seeds 0–2: the same data root's independent
    assert (difference.seeds, difference.wins, difference.mean) == (3, 2, pytest.approx(1.0))
    assert push["paired"]["node_mean"].mean == pytest.approx(1.0)

    header, rows = collect.training_rows(config, groups)
    assert header[-2:] == ["ensemble − independent", "node mean − independent"]
    assert rows[1]["ensemble − independent"] == f"{difference.describe(scale=1.0)}, better on 2"
    assert rows[1]["ensemble − independent"].startswith("+1.00 [") and rows[0]["ensemble − independent"] == ""
    flat = collect.csv_rows(config, groups)
    assert flat[1]["paired_with"] == "independent" and flat[1]["ensemble_diff_mean"] == pytest.approx(1.0)
    assert set(flat[1]) <= set(collect.CSV_COLUMNS) and "paired_with" not in flat[0]


@pytest.mark.slow
def test_dry_runs_of_every_config_start_and_collect_makes_the_tables(tmp_path, capsys):
    run, collect = load_script("run"), load_script("collect")
    runs = tmp_path / "runs"
    # The searches first, so that the retraining configs find the graphs they found.
    order = sorted(CONFIGS, key=lambda path: "search" not in path.stem)
    for path in order:
        assert run.main([str(path), "--dry-run", "--runs", str(runs)]) == 0, path.stem
    out = capsys.readouterr().out
    assert "ktg search --dataset synthetic" in out and "--trials 1" in out and "--epochs 1" in out
    assert (runs / "dogs_search_3nodes" / "best_graph.json").is_file()
    assert (runs / "dogs_retrain" / "optimised_3nodes" / "seed0" / "metrics.json").is_file()

    assert run.main([str(EXPERIMENTS / "configs" / "dogs_retrain.json"), "--dry-run", "--runs", str(runs)]) == 0
    assert "finished already" in capsys.readouterr().out
    # The same run asked for with another option is not taken for finished: ktg would train it otherwise.
    assert run.main([str(EXPERIMENTS / "configs" / "dogs_retrain.json"), "--dry-run", "--runs", str(runs),
                     "--set", "lr=0.5"]) == 2
    assert "trained otherwise than this command would train" in capsys.readouterr().err

    assert collect.main([str(runs)]) == 0
    tables = (runs / "results.md").read_text()
    assert "| nodes=3 | 1 |" in tables and "| graph=independent nodes=2 | 1 |" in tables
    assert "Stanford Dogs, ensemble accuracy % by number of nodes" in tables
    assert "(71.06)" in tables  # the paper's number beside ours
    assert "| graph=independent nodes=2 | 1 | fp32 |" in tables  # with the precision ours trained in
    rows = (runs / "results.csv").read_text().splitlines()
    assert rows[0].startswith("config,variant,seeds,node_mean")
    assert any(row.startswith("dogs_baselines,graph=independent nodes=2,1,") and ",fp32,public code,,,71.06," in row
               for row in rows)


def test_run_py_listing_into_a_reader_that_went_away_ends_quietly(tmp_path):
    # `run.py CONFIG --list | head`: stdout is a pipe nobody reads any more (closed before the script starts).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, str(EXPERIMENTS / "run.py"), str(CONFIGS[0]), "--list",
                               "--runs", str(tmp_path)], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=60)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
