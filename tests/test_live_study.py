"""A live study read while its trials run: a trial draws its graph one parameter at a time, each written to the
storage at once, so readers (leaderboard, best graph, export, ktg study show, the analysis notebook) meet
half-drawn trials, and workers rewrite the leaderboard while other workers draw. No reader fails on a trial in
progress, and no worker stops because the leaderboard could not be rewritten."""

import csv
import dataclasses
import fcntl
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState
from test_search import CONFIG, SPACE, one_thread, settings, tiny_data  # noqa: F401 (one_thread: autouse)

from ktg.cli import main
from ktg.errors import KTGError
from ktg.graph import GraphSpec, dml
from ktg.search import results
from ktg.search.keys import FAIL_REASON_ATTR, GRAPH_ATTR
from ktg.search.results import describe_graph, export_graph, format_table, graph_of, leaderboard, write_results
from ktg.search.sampler import TrialSeededSampler
from ktg.search.settings import BEST_GRAPH, LEADERBOARD
from ktg.search.storage import RequeueTrial, load_study
from ktg.search.worker import Worker, connect

NO_GRAPH = "no graph drawn yet"


def draw_first_parameter(trial: optuna.Trial) -> None:
    """What the objective has stored of its graph when a reader catches it after its first suggestion."""
    name, distribution = next(iter(SPACE.distributions().items()))
    trial.suggest_categorical(name, distribution.choices)


def half_drawn_study(tmp_path) -> tuple[optuna.Study, GraphSpec]:
    """A study as readers find it mid-search: trial 0 complete with its graph; trial 1 running, half-drawn; trial 2
    failed as stale while drawing (its worker was killed) and trial 3, its queued retry, holding the same half."""
    study, _, _ = connect(settings(tmp_path), heartbeats=False)
    complete = study.ask()
    spec = SPACE.suggest(complete)
    complete.set_user_attr(GRAPH_ATTR, spec.to_dict())
    study.tell(complete, 0.75)
    draw_first_parameter(study.ask())
    killed = study.ask()
    draw_first_parameter(killed)
    RequeueTrial()(study, study.tell(killed, state=TrialState.FAIL))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL,
                                               TrialState.WAITING]
    assert len(study.trials[1].params) == len(study.trials[3].params) == 1
    return study, spec


