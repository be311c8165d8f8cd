"""--rescore-top: the best graphs retrained with fresh seeds, the winner chosen by its mean, the runs stored in the
study (resumed, shared between workers, a dead worker's claim taken over)."""

import csv
import dataclasses
import json
import time

import optuna
import pytest
from optuna.trial import TrialState
from test_search import CLI_DATA, CONFIG, SPACE, TINY, one_thread, settings, tiny_data  # noqa: F401 (autouse one_thread)

import ktg.search.rescore as rescore_module
from ktg.cli import main
from ktg.errors import KTGError
from ktg.graph import GraphSpec, dml, independent
from ktg.run_folder import FinalMetrics, RunFolderBusy
from ktg.search.keys import BASELINE_ATTR, CLAIM_PREFIX, GRAPH_ATTR, RESCORE_ATTR, RUN_PREFIX
from ktg.search.objective import Objective, trial_seed
from ktg.search.rescore import (
    Looks,
    RaceRun,
    Rescored,
    Verdict,
    chosen,
    looks,
    minus,
    rescore,
    rescore_seed,
    rescore_split_seed,
    standings,
    store_run,
    summaries,
    verdict,
)
from ktg.search.results import format_table, leaderboard, write_results
from ktg.search.storage import load_study, queue_baseline
from ktg.search.worker import connect
from ktg.train import NonFiniteLossError

optuna.logging.set_verbosity(optuna.logging.WARNING)
#: Search scores of the study below, and what each graph scores with rescore seed index 0 and 1: trial 0 was
#: lucky in the search, trial 1 is better on average, trial 2 is never rescored (--rescore-top 2).
SEARCH = {0: 0.9, 1: 0.8, 2: 0.7}
RESCORED = {0: (0.6, 0.7), 1: (0.75, 0.85), 2: (0.99, 0.99)}


def study_of_three(tmp_path):
    s = settings(tmp_path)
    study, _, _ = connect(s, heartbeats=False)
    for number, graph in enumerate((dml(2), independent(2), dml(2))):
        stored = dataclasses.replace(graph, name=f"trial {number}").resolved(16).to_dict()
        study.add_trial(optuna.create_trial(
            state=TrialState.COMPLETE, value=SEARCH[number], params=SPACE.to_params(graph),
            distributions=SPACE.distributions(), user_attrs={GRAPH_ATTR: stored}))
    return s, study


def final_metrics(ensemble_accuracy: float) -> FinalMetrics:
    """What train() returns for a run whose ensemble scored ``ensemble_accuracy`` (and each node 0.5)."""
    return FinalMetrics(dataset="synthetic", split="val", graph=None, epochs=1, stopped_early=False,
                        node_accuracy=(0.5,), ensemble_accuracy=ensemble_accuracy, mean_node_accuracy=0.5)


@pytest.fixture
def trained(monkeypatch):
    """Replace training by the scores of :data:`RESCORED`; record which (trial, seed) runs were trained."""
    runs = []
    seeds = {rescore_seed(0, index): index for index in range(2)}

    def fake_train(spec, dataset, config, folder, **kwargs):
        trial, index = int(folder.parent.name), seeds[config.seed]
        assert config.holdout_seed == rescore_split_seed(CONFIG.holdout_seed, index)  # run i's own split
        runs.append((trial, index))
        return final_metrics(RESCORED[trial][index])

    monkeypatch.setattr("ktg.train.train", fake_train)  # rescore_run imports the trainer when it trains
    return runs


