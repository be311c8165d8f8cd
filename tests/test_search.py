"""Graph search in one process: the space ↔ graph-file round trip, pruning at epoch boundaries, failures, budget,
and the command line from `ktg search` to retraining the exported graph."""

import argparse
import csv
import dataclasses
import json
import re
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import ktg.cli.search as search_cli
import ktg.search.objective as objective_module
from ktg.cli import build_parser, main
from ktg.cli.search import search_settings_from_args
from ktg.config import TrainConfig
from ktg.data import DataSource
from ktg.errors import KTGError
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec, dml
from ktg.run_folder import RunFolder
from ktg.search.keys import FAIL_REASON_ATTR, GRAPH_ATTR, RETRY_OF_ATTR, SETTINGS_ATTR
from ktg.search.objective import Objective, trial_dir, trial_seed
from ktg.search.results import leaderboard
from ktg.search.run import run_search
from ktg.search.sampler import TrialSeededSampler
from ktg.search.settings import SearchSettings, resolve_storage_url, trial_training
from ktg.search.space import SearchSpace
from ktg.search.storage import load_study, open_study, queue_again
from ktg.search.worker import Worker, connect

optuna.logging.set_verbosity(optuna.logging.WARNING)

DATA = DataSource("synthetic", image_size=16, options={"train_size": 32, "test_size": 8, "num_classes": 2})
TINY = {"base_width": 4}
CONFIG = TrainConfig(epochs=2, batch_size=8, lr=0.05, device="cpu", holdout=0.5)
SPACE = SearchSpace(num_nodes=2, name="paper", crop_sizes=(3, 5))
#: The papers' plain search: no baselines, no race (tests/test_rescore.py tests them); most tests check the search
#: itself and need not pay for their extra runs.
# A search of trials only, each --epochs long (as short as a test can make it; the default doubles them on the
# synthetic data's held-out half, see test_a_trial_trains_as_many_steps_as_the_chosen_graph_will_unless_told_otherwise).
PLAIN_SEARCH = ["--baseline", "none", "--rescore-top", "0", "--trial-length", "epochs"]
CLI_DATA = ["--dataset", "synthetic", "--image-size", "16", "--dataset-option", "train_size=32",
            "--dataset-option", "test_size=8", "--dataset-option", "num_classes=2", "--width", "4",
            "--batch-size", "8", "--lr", "0.05", "--device", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    """Models this small train fastest on one thread, and they share the machine's cores with other tests."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def settings(tmp_path: Path, **changes) -> SearchSettings:
    base = SearchSettings(space=SPACE, config=CONFIG, out=tmp_path, storage_url=resolve_storage_url(None, tmp_path),
                          study_name="test", trials=3, data_source=DATA, node_options=TINY,
                          heartbeat_interval=1, grace_period=3600)  # no loaded machine makes a trial stale
    return dataclasses.replace(base, **changes)


def tiny_data():
    return DATA.load()


# -- the search space ------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", [
    SearchSpace(num_nodes=3),
    SearchSpace(num_nodes=2, designs=("prob_kl",), gates=("through", "cutoff"), label_gates=("through",)),
    SearchSpace(num_nodes=3, ensemble_as_source=True, model="abn_resnet20", temperature=2.0, crop_sizes=(3, 5)),
    SearchSpace(num_nodes=2, models=("abn_resnet20", "abn_resnet32"), temperatures=(1.0, 4.0),
                gates=("through", "merit", "cutoff")),
], ids=["paper", "subsets", "ensemble-source", "models-temperatures-merit"])
def test_params_and_graph_files_round_trip(space, tmp_path):
    study = optuna.create_study(sampler=TrialSeededSampler(seed=7), direction="maximize")
    for _ in range(6):
        trial = study.ask()
        spec = space.suggest(trial)
        assert space.to_params(spec) == trial.params
        spec.save(tmp_path / "graph.json")
        loaded = GraphSpec.load(tmp_path / "graph.json")
        assert space.to_params(loaded) == trial.params
        assert space.from_params(trial.params, name=spec.name) == loaded
        assert space.suggest(optuna.trial.FixedTrial(trial.params)) == dataclasses.replace(spec, name="trial 0")
        assert len(spec.edges) == len(space.pairs)  # cut-off edges are kept, with their drawn loss
        study.tell(trial, 0.0)


def test_space_sizes_and_readable_names():
    space = SearchSpace(num_nodes=3, name="paper")
    assert space.size == 4**3 * 24**6
    assert list(space.distributions())[:3] == ["label→0 gate", "1→0 loss", "1→0 gate"]
    with_ensemble = SearchSpace(num_nodes=3, name="paper", ensemble_as_source=True)
    assert "ensemble→2 gate" in with_ensemble.distributions()
    assert with_ensemble.size == 4**3 * 24**9
    beyond = SearchSpace(num_nodes=2, name="paper", models=("abn_resnet20", "abn_resnet32"),
                         temperatures=(1.0, 2.0, 4.0))
    assert beyond.size == 2**2 * 4**2 * (24 * 3) ** 2
    assert {"node 0 model", "1→0 temperature"} <= set(beyond.distributions())


def test_known_graphs_map_into_the_space_and_outsiders_are_refused():
    space = SearchSpace(num_nodes=3)
    params = space.to_params(dml(3))
    assert params["1→0 loss"] == "prob_kl" and params["1→0 gate"] == "through"
    assert space.from_params(params).active_edges == dml(3).active_edges
    partial = GraphSpec((NodeSpec(),) * 3, ("through",) * 3, (EdgeSpec(1, 0, "att_mse", "linear"),))
    assert space.to_params(partial)["2→1 gate"] == "cutoff"
    with pytest.raises(KTGError, match="outside the search space"):
        SearchSpace(num_nodes=3, designs=("prob_kl",)).to_params(partial)
    with pytest.raises(KTGError, match="nodes"):
        space.to_params(dml(2))
    with pytest.raises(KTGError, match="unknown gates"):
        SearchSpace(num_nodes=2, gates=("sometimes",))


def test_a_trial_number_draws_the_same_graph_in_every_worker():
    space = SearchSpace(num_nodes=3)

    def graphs(order):
        study = optuna.create_study(sampler=TrialSeededSampler(seed=1), direction="maximize")
        drawn = {}
        for number in order:  # trials created out of order, as concurrent workers would
            while len(study.trials) <= number:
                study.ask()
            drawn[number] = space.suggest(optuna.trial.Trial(study, study.trials[number]._trial_id)).edges
        return drawn

    forwards, backwards = graphs([0, 1, 2, 3]), graphs([3, 2, 1, 0])
    assert forwards == backwards
    assert len({edges for edges in forwards.values()}) == 4


# -- one trial ----------------------------------------------------------------------------------------------


class PruneAt(optuna.pruners.BasePruner):
    """Prune every trial once it has reported ``step``."""

    def __init__(self, step):
        self.step = step
        self.asked = []

    def prune(self, study, trial):
        self.asked.append(trial.last_step)
        return trial.last_step >= self.step


def run_objective(tmp_path, pruner, epochs):
    config = dataclasses.replace(CONFIG, epochs=epochs)
    data = tiny_data()
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=TrialSeededSampler(0))
    study.optimize(Objective(SPACE, data, config, tmp_path, node_options=TINY), n_trials=1)
    return study.trials[0]


def test_only_the_best_complete_trials_keep_their_final_weights(tmp_path):
    s = settings(tmp_path, trials=3, pruner="none", keep_weights=1)
    run_search(s, progress=False)
    trials = load_study(s.storage_url, "test").trials
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert [t.number for t in trials if RunFolder(trial_dir(tmp_path, t.number)).holds_run()] == [best.number]
    assert not list(tmp_path.glob("trials/*/checkpoint.previous.pt"))
    assert (search_cli.kept_weights("best:3"), search_cli.kept_weights("none")) == (3, 0)
    with pytest.raises(argparse.ArgumentTypeError, match="expected best:K"):
        search_cli.kept_weights("best:0")


@pytest.mark.parametrize("first_rung, evaluated", [(1, [1, 2, 4, 5]), (2, [2, 4, 5])])
def test_a_trial_is_evaluated_where_its_pruner_reads_it_and_at_its_end(tmp_path, first_rung, evaluated):
    s = settings(tmp_path, trials=1, config=dataclasses.replace(CONFIG, epochs=5), first_rung=first_rung)
    run_search(s, progress=False)
    (trial,) = load_study(s.storage_url, "test").trials
    assert trial.state == TrialState.COMPLETE and sorted(trial.intermediate_values) == evaluated
    records = RunFolder(trial_dir(tmp_path, 0)).read_epochs()
    assert [record.epoch for record in records if record.evaluated] == evaluated


@pytest.mark.parametrize("failure", [KTGError("the disk is full"), KeyboardInterrupt()])
def test_a_failed_trial_keeps_its_checkpoints_only_to_be_retried(tmp_path, failure):
    def fail_after_the_first_epoch(trial, epoch, metrics):
        raise failure

    study = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0))
    objective = Objective(SPACE, tiny_data(), CONFIG, tmp_path, node_options=TINY, on_epoch=fail_after_the_first_epoch)
    with pytest.raises(type(failure)):
        study.optimize(objective, n_trials=1, catch=())
    run = RunFolder(trial_dir(tmp_path, 0))
    assert [record.epoch for record in run.read_epochs()] == [1]
    # failed for good: nothing will continue it; interrupted: its retry continues from epoch 1
    assert run.holds_run() == isinstance(failure, KeyboardInterrupt)


def test_pruning_happens_at_epoch_boundaries(tmp_path):
    pruner = PruneAt(2)
    trial = run_objective(tmp_path, pruner, epochs=4)
    assert trial.state == TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [1, 2] == pruner.asked
    lines = (tmp_path / "trials" / "0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]  # reported steps are exactly the epochs run
    assert not RunFolder(trial_dir(tmp_path, 0)).holds_run()  # a pruned trial has ended: no checkpoint is kept
    with pytest.raises(KTGError, match="holds an ended run whose weights were not kept .*--keep-weights best:K"):
        RunFolder(trial_dir(tmp_path, 0)).check_is_run()  # what ktg eval says of it
    assert trial.intermediate_values[2] == json.loads(lines[1])["ensemble_accuracy"]
    assert GraphSpec.from_dict(trial.user_attrs[GRAPH_ATTR]) == GraphSpec.load(tmp_path / "trials/0/graph.json")
    assert trial.user_attrs[GRAPH_ATTR]["nodes"][0]["options"] == TINY


def test_the_last_epoch_is_reported_but_never_pruned(tmp_path):
    pruner = PruneAt(2)
    trial = run_objective(tmp_path, pruner, epochs=2)
    assert trial.state == TrialState.COMPLETE and pruner.asked == [1]
    assert sorted(trial.intermediate_values) == [1, 2] and trial.value == trial.intermediate_values[2]
    assert trial.user_attrs["epochs"] == 2 and len(trial.user_attrs["node_accuracy"]) == 2


def test_a_trial_whose_graph_cuts_off_everything_completes(tmp_path):
    space = SearchSpace(num_nodes=2, gates=("cutoff",), label_gates=("cutoff",), crop_sizes=(3,))
    study = optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0))
    study.optimize(Objective(space, tiny_data(), dataclasses.replace(CONFIG, epochs=1), tmp_path,
                             node_options=TINY), n_trials=1)
    (trial,) = study.trials
    assert not GraphSpec.from_dict(trial.user_attrs[GRAPH_ATTR]).active_edges
    # No loss reaches a node, so none learns: each keeps its initial weights and gives every image the same
    # class, which is right for exactly half of the held-out split (8 images of each class): chance level.
    (record,) = [json.loads(line) for line in (tmp_path / "trials/0/metrics.jsonl").read_text().splitlines()]
    assert record["losses"] == {} and record["train_loss"] == 0
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5 and trial.user_attrs["node_accuracy"] == [0.5] * 2


def test_every_trial_trains_with_a_seed_of_its_own_unless_same_seed(tmp_path):
    data, config = tiny_data(), dataclasses.replace(CONFIG, epochs=1, seed=7)
    own = Objective(SPACE, data, config, tmp_path, node_options=TINY)
    trials = [optuna.trial.FixedTrial({}, number) for number in range(3)]
    assert len({own.seed_of(trial) for trial in trials} | {7}) == 4
    assert [Objective(SPACE, data, config, tmp_path, same_seed=True).seed_of(trial) for trial in trials] == [7] * 3
    other = Objective(SPACE, data, dataclasses.replace(config, seed=8), tmp_path)
    assert other.seed_of(trials[0]) != own.seed_of(trials[0])

    optuna.create_study(direction="maximize", sampler=TrialSeededSampler(0)).optimize(own, n_trials=1)
    recorded = RunFolder(trial_dir(tmp_path, 0)).read_config().train.seed
    assert recorded == own.seed_of(trials[0]) == trial_seed(7, 0)
    for flags, same_seed in (([], False), (["--same-seed"], True)):
        args = build_parser().parse_args(["search", "--dataset", "synthetic", *flags])
        assert search_settings_from_args(args).same_seed is same_seed


def test_without_holdout_a_search_holds_out_the_fraction_its_dataset_suggests():
    def holdout(*flags: str) -> float:
        return search_settings_from_args(build_parser().parse_args(["search", *flags])).config.holdout

    datasets = ("cifar10", "cifar100", "digits", "synthetic")
    assert [holdout("--dataset", name) for name in datasets] == [0.2, 0.2, 0.5, 0.5]
    assert holdout("--dataset", "cifar10", "--holdout", "0.3") == 0.3


def test_a_trial_trains_as_many_steps_as_the_chosen_graph_will_unless_told_otherwise():
    def config(*flags: str) -> TrainConfig:
        return search_settings_from_args(build_parser().parse_args(["search", "--dataset", "digits", *flags])).config

    assert config("--epochs", "10").epochs == 20  # the digits hold out half: twice the epochs on half the images
    assert config("--epochs", "10", "--holdout", "0.2").epochs == 13
    assert config("--epochs", "6", "--holdout", "0.4").epochs == 10  # not 11: the float 1 - 0.4 lies below 0.6
    stepped = config("--epochs", "10", "--schedule", "step", "--milestones", "5", "8")
    assert (stepped.epochs, stepped.milestones, stepped.holdout) == (20, (10, 16), 0.5)
    assert config("--epochs", "10", "--trial-length", "epochs").epochs == 10
    paper = config("--recipe", "paper")  # the papers' protocol: trials of the final training's epochs
    assert (paper.epochs, paper.milestones) == (300, (150, 225))
    assert config("--recipe", "paper", "--trial-length", "steps").epochs == 600  # the option given wins
    with pytest.raises(KTGError, match="unknown trial length 'long'; choose one of: steps, epochs"):
        trial_training(config(), "long")
    with pytest.raises(KTGError, match="give it a --holdout"):
        trial_training(TrainConfig(), "steps")


def test_the_search_never_scores_on_the_test_split(tmp_path):
    with pytest.raises(KTGError, match="test split"):
        Objective(SPACE, tiny_data(), dataclasses.replace(CONFIG, holdout=None), tmp_path)
    with pytest.raises(KTGError, match="held-out part of the training split"):
        settings(tmp_path, config=dataclasses.replace(CONFIG, holdout=None))


# -- workers in this process ----------------------------------------------------------------------------


def test_nan_and_out_of_memory_fail_only_their_trials(tmp_path, monkeypatch):
    real_train = objective_module.train

    def train_with_faults(spec, dataset, config, out_dir, **kwargs):
        if Path(out_dir).name == "1":  # an absurd learning rate makes this trial's losses overflow to inf/NaN
            config = dataclasses.replace(config, lr=1e10)
        if Path(out_dir).name == "2":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(spec, dataset, config, out_dir, **kwargs)

    monkeypatch.setattr(objective_module, "train", train_with_faults)
    s = settings(tmp_path, pruner="none")
    run_search(s, progress=False)
    study = load_study(s.storage_url, "test")
    states = {t.number: t.state for t in study.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.FAIL, 2: TrialState.FAIL, 3: TrialState.COMPLETE,
                      4: TrialState.COMPLETE}
    assert "non-finite loss" in study.trials[1].user_attrs[FAIL_REASON_ATTR]
    assert study.trials[2].user_attrs[FAIL_REASON_ATTR].startswith("out of GPU memory")
    with open(tmp_path / "leaderboard.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(int(r["trial"]), r["state"]) for r in rows] == [(r["trial"], r["state"]) for r in leaderboard(study)]
    assert [r["state"] for r in rows[-2:]] == ["fail", "fail"] and "non-finite" in rows[-2]["note"]
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: (t.value, -t.number))
    assert GraphSpec.load(tmp_path / "best_graph.json") == GraphSpec.from_dict(best.user_attrs[GRAPH_ATTR])


def test_a_systematic_failure_stops_the_worker(tmp_path, monkeypatch):
    def broken_train(*args, **kwargs):
        raise KTGError("the disk is full")

    monkeypatch.setattr("ktg.search.objective.train", broken_train)
    with pytest.raises(KTGError, match="2 trials in a row failed.*the disk is full"):
        run_search(settings(tmp_path, max_failures_in_a_row=2), progress=False)


def test_mps_is_refused_off_cuda_before_anything_is_written(tmp_path):
    with pytest.raises(KTGError, match="--mps .* CUDA GPU.* runs on cpu"):
        run_search(settings(tmp_path / "search"), jobs_per_device=2, mps=True, progress=False)
    assert not (tmp_path / "search").exists()


def test_an_orphaned_running_trial_is_failed_requeued_and_the_budget_is_exact(tmp_path):
    s = settings(tmp_path, trials=1, pruner="none", grace_period=2)
    study, _, _ = connect(s, heartbeats=False)
    study.ask()  # a worker died right after asking: RUNNING, no heartbeat, no worker name
    run_search(s, progress=False)
    trials = load_study(s.storage_url, "test").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["failed_trial"] == 0
    config = RunFolder(trial_dir(tmp_path, 0)).read_config()  # the retry continues trial 0's folder
    assert config.train.seed == trial_seed(CONFIG.seed, 0)  # with trial 0's seed
    assert "heartbeats" in leaderboard(load_study(s.storage_url, "test"))[-1]["note"]


def test_a_trial_started_in_a_race_for_the_last_place_is_handed_back(tmp_path):
    s = settings(tmp_path, trials=1)
    study, storage, study_id = connect(s)
    distributions = SPACE.distributions()
    params = SPACE.to_params(dml(2))
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=0.5, params=params,
                                        distributions=distributions))
    queue_again(study, study.trials[0], [0])
    worker = Worker(s)
    state, _ = worker._run_trial(study, storage, study_id, objective=None)  # surplus: it must not train
    assert state is None
    trials = study.get_trials()
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs[FAIL_REASON_ATTR].startswith("not run")
    assert trials[2].state == TrialState.WAITING and trials[2].params == params
    assert trials[2].system_attrs["retry_history"] == [0] and trials[2].user_attrs == {RETRY_OF_ATTR: 0}


def test_joining_with_other_settings_is_refused(tmp_path):
    connect(settings(tmp_path))
    with pytest.raises(KTGError, match=r"train.epochs: study has 2, you gave 3\); .* add --trial-length epochs to join "
                                       r"a study whose trials train --epochs epochs$"):
        connect(settings(tmp_path, config=dataclasses.replace(CONFIG, epochs=3)))
    with pytest.raises(KTGError, match="same_seed: study has False, you gave True"):
        connect(settings(tmp_path, same_seed=True))
    # The study's first rung is its default for 2-epoch trials (70 % of the run, rounded up: 2), stored resolved.
    with pytest.raises(KTGError, match=r"^study 'test' searches with other settings \(first_rung: study has 2, you "
                                       r"gave 1\); use the same options to join it, or another --study$"):
        connect(settings(tmp_path, first_rung=1))
    # How fast a worker runs may differ; what its device resolves to (fp32, NCHW on this CPU) is compared.
    for change in ({"compile": True}, {"eval_batch_size": 7}, {"amp": False}, {"channels_last": False}):
        connect(settings(tmp_path, config=dataclasses.replace(CONFIG, **change)))


@pytest.mark.parametrize("change, difference", [
    ({"amp": True}, "train.precision: study has 'fp32', you gave 'bf16 autocast'"),
    ({"nesterov": True}, "train.nesterov: study has False, you gave True"),  # (channels-last is refused on a CPU)
    ({"deterministic": True}, "train.deterministic: study has False, you gave True"),
])
def test_a_worker_that_would_train_differently_is_refused(tmp_path, change, difference):
    connect(settings(tmp_path))
    with pytest.raises(KTGError, match=f"^study 'test' searches with other settings \\({re.escape(difference)}\\)"):
        connect(settings(tmp_path, config=dataclasses.replace(CONFIG, **change)))


def test_a_cuda_worker_is_compared_resolved_for_its_device(tmp_path):
    s = settings(tmp_path)
    study, storage, _ = connect(s)  # this CPU: fp32, NCHW
    with pytest.raises(KTGError, match="channels_last: study has False, you gave True; train.precision: "
                                       "study has 'fp32', you gave 'bf16 autocast'"):
        open_study(storage, s.study_name, settings=s.shared("cuda"))  # the defaults on CUDA: bf16, channels-last
    cuda_as_this_cpu = dataclasses.replace(s, config=dataclasses.replace(CONFIG, device="cuda:1", amp=False,
                                                                         channels_last=False))
    open_study(storage, s.study_name, settings=cuda_as_this_cpu.shared("cuda"))  # another device, the same training


def test_a_study_from_before_first_rungs_had_its_first_rung_at_epoch_1(tmp_path):
    study, _, _ = connect(settings(tmp_path))
    stored = study.user_attrs[SETTINGS_ATTR]
    study.set_user_attr(SETTINGS_ATTR, {key: value for key, value in stored.items() if key != "first_rung"})
    connect(settings(tmp_path, first_rung=1))
    with pytest.raises(KTGError, match="first_rung: study has 1, you gave 2"):
        connect(settings(tmp_path, first_rung=2))


def test_a_study_from_before_trial_seeds_trained_with_one_seed_and_resumes_with_same_seed(tmp_path):
    study, _, _ = connect(settings(tmp_path))
    stored = study.user_attrs[SETTINGS_ATTR]
    study.set_user_attr(SETTINGS_ATTR, {key: value for key, value in stored.items() if key != "same_seed"})
    connect(settings(tmp_path, same_seed=True))
    with pytest.raises(KTGError, match="same_seed: study has True, you gave False"):
        connect(settings(tmp_path))


# -- the command line -----------------------------------------------------------------------------------------


def test_search_then_export_then_retrain(tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", *PLAIN_SEARCH, "--nodes", "2", "--trials", "3", "--epochs", "2", "--crop-sizes", "3", "5",
                 "--out", str(out), *CLI_DATA]) == 0
    printed = capsys.readouterr().out
    report = printed[printed.index("\nstudy 'synthetic-2nodes': "):]  # the counts, the leaderboard, the files
    assert "best_graph.json" in printed and "leaderboard.csv" in printed and "optuna-dashboard sqlite:///" in printed
    assert (out / "study.db").exists() and (out / "trials" / "0" / "tensorboard").is_dir()
    configs = [RunFolder(trial_dir(out, n)).read_config() for n in range(3)]
    assert configs[0].eval_split == "val"
    assert len({config.train.seed for config in configs}) == 3  # a seed per trial by default

    exported = tmp_path / "trial1.json"
    assert main(["study", "show", "--storage", f"sqlite:///{out / 'study.db'}", "--study", "synthetic-2nodes",
                 "--export", "1", str(exported), "--csv", str(tmp_path / "board.csv")]) == 0
    assert "study 'synthetic-2nodes'" in capsys.readouterr().out
    study = load_study(resolve_storage_url(str(out)), None)
    assert sorted(t.state.name for t in study.trials if t.state.is_finished()).count("FAIL") == 0
    assert len(study.trials) == 3
    assert GraphSpec.load(exported) == GraphSpec.load(out / "trials/1/graph.json")
    assert (tmp_path / "board.csv").read_text() == (out / "leaderboard.csv").read_text()

    assert main(["study", "show", "--storage", str(out), "--export", "best", str(tmp_path / "best.json")]) == 0
    assert GraphSpec.load(tmp_path / "best.json") == GraphSpec.load(out / "best_graph.json")
    assert main(["train", "--graph", str(out / "best_graph.json"), "--epochs", "1", "--out", str(tmp_path / "retrain"),
                 *CLI_DATA]) == 0
    assert json.loads((tmp_path / "retrain/metrics.json").read_text())["split"] == "test"

    # the same command again joins the finished study: nothing more to do
    assert main(["search", *PLAIN_SEARCH, "--nodes", "2", "--trials", "3", "--epochs", "2", "--crop-sizes", "3", "5",
                 "--out", str(out), *CLI_DATA]) == 0
    assert len(load_study(resolve_storage_url(str(out)), None).trials) == 3
    again = capsys.readouterr().out
    assert again[again.index("\nstudy 'synthetic-2nodes': "):] == report


def test_a_search_without_pruning_evaluates_every_epoch_and_measures_the_fidelity_of_each(tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["search", *PLAIN_SEARCH, "--nodes", "2", "--trials", "3", "--epochs", "2", "--crop-sizes", "3", "5",
                 "--pruner", "none", "--out", str(out), *CLI_DATA]) == 0
    trials = load_study(resolve_storage_url(str(out)), None).trials
    assert [sorted(trial.intermediate_values) for trial in trials] == [[1, 2]] * 3
    capsys.readouterr()
    assert main(["study", "fidelity", "--storage", str(out), "--csv", str(tmp_path / "fidelity.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("none pruner, first rung 2: 3 complete trials, final = held-out accuracy at the "
                               "last epoch")
    assert [line.split()[:2] for line in printed[2:4]] == [["1", "3"], ["2", "3"]]
    assert not any(line.startswith(("left out", "skipped")) for line in printed)
    rows = list(csv.DictReader((tmp_path / "fidelity.csv").open()))
    assert [(row["epoch"], row["trials"], row["top_k"], row["pruned_left_out"]) for row in rows] == [
        ("1", "3", "1", "0"), ("2", "3", "1", "0")]
    assert rows[1]["top_k_kept"] == "1"  # the last epoch is the final value


def test_study_show_explains_user_errors(tmp_path, capsys):
    assert main(["study", "show", "--storage", str(tmp_path / "nothing.db")]) == 2
    assert "neither a database URL" in capsys.readouterr().err
    connect(settings(tmp_path), heartbeats=False)
    assert main(["study", "show", "--storage", str(tmp_path), "--study", "other"]) == 2
    assert "no study 'other'" in capsys.readouterr().err
    assert main(["study", "show", "--storage", str(tmp_path), "--export", "best", str(tmp_path / "g.json")]) == 2
    assert "no complete trial" in capsys.readouterr().err