def test_study_show_reads_a_study_without_importing_pytorch(tmp_path):
    _, spec = half_drawn_study(tmp_path)
    code = ("import sys; from ktg.cli import main; "
            f"status = main(['study', 'show', '--storage', {str(tmp_path)!r}, '--export', 'best', "
            f"{str(tmp_path / 'best.json')!r}]); print('exit', status, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "1 complete, 1 running, 1 waiting, 1 fail" in done.stdout
    assert done.stdout.splitlines()[-1] == "exit 0 False"
    assert GraphSpec.load(tmp_path / "best.json") == spec


def test_every_reader_lists_a_half_drawn_trial_as_running_without_a_graph(tmp_path, capsys):
    study, spec = half_drawn_study(tmp_path)
    rows = {row["trial"]: row for row in leaderboard(study)}
    assert [rows[n]["state"] for n in range(4)] == ["complete", "running", "fail", "waiting"]
    assert rows[0]["rank"] == 1 and rows[0]["graph"] == describe_graph(spec)
    for number in (1, 3):
        assert rows[number]["graph"] == "" and rows[number]["note"] == NO_GRAPH
    assert rows[2]["graph"] == "" and "retried as trial 3" in rows[2]["note"]

    assert write_results(study, tmp_path) == tmp_path / BEST_GRAPH
    assert GraphSpec.load(tmp_path / BEST_GRAPH) == spec
    with open(tmp_path / LEADERBOARD, newline="") as file:
        assert [(r["trial"], r["state"], r["note"]) for r in csv.DictReader(file)][1] == ("1", "running", NO_GRAPH)
    assert export_graph(study, "best", tmp_path / "best.json") == spec
    with pytest.raises(KTGError, match="trial 1 has not drawn its graph yet"):
        export_graph(study, 1, tmp_path / "running.json")
    with pytest.raises(KTGError, match="trial 2 has no graph: it failed before drawing one"):
        export_graph(study, 2, tmp_path / "killed.json")

    assert main(["study", "show", "--storage", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "1 complete, 1 running, 1 waiting, 1 fail" in shown and NO_GRAPH in shown
    assert main(["study", "show", "--storage", str(tmp_path), "--export", "1", str(tmp_path / "g.json")]) == 2
    assert "trial 1 has not drawn its graph yet" in capsys.readouterr().err

    # what notebooks/search_analysis.ipynb calls on every trial
    assert [graph_of(trial) for trial in study.get_trials(deepcopy=False)] == [spec, None, None, None]
    assert NO_GRAPH in format_table(leaderboard(study))


def test_a_trained_trial_without_its_graph_and_a_malformed_graph_are_errors(tmp_path, capsys):
    study, _, _ = connect(settings(tmp_path), heartbeats=False)
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=0.5, params=SPACE.to_params(dml(2)),
                                        distributions=SPACE.distributions()))
    with pytest.raises(KTGError, match="trial 0 is complete but its graph is not stored with it"):
        leaderboard(study)
    assert main(["study", "show", "--storage", str(tmp_path)]) == 2
    assert "trial 0 is complete" in capsys.readouterr().err
    running = study.ask()
    running.set_user_attr(GRAPH_ATTR, {"nodes": []})
    with pytest.raises(KTGError, match="trial 1: "):
        graph_of(study.trials[1])


def test_a_leaderboard_that_cannot_be_written_is_a_warning_and_the_next_trial_rewrites_it(tmp_path, capsys):
    s = settings(tmp_path, trials=2, pruner="none", config=dataclasses.replace(CONFIG, epochs=1))
    blocked = tmp_path / LEADERBOARD
    blocked.mkdir()  # a folder where the file goes: the first rewrite fails

    def unblock(study: optuna.Study) -> None:
        if blocked.is_dir():
            blocked.rmdir()

    Worker(s, dataset=tiny_data(), on_trial=unblock).run()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ktg: warning:")]
    assert len(warnings) == 1 and f"{blocked} and {BEST_GRAPH} not rewritten" in warnings[0]
    with open(blocked, newline="") as file:
        assert [r["state"] for r in csv.DictReader(file)] == ["complete", "complete"]
    assert (tmp_path / BEST_GRAPH).exists()


def test_a_trial_failed_as_stale_behind_its_workers_back_is_a_warning(tmp_path, capsys):
    s = settings(tmp_path)
    study, storage, study_id = connect(s, heartbeats=False)
    trial = study.ask()
    storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                                   TrialState.FAIL)  # what another worker does when it misses the heartbeats
    assert Worker(s)._tell(study, trial, TrialState.COMPLETE, 0.5) is None
    assert "trial 0 was declared stale while running" in capsys.readouterr().err
    assert study.trials[0].state == TrialState.FAIL