def test_the_best_mean_is_chosen_named_and_ranked_first(tmp_path, trained):
    s, study = study_of_three(tmp_path)
    write_results(study, tmp_path)
    assert GraphSpec.load(tmp_path / "best_graph.json").name == "trial 0"  # before: the plain argmax
    ranked = rescore(s, study, top=2, seeds=2, dataset=object())
    assert sorted(trained) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r.trial for r in ranked] == [1, 0] and ranked[0].mean == pytest.approx(0.8)
    assert ranked[0].std == pytest.approx(0.0707, abs=1e-4) and ranked[1].search_score == 0.9
    seeds = {(study.user_attrs[f"{RUN_PREFIX}{t}/{i}"]["seed"], study.user_attrs[f"{RUN_PREFIX}{t}/{i}"][
        "holdout_seed"]) for t in (0, 1) for i in (0, 1)}
    # the same fresh seeds and held-out splits for every candidate, none of them the search's split
    assert seeds == {(rescore_seed(0, i), rescore_split_seed(CONFIG.holdout_seed, i)) for i in (0, 1)}
    assert CONFIG.holdout_seed not in {split for _, split in seeds}
    assert not seeds & {trial_seed(0, n) for n in range(3)}

    write_results(study, tmp_path)
    best = GraphSpec.load(tmp_path / "best_graph.json")
    assert best.name.startswith("trial 1, chosen by the race over fresh seeds, 80.00 ± 7.07 % over 2 seeds; no "
                                "baseline in the study")
    assert best.edges == independent(2).edges and chosen(study)[0].number == 1
    with open(tmp_path / "leaderboard.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["rank"], r["trial"], r["rescore_mean"], r["rescore_runs"]) for r in rows] == [
        ("1", "1", "0.8", "2/2"), ("2", "0", "0.65", "2/2, dropped after 2"), ("3", "2", "", "")]
    assert "80.00 ± 7.07 (2/2)" in format_table(leaderboard(study)).splitlines()[1]


def test_writing_the_results_reads_the_storage_once(tmp_path, trained, monkeypatch):
    # Every worker rewrites them after every trial: on a database server with thousands of trials, each read is a
    # round trip of all of them.
    s, study = study_of_three(tmp_path)
    rescore(s, study, top=2, seeds=2, dataset=object())
    reads = []
    get_trials, user_attrs = study.get_trials, type(study).user_attrs
    monkeypatch.setattr(study, "get_trials", lambda *args, **kwargs: reads.append("trials") or get_trials(
        *args, **kwargs))
    monkeypatch.setattr(type(study), "user_attrs", property(lambda self: reads.append("attrs") or user_attrs.fget(
        self)))
    write_results(study, tmp_path)
    assert sorted(reads) == ["attrs", "trials"]
    assert GraphSpec.load(tmp_path / "best_graph.json").name.startswith("trial 1, chosen by the race")


def test_a_rescore_resumes_from_the_stored_runs_and_a_larger_top_reuses_them(tmp_path, trained):
    s, study = study_of_three(tmp_path)
    study.set_user_attr(f"{RUN_PREFIX}0/0", {"seed": 1, "holdout_seed": 5, "ensemble_accuracy": 0.6})  # interrupted
    study.set_user_attr(f"{RUN_PREFIX}0/1", {"seed": 2, "holdout_seed": 6})  # unreadable: cut off while written
    rescore(s, study, top=2, seeds=2, dataset=object())
    assert sorted(trained) == [(0, 1), (1, 0), (1, 1)]
    rescore(s, study, top=3, seeds=2, dataset=object())
    assert sorted(trained)[3:] == [(2, 0), (2, 1)] and chosen(study)[0].number == 2


def test_a_stored_run_is_read_only_when_it_is_one_whole_result():
    finished, diverged = RaceRun(1, 7, 0.5, 0.4, "/runs/1"), RaceRun(3, 8, fail_reason="non-finite loss")
    assert [RaceRun.from_stored(run.to_dict()) for run in (finished, diverged)] == [finished, diverged]
    assert RaceRun.from_stored({"seed": 1, "holdout_seed": 7, "ensemble_accuracy": 0.5}) == RaceRun(1, 7, 0.5)
    # a run of an older race, scored on the search's own split, is a result of such a race only
    assert RaceRun.from_stored({"seed": 1, "ensemble_accuracy": 0.5}) is None
    assert RaceRun.from_stored({"seed": 1, "ensemble_accuracy": 0.5}, split_per_run=False) == RaceRun(1, None, 0.5)
    assert RaceRun.from_stored(finished.to_dict(), split_per_run=False) is None
    for stored in ({"seed": 2}, {"worker": "other:1", "time": 1.0}, {"seed": 1, "ensemble_accuracy": 0.5, "new": 1},
                   {"seed": 1, "ensemble_accuracy": 0.5, "fail_reason": "both"}, {"seed": "1", "fail_reason": "x"},
                   "cut off", None):
        assert RaceRun.from_stored(stored) is None, stored


def test_a_run_another_worker_claimed_at_the_same_instant_is_left_to_it(tmp_path, trained, monkeypatch):
    s, study = study_of_three(tmp_path)
    train_run, busy = rescore_module.rescore_run, []

    def busy_once(settings, dataset, trial, index, **kwargs):
        if (trial.number, index) == (1, 0) and not busy:  # the other worker holds the run's folder, and stores it
            busy.append((1, 0))
            store_run(study, 1, 0, RaceRun(rescore_seed(0, 0), rescore_split_seed(CONFIG.holdout_seed, 0), 0.75))
            raise RunFolderBusy(f"{tmp_path}/rescore/1/0 is being written by ktg pid 1 on other")
        return train_run(settings, dataset, trial, index, **kwargs)

    monkeypatch.setattr(rescore_module, "rescore_run", busy_once)
    ranked = rescore(s, study, top=2, seeds=2, dataset=object(), poll_seconds=0)
    assert busy == [(1, 0)] and (1, 0) not in trained
    assert {r.trial: r.runs for r in ranked}[1][0] == 0.75


def test_a_race_asked_before_splits_per_run_is_read_as_it_ran_and_run_again_when_asked_now(tmp_path, trained):
    s, study = study_of_three(tmp_path)
    study.set_user_attr(RESCORE_ATTR, {"top": 2, "seeds": 2})  # all its runs scored on the search's split
    for trial, accuracies in ((0, (0.6, 0.7)), (1, (0.8, 0.9))):
        for index, accuracy in enumerate(accuracies):
            study.set_user_attr(f"{RUN_PREFIX}{trial}/{index}", {"seed": rescore_seed(0, index),
                                                                 "ensemble_accuracy": accuracy})
    assert [(r.trial, r.accuracies) for r in summaries(study)] == [(1, (0.8, 0.9)), (0, (0.6, 0.7))]
    rescore(s, study, top=2, seeds=2, dataset=object())
    assert sorted(trained) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # every run again, each on a split of its own


def test_a_live_claim_is_waited_for_and_a_dead_workers_claim_taken_over(tmp_path, trained, monkeypatch):
    s, study = study_of_three(tmp_path)
    study.set_user_attr(f"{CLAIM_PREFIX}0/0", {"worker": "other:1", "time": time.time()})  # alive, training
    study.set_user_attr(f"{CLAIM_PREFIX}0/1", {"worker": "other:2", "time": time.time() - s.grace_period - 1})
    waits = []

    def other_worker_finishes(seconds):  # while this worker waits, the live one stores its run
        waits.append(seconds)
        study.set_user_attr(f"{RUN_PREFIX}0/0", {"seed": rescore_seed(0, 0), "holdout_seed": 1,
                                                 "ensemble_accuracy": 0.6})

    monkeypatch.setattr(rescore_module.time, "sleep", other_worker_finishes)
    ranked = rescore(s, study, top=1, seeds=2, dataset=object(), poll_seconds=0.5)
    assert trained == [(0, 1)] and waits == [0.5] and ranked[0].accuracies == (0.6, 0.7)


def test_a_run_that_diverges_is_stored_as_failed_and_ranks_last(tmp_path, monkeypatch):
    s, study = study_of_three(tmp_path)

    def diverging(spec, dataset, config, folder, **kwargs):
        if folder.parent.name == "1":
            raise NonFiniteLossError(1, 1, ["1→0 prob_kl"], of=1)
        return final_metrics(0.5)

    monkeypatch.setattr("ktg.train.train", diverging)
    ranked = rescore(s, study, top=2, seeds=1, dataset=object())
    assert [(r.trial, r.failed) for r in ranked] == [(0, 0), (1, 1)]
    assert "non-finite loss" in study.user_attrs[f"{RUN_PREFIX}1/0"]["fail_reason"]
    assert summaries(load_study(s.storage_url, "test"))[1].complete