def test_four_workers_rewrite_the_leaderboard_while_a_trial_is_half_drawn(tmp_path, monkeypatch):
    """Four workers (threads, each with its own connection to the storage, as processes have) on tiny trials. The
    first trial drawn is held after its first parameter until a leaderboard rewritten by another worker lists it,
    running without a graph: the window in which readers used to fail, held open instead of hit by chance."""
    # one epoch a trial; a grace period no loaded machine reaches: a delayed heartbeat must not fail a trial as stale
    s = settings(tmp_path, trials=4, grace_period=3600, config=dataclasses.replace(CONFIG, epochs=1))
    draw = TrialSeededSampler.sample_independent
    held: dict = {}
    workers: list[threading.Thread] = []

    def listed_running_without_graph(number: int) -> bool:
        if not (tmp_path / LEADERBOARD).exists():
            return False
        with open(tmp_path / LEADERBOARD, newline="") as file:
            return any((r["trial"], r["state"], r["note"]) == (str(number), "running", NO_GRAPH)
                       for r in csv.DictReader(file))

    def draw_holding_the_first_trial(self, study, trial, name, distribution):
        if held.setdefault("trial", trial.number) == trial.number and trial.params and "listed" not in held:
            others = [w for w in workers if w is not threading.current_thread()]
            while not listed_running_without_graph(trial.number) and any(w.is_alive() for w in others):
                time.sleep(0.05)  # until another worker has finished a trial and rewritten the leaderboard
            held["listed"] = listed_running_without_graph(trial.number)
        return draw(self, study, trial, name, distribution)

    monkeypatch.setattr(TrialSeededSampler, "sample_independent", draw_holding_the_first_trial)
    connect(s, heartbeats=False)  # the study exists before its workers start, as run_search makes it
    data = tiny_data()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            Worker(s, dataset=data).run()
        except BaseException as error:  # a worker that stops, as a process would exit non-zero
            errors.append(error)

    workers.extend(threading.Thread(target=work, name=f"worker {i}") for i in range(4))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert held["listed"]
    study = load_study(s.storage_url, s.study_name)
    trials = study.get_trials()
    assert trials[held["trial"]].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == s.trials
    for trial in trials:  # the only other end: a trial handed back in a race for the last places, never run
        assert trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            trial.state == TrialState.FAIL and trial.user_attrs[FAIL_REASON_ATTR].startswith("not run"))
    with open(tmp_path / LEADERBOARD, newline="") as file:
        assert [(int(r["trial"]), r["state"]) for r in csv.DictReader(file)] == [
            (row["trial"], row["state"]) for row in leaderboard(study)]


def test_a_writer_that_read_the_storage_earlier_never_writes_last(tmp_path, monkeypatch):
    """The window that made the leaderboard go back in time, held open: writer A reads the storage (trial 0
    running) and pauses before writing; trial 0 completes, and writer B sets out to write the newer snapshot. Only
    once B has written, or waits for the lock, does A go on. The files end with B's snapshot: trial 0 complete."""
    study, _, _ = connect(settings(tmp_path), heartbeats=False)
    trial = study.ask()
    trial.set_user_attr(GRAPH_ATTR, SPACE.suggest(trial).to_dict())
    a_read, a_may_write, b_on_its_way = threading.Event(), threading.Event(), threading.Event()
    read, flock = results.leaderboard, fcntl.flock

    def read_then_pause_in_a(study):
        rows = read(study)
        if threading.current_thread().name == "A":
            a_read.set()
            assert a_may_write.wait(60)
        return rows

    def lock_announcing_b(file, operation):
        if threading.current_thread().name == "B":
            b_on_its_way.set()  # before it may block: A is let go, and B then reads after A has written
        flock(file, operation)

    monkeypatch.setattr(results, "leaderboard", read_then_pause_in_a)
    monkeypatch.setattr(fcntl, "flock", lock_announcing_b)
    errors: list[BaseException] = []

    def write(name: str) -> threading.Thread:
        def target() -> None:
            try:
                write_results(load_study(settings(tmp_path).storage_url, "test"), tmp_path)
            except BaseException as error:
                errors.append(error)
            finally:
                b_on_its_way.set()  # B wrote, or failed: either way A must not wait for ever

        thread = threading.Thread(target=target, name=name)
        thread.start()
        return thread

    a = write("A")
    assert a_read.wait(60)
    study.tell(trial, 0.5)
    b = write("B")
    assert b_on_its_way.wait(60)
    a_may_write.set()
    a.join()
    b.join()
    assert errors == []
    with open(tmp_path / LEADERBOARD, newline="") as file:
        assert [(r["trial"], r["state"]) for r in csv.DictReader(file)] == [("0", "complete")]
    assert GraphSpec.load(tmp_path / BEST_GRAPH) == graph_of(study.trials[0])