def test_search_with_rescore_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "search"
    command = ["search", "--nodes", "2", "--trials", "1", "--epochs", "1", "--pruner", "none", "--crop-sizes", "3",
               "--out", str(out), "--rescore-top", "1", "--rescore-seeds", "1", *CLI_DATA]
    assert main(command) == 0
    printed = capsys.readouterr().out
    # The baselines ran first as trials 0 and 1, then the one searched trial; all three raced on one seed.
    # --epochs 1 on all of the training split: a trial trains 2 on the half it keeps, as many steps.
    assert ("budget 1 trials and the baselines independent, dml of 2 epochs (as many steps as --epochs on the whole "
            "split), scored on a held-out 50% of the synthetic training split") in printed
    assert [printed.count(f"race: trial {n}, seed 1: ensemble") for n in range(3)] == [1, 1, 1]
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["searched"]["trial"] == 2 and [b["baseline"] for b in verdict["baselines"]] == ["independent", "dml"]
    # One seed gives no interval: nothing beats the best baseline at 95 %, which is the graph to keep.
    assert not verdict["beats_best_baseline"] and f"keep {verdict['best_baseline']}" in printed
    assert GraphSpec.load(out / "best_graph.json").name.startswith(f"{verdict['best_baseline']}, chosen by the race")
    assert "budget: 6.0 full training runs of 2 epochs: 3 trials trained 3.0 (the baselines 2.0 of them), the race 3" \
        in printed
    assert main(["search", *command[1:-len(CLI_DATA)], "--rescore-seeds", "0", *CLI_DATA]) == 2
    assert "--rescore-top and --rescore-seeds must be at least 1" in capsys.readouterr().err
    with pytest.raises(KTGError, match="at least 1"):
        rescore(settings(tmp_path), None, top=0, seeds=1)


def race_study(tmp_path, scores: dict[int, tuple[float, ...]], baselines: dict[int, str] = {}):  # noqa: B006
    """A study of complete trials 0.. whose rescore run i scores ``scores[trial][i]``; ``baselines``: which
    trials are baselines (trial number → name)."""
    s = settings(tmp_path)
    study, _, _ = connect(s, heartbeats=False)
    for number in scores:
        graph = independent(2) if number in baselines else dml(2)
        stored = dataclasses.replace(graph, name=baselines.get(number, f"trial {number}")).resolved(16).to_dict()
        study.add_trial(optuna.create_trial(
            state=TrialState.COMPLETE, value=0.5, params=SPACE.to_params(graph), distributions=SPACE.distributions(),
            user_attrs={GRAPH_ATTR: stored, **({BASELINE_ATTR: baselines[number]} if number in baselines else {})}))
    return s, study


@pytest.fixture
def race_runs(monkeypatch):
    """Replace training by ``scores[trial][seed index]`` of the test's :func:`race_study`; record what trained."""
    runs, table = [], {}
    seeds = {rescore_seed(0, index): index for index in range(10)}

    def fake_train(spec, dataset, config, folder, **kwargs):
        trial, index = int(folder.parent.name), seeds[config.seed]
        runs.append((trial, index))
        return final_metrics(table[trial][index])

    monkeypatch.setattr("ktg.train.train", fake_train)
    return runs, table


def test_the_race_drops_what_the_leader_beats_and_gives_the_rest_more_seeds(tmp_path, race_runs):
    runs, table = race_runs
    table.update({0: (0.80, 0.82, 0.81, 0.83, 0.80, 0.81),   # the leader
                  1: (0.60, 0.61, 0.62, 0.60, 0.61, 0.60),   # beaten at 95 % after 3 seeds
                  2: (0.81, 0.80, 0.80, 0.82, 0.81, 0.80)})  # never told apart from the leader
    s, study = race_study(tmp_path, table)
    ranked = rescore(s, study, top=3, seeds=6, min_gain=0.0, dataset=object())
    assert sorted(runs) == [(0, i) for i in range(6)] + [(1, i) for i in range(3)] + [(2, i) for i in range(6)]
    assert [(r.trial, r.dropped_at, len(r.accuracies)) for r in ranked] == [(0, None, 6), (2, None, 6), (1, 3, 3)]


def test_a_baseline_rests_once_told_apart_from_the_best_searched_graph_and_catches_up_for_a_new_one(tmp_path,
                                                                                                   race_runs):
    runs, table = race_runs
    # the looks of a race of 10 seeds: after 3, 5 and 10
    table.update({0: (0.80, 0.81, 0.80, 0.80, 0.81, 0.80, 0.81, 0.80, 0.81, 0.80),  # the best over 3, then overtaken
                  1: (0.70, 0.90, 0.78, 0.99, 0.99, 0.70, 0.95, 0.75, 0.99, 0.70),  # the best from the look at 5 on,
                  2: (0.50, 0.51, 0.52, 0.50, 0.51)})  # not told apart over 3 from dml, which trial 0 was: dml rested
    s, study = race_study(tmp_path, table, baselines={2: "dml"})
    ranked = rescore(s, study, top=2, seeds=10, dataset=object())
    # dml's runs 3 and 4 were trained for trial 1 (which tells it apart over 5 seeds); its later ones never were
    assert sorted(runs) == [(0, i) for i in range(10)] + [(1, i) for i in range(10)] + [(2, i) for i in range(5)]
    assert [(r.trial, r.dropped_at, len(r.accuracies)) for r in ranked] == [(1, None, 10), (0, None, 10), (2, 5, 5)]
    found = verdict(study)
    assert found.searched.trial == 1 and found.differences["dml"].seeds == 5 and found.differences["dml"].above_zero
    # dml's difference is read at the look at which it rested, after 5 seeds, not at the last one's confidence
    assert found.differences["dml"].confidence == found.looks.confidence(5) > found.looks.confidence(10)
    assert found.looks == Looks.of(10, searched=2)  # the 5 % shared among the looks and the 2 searched graphs

    table.clear()
    table.update({0: (0.60, 0.61, 0.60), 1: (0.80, 0.81, 0.80)})  # independent beats the one searched graph
    s, study = race_study(tmp_path / "lost", table, baselines={1: "independent"})
    ranked = rescore(s, study, top=1, seeds=5, dataset=object())
    assert [(r.label, r.dropped_at) for r in ranked] == [("independent (baseline, trial 1)", None), ("trial 0", 3)]
    assert verdict(study).lines()[-1] == ("no searched graph beats the best baseline, independent, at 95 % (the best, "
                                          "trial 0, is worse than it at 95 %): keep independent")


def test_the_verdict_keeps_the_searched_graph_only_where_it_beats_the_best_baseline(tmp_path, race_runs):
    runs, table = race_runs
    table.update({0: (0.70, 0.71, 0.69), 1: (0.60, 0.65, 0.62), 2: (0.80, 0.82, 0.81)})
    s, study = race_study(tmp_path, table, baselines={0: "independent", 1: "dml"})
    rescore(s, study, top=1, seeds=3, dataset=object())
    found = verdict(study)
    assert found.beats and found.searched.trial == 2 and found.best_baseline.baseline == "independent"
    assert found.differences["independent"].seeds == 3 and found.differences["independent"].above_zero
    assert found.lines()[0].startswith("trial 2 − independent = +11.00 [") and "over 3 paired seeds" in found.lines()[0]
    write_results(study, tmp_path)
    assert GraphSpec.load(tmp_path / "best_graph.json").name.startswith("trial 2, chosen by the race")
    assert json.loads((tmp_path / "verdict.json").read_text())["keep"] == "trial 2"

    table[0] += (0.70,)
    table[1] += (0.61,)
    table[2] = (0.72, 0.69, 0.70, 0.71)  # a searched graph the seeds cannot tell from independent: keep independent
    s, study = race_study(tmp_path / "close", table, baselines={0: "independent", 1: "dml"})
    rescore(s, study, top=1, seeds=4, dataset=object())
    found = verdict(study)
    assert not found.beats and found.keep().baseline == "independent" and chosen(study)[0].number == 0
    assert found.lines()[-1].endswith("(the best, trial 2, is not told apart from it): keep independent")
    assert found.differences["independent"].seeds == 4
    assert found.differences["dml"].seeds == 4 and found.differences["dml"].above_zero


def test_a_searched_graph_shown_to_gain_too_little_leaves_the_race_and_the_verdict_says_so(tmp_path, race_runs):
    runs, table = race_runs
    table.update({0: (0.80, 0.81, 0.80, 0.81, 0.80, 0.81, 0.80, 0.81),   # ties independent
                  1: (0.80, 0.80, 0.81, 0.81, 0.80, 0.80, 0.80, 0.80)})  # independent
    s, study = race_study(tmp_path / "bound", table, baselines={1: "independent"})
    rescore(s, study, top=1, seeds=8, min_gain=0.0, dataset=object())
    assert sorted(runs) == [(t, i) for t in (0, 1) for i in range(8)]  # without a smallest gain: to the bound
    assert verdict(study).lines()[-1].endswith("(the best, trial 0, is not told apart from it): keep independent")

    runs.clear()
    s, study = race_study(tmp_path / "min-gain", table, baselines={1: "independent"})
    ranked = rescore(s, study, top=1, seeds=8, min_gain=0.01, dataset=object())
    # over 5 seeds trial 0 − independent = +0.00 [−0.88, +0.88] points: a gain of 1 point is out of reach
    assert sorted(runs) == [(t, i) for t in (0, 1) for i in range(5)]
    assert [(r.trial, r.dropped_at) for r in ranked] == [(1, None), (0, 5)]
    found = verdict(study)
    # the race gives up on a graph at 95 % at every look (that claims no gain); the verdict's interval is the
    # race's, wider
    assert found.keep().baseline == "independent" and minus(found.searched, found.best_baseline).high < 0.01
    assert found.differences["independent"].high > 0.01
    assert found.lines()[-1] == ("no searched graph beats the best baseline, independent, at 95 % (the best, trial 0, "
                                 "gains less than 1.00 points over it at 95 %: +0.00 [-0.88, +0.88] over 5 paired "
                                 "seeds): keep independent")
    write_results(study, tmp_path)
    assert json.loads((tmp_path / "verdict.json").read_text())["min_gain"] == pytest.approx(1.0)

    # a race asked before the smallest gain existed ran to its bound, and is replayed so: it waits for seed 5
    study.set_user_attr(RESCORE_ATTR, {"top": 1, "seeds": 8, "split_per_run": True})
    assert not standings(study).done and verdict(study) is None


def test_searched_graphs_that_tie_each_other_stop_racing_once_shown_within_the_smallest_gain(tmp_path, race_runs):
    runs, table = race_runs
    table.update({0: (0.91, 0.90, 0.91, 0.90, 0.91, 0.90, 0.91, 0.90),   # the leader
                  1: (0.90, 0.91, 0.90, 0.91, 0.90, 0.91, 0.90, 0.90),   # ties it: within 1 point after 8 seeds
                  2: (0.80, 0.81, 0.80, 0.80, 0.81)})                    # independent: told apart over 5, it rests
    s, study = race_study(tmp_path, table, baselines={2: "independent"})
    ranked = rescore(s, study, top=2, seeds=30, min_gain=0.01, dataset=object())
    assert sorted(runs) == [(t, i) for t in (0, 1) for i in range(8)] + [(2, i) for i in range(5)]  # not 30 each
    assert [(r.trial, r.dropped_at) for r in ranked] == [(0, None), (1, 8), (2, 5)]
    found = verdict(study)
    assert found.beats and found.keep().trial == 0 and found.differences["independent"].seeds == 5


def test_a_gain_told_apart_from_zero_wins_even_below_the_smallest_gain(tmp_path, race_runs):
    runs, table = race_runs
    # +0.5 points, told apart from zero at the look after 5 seeds (at 95 % already after 3: too little is not shown)
    table.update({0: (0.805, 0.816, 0.804, 0.806, 0.815), 1: (0.80, 0.81, 0.80, 0.80, 0.81)})
    s, study = race_study(tmp_path, table, baselines={1: "independent"})
    rescore(s, study, top=1, seeds=8, min_gain=0.01, dataset=object())
    found = verdict(study)
    assert found.beats and found.keep().trial == 0 and found.differences["independent"].high < 0.01


def test_a_verdict_without_common_seeds_says_so():
    searched = Rescored(2, 0.8, (0.8, None), failed=1, seeds=2)  # its second run diverged, the baseline's first
    independent_ = Rescored(0, 0.7, (None, 0.7), failed=1, seeds=2, baseline="independent")
    found = Verdict(searched, (independent_,), {}, independent_, beats=False, min_gain=0.0, looks=Looks.of(2))
    assert found.lines() == ["intervals at 95 %, read after 2 seeds",
                             "no searched graph beats the best baseline, independent, at 95 % (the best, trial 2, "
                             "shares no seed with it): keep independent"]


def test_a_race_reads_its_intervals_at_few_growing_looks_that_keep_95_percent_together():
    assert looks(30) == (3, 5, 8, 12, 18, 30) and looks(8) == (3, 5, 8) and looks(6) == (3, 6)
    assert looks(3) == (3,) and looks(1) == (1,)
    # 5 % spent as (n / 30)²: 0.05 % by the look after 3 seeds, 3.2 % of it at the last look
    thirty = Looks.of(30)
    assert thirty.confidences == pytest.approx([1 - 0.05 * ((n / 30) ** 2 - (m / 30) ** 2)
                                                for m, n in zip((0, 3, 5, 8, 12, 18), (3, 5, 8, 12, 18, 30))])
    assert sum(1 - c for c in thirty.confidences) == pytest.approx(0.05) and Looks.of(3).confidences == (0.95,)
    assert thirty.confidence(30) == thirty.confidences[-1] == pytest.approx(0.968)
    assert thirty.confidence(17) == thirty.confidences[3] and thirty.confidence(2) == thirty.confidences[0]
    assert thirty.describe() == ("intervals read after 3, 5, 8, 12, 18 and 30 seeds, at 99.95, 99.91, 99.78, 99.56, "
                                 "99.00 and 96.80 %: all 6 looks together tell apart two graphs that do not differ at "
                                 "most 5 % of the time")
    # with 3 searched graphs, each gets a third of every look's share: a gain claimed for any of them is wrong at
    # most 5 % of the time
    three = Looks.of(30, searched=3)
    assert three.confidences == pytest.approx([1 - (1 - c) / 3 for c in thirty.confidences])
    assert three.describe().endswith(": all 6 looks at the 3 searched graphs together claim a gain that is not there "
                                     "at most 5 % of the time")
    # a race asked before races were sequential read a 95 % interval after every seed
    assert Looks.of(30, "every-seed") == Looks(tuple(range(3, 31)), (0.95,) * 28, "every-seed")
    assert Looks.of(30, "every-seed").describe() == "intervals at 95 %, read after each of 3 to 30 seeds"
    # a race asked on 2026-12-07 read its looks at equal shares of the 5 %
    assert Looks.of(30, "even-shares").confidences == (pytest.approx(1 - 0.05 / 6),) * 6
    assert Looks.of(30, "even-shares").describe() == (
        "intervals at 99.17 %, read after 3, 5, 8, 12, 18 and 30 seeds: all 6 looks together tell apart two graphs "
        "that do not differ at most 5 % of the time")
    assert Looks.of(3, searched=3).describe() == ("intervals at 98.33 %, read after 3 seeds: its one look at the 3 "
                                                  "searched graphs claims a gain that is not there at most 5 % of "
                                                  "the time")


def test_a_race_trains_every_contender_up_to_its_next_look_and_claims_a_gain_only_at_its_confidence(
        tmp_path, race_runs):
    runs, table = race_runs
    # +1 point on every seed but the third: told apart at 95 % after 5 seeds; the race looks after 3 and 6 only
    table.update({0: (0.81, 0.82, 0.80, 0.81, 0.81, 0.81), 1: (0.80, 0.81, 0.80, 0.80, 0.80, 0.80)})
    s, study = race_study(tmp_path, table, baselines={1: "independent"})
    rescore(s, study, top=1, seeds=6, min_gain=0.0, dataset=object())
    assert sorted(runs) == [(t, i) for t in (0, 1) for i in range(6)]  # the looks after 3 and 6 seeds
    found = verdict(study)
    assert found.beats and found.differences["independent"].seeds == 6
    assert found.looks == Looks((3, 6), (pytest.approx(0.9875), pytest.approx(0.9625)), "growing-shares")
    assert found.lines()[0] == "trial 0 − independent = +0.83 [+0.36, +1.30] over 6 paired seeds at 96.25 %"
    assert found.lines()[-2] == ("intervals read after 3 and 6 seeds, at 98.75 and 96.25 %: all 2 looks together "
                                 "tell apart two graphs that do not differ at most 5 % of the time")
    written = json.loads(json.dumps(found.to_dict()))
    assert written["looks"] == {"at": [3, 6], "confidences": [pytest.approx(98.75), pytest.approx(96.25)],
                                "reading": "growing-shares", "searched": 1}
    assert written["differences"]["independent"]["confidence"] == pytest.approx(96.25)
    assert standings(study).describe() == "race: done after 6 seeds and 12 runs (looks after 3 and 6 seeds)"
    # asked for up to 12 seeds, the race reads its intervals after 3, 5, 8 and 12: at 8 it waits for runs 6 and 7
    study.set_user_attr(RESCORE_ATTR, {"top": 1, "seeds": 12, "split_per_run": True, "min_gain": 0.0,
                                       "sequential": True})
    assert standings(study).describe() == ("race: look 3 of 4 (looks after 3, 5, 8 and 12 seeds): 2 contenders "
                                           "racing, 12 of the 16 runs it asks of them finished, 12 runs in all")
    # the same runs in a race asked on 2026-12-07 (sequential, how it read them not stored): even shares of the 5 %
    study.set_user_attr(RESCORE_ATTR, {"top": 1, "seeds": 6, "split_per_run": True, "min_gain": 0.0,
                                       "sequential": True})
    assert verdict(study).looks == Looks((3, 6), (pytest.approx(0.975),) * 2, "even-shares")
    # the same runs in a race asked before races were sequential: a 95 % interval after every seed, told apart at 5
    study.set_user_attr(RESCORE_ATTR, {"top": 1, "seeds": 6, "split_per_run": True, "min_gain": 0.0})
    found = verdict(study)
    assert found.beats and found.differences["independent"].seeds == 5 and set(found.looks.confidences) == {0.95}


def test_a_baseline_trains_to_its_end_and_runs_once(tmp_path):
    s = settings(tmp_path, trials=1, pruner="median", baselines=(independent(2),))
    study, _, _ = connect(s, heartbeats=False)
    queue_baseline(study, "independent", SPACE.to_params(independent(2)), SPACE.distributions())
    queue_baseline(study, "independent", SPACE.to_params(independent(2)), SPACE.distributions())  # already queued
    objective = Objective(SPACE, tiny_data(), dataclasses.replace(CONFIG, epochs=2), tmp_path, node_options=TINY)
    trial = study.ask()
    trial.should_prune = lambda: True  # a pruner that would stop any trial at once
    assert objective(trial) >= 0 and trial.user_attrs[GRAPH_ATTR]["name"] == "independent"
    assert len(study.get_trials()) == 1
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=SPACE.to_params(independent(2)),
                                        distributions=SPACE.distributions(), user_attrs={BASELINE_ATTR: "independent"}))
    duplicate = study.ask()  # queued twice by commands that created the study together
    with pytest.raises(KTGError, match="baseline 'independent' is trial 0 of this study already"):
        objective(duplicate)
