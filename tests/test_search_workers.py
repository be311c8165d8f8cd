"""Search workers as separate processes: a worker killed with SIGKILL mid-trial leaves a consistent study whose
trial is failed as stale and retried; Ctrl-C stops workers spawned per device cleanly and the same command
resumes; separate commands sharing a PostgreSQL database stop at the budget and never run a trial twice; the
leaderboard agrees with the storage."""

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from optuna.trial import TrialState
from test_search import PLAIN_SEARCH, one_thread  # noqa: F401 (autouse: this process trains on one thread too)

from ktg.cli import main
from ktg.errors import KTGError
from ktg.run_folder import RunFolder
from ktg.search.keys import FAIL_REASON_ATTR, GRAPH_ATTR, RUN_DIR_ATTR
from ktg.search.objective import trial_dir, trial_seed
from ktg.search.results import leaderboard
from ktg.search.settings import resolve_storage_url
from ktg.search.storage import load_study

SEARCH = ["search", *PLAIN_SEARCH, "--nodes", "2", "--crop-sizes", "3", "5", "--dataset", "synthetic", "--image-size",
          "16",
          "--dataset-option", "train_size=48", "--dataset-option", "test_size=8", "--dataset-option", "num_classes=2",
          "--width", "4", "--batch-size", "8", "--lr", "0.05", "--device", "cpu", "--no-progress"]
# One thread per process: the workers of these tests share two cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start_worker(*args: str, new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ktg.cli", *SEARCH, *args], env=ENV, start_new_session=new_session,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = condition()
        except KTGError:  # the study does not exist yet
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what} after {seconds} s")


def assert_consistent(url: str, study_name: str, budget: int, outs) -> list:
    """The budget is met exactly, nothing is left running, every finished trial ran once, in one folder,
    with its own graph, and every search folder's leaderboard lists the storage's trials in its order."""
    study = load_study(url, study_name)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == budget
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for trial in finished:  # a retry continues its original's folder
        folder = Path(trial.user_attrs[RUN_DIR_ATTR])
        runs = [out for out in outs if folder.parents[1] == out.resolve() and (folder / "metrics.json").exists()]
        assert len(runs) == 1, f"trial {trial.number} ran in {runs}"
    assert len({tuple(sorted(t.params.items())) for t in finished}) == budget
    expected = [(row["trial"], row["state"]) for row in leaderboard(study)]
    for out in outs:
        with open(out / "leaderboard.csv", newline="") as file:
            assert [(int(r["trial"]), r["state"]) for r in csv.DictReader(file)] == expected
    return trials


# A worker that stops after its trial's first epoch (checkpoint saved) until the test kills it: the window held open.
HOLD_AFTER_FIRST_EPOCH = """
import sys, time
from pathlib import Path
from ktg.cli import main
from ktg.search.display import SearchDisplay

def hold(self, trial, epoch, metrics):
    if epoch == 1:
        Path(sys.argv[1]).write_text(str(trial))
        time.sleep(600)

SearchDisplay.epoch = hold
sys.exit(main(sys.argv[2:]))
"""


def test_a_killed_workers_trial_is_continued_by_its_retry_exactly(tmp_path):
    out, reference, held = tmp_path / "search", tmp_path / "reference", tmp_path / "held"
    url = resolve_storage_url(None, out)
    # median reads every epoch from the first rung (and prunes nothing before its fifth trial): every epoch is reported
    options = ["--trials", "1", "--epochs", "3", "--pruner", "median", "--first-rung", "1", "--heartbeat-interval", "1",
               "--grace-period", "3"]
    victim = subprocess.Popen([sys.executable, "-c", HOLD_AFTER_FIRST_EPOCH, str(held), *SEARCH, *options,
                               "--out", str(out)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(held.exists, 120, "the worker to finish its trial's first epoch")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.stdout.close()
    killed = load_study(url, "synthetic-2nodes").trials[0]
    assert killed.state == TrialState.RUNNING and sorted(killed.intermediate_values) == [1]
    first_epoch = (trial_dir(out, 0) / "metrics.jsonl").read_text().splitlines()

    assert main([*SEARCH, *options, "--out", str(out)]) == 0  # a second worker: the killed trial is stale after 3 s
    trials = assert_consistent(url, "synthetic-2nodes", 1, [out])
    retry = trials[1]
    assert trials[0].state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == killed.params
    assert retry.user_attrs[RUN_DIR_ATTR] == str(trial_dir(out, 0).resolve())  # the killed trial's folder
    lines = (trial_dir(out, 0) / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and lines[0] == first_epoch[0]  # epoch 1 was not trained again (its timing is the same)
    assert RunFolder(trial_dir(out, 0)).read_config().train.seed == trial_seed(0, 0)  # the killed trial's seed

    # The same trial uninterrupted: equal, to the bit, in every epoch's losses and accuracies and in the end.
    assert main([*SEARCH, *options, "--out", str(reference)]) == 0
    (uninterrupted,) = load_study(resolve_storage_url(None, reference), "synthetic-2nodes").trials
    assert retry.intermediate_values == uninterrupted.intermediate_values and retry.value == uninterrupted.value
    continued, straight = (RunFolder(trial_dir(folder, 0)) for folder in (out, reference))
    assert ([(r.losses, r.node_accuracy, r.ensemble_accuracy) for r in continued.read_epochs()]
            == [(r.losses, r.node_accuracy, r.ensemble_accuracy) for r in straight.read_epochs()])
    assert continued.read_metrics() == straight.read_metrics()
    assert not continued.holds_run() and not straight.holds_run()  # ended trials keep no checkpoint
    note = next(row["note"] for row in leaderboard(load_study(url, None)) if row["trial"] == 0)
    assert "heartbeats" in note and f"retried as trial {retry.number}" in note


def test_workers_sharing_a_device_stop_cleanly_on_ctrl_c_and_resume(tmp_path):
    out = tmp_path / "search"
    url = resolve_storage_url(None, out)
    options = ["--trials", "4", "--epochs", "2", "--out", str(out), "--jobs-per-device", "2"]
    search = start_worker(*options, new_session=True)
    try:
        def a_trial_in_its_first_epoch():
            running = load_study(url, "synthetic-2nodes").get_trials(states=(TrialState.RUNNING,))
            return [t for t in running if GRAPH_ATTR in t.user_attrs and not t.intermediate_values]

        wait_for(a_trial_in_its_first_epoch, 120, "a worker to start training a trial")
        os.killpg(search.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        output, _ = search.communicate(timeout=120)
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
    assert search.returncode == 130, output
    assert "Run the same command to resume" in output
    trials = load_study(url, "synthetic-2nodes").get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get(FAIL_REASON_ATTR) == "interrupted (Ctrl-C or SIGTERM)"]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    queued = {t.system_attrs["failed_trial"]: t for t in trials if t.state == TrialState.WAITING}
    # A worker stopped between asking for its trial and drawing the first choice leaves a trial with nothing to
    # retry (and a failed trial takes no budget), so it is not queued; every other one is (seen under load).
    interrupted = [t for t in interrupted if t.params]
    assert interrupted and {t.number for t in interrupted} <= set(queued), output

    assert main([*SEARCH, *options[:-1], "1"]) == 0  # resume; one worker is enough (and starts faster)
    trials = assert_consistent(url, "synthetic-2nodes", 4, [out])
    for trial in interrupted:
        retry = trials[queued[trial.number].number]
        assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
        # The other worker may have been stopped while it drew its graph: that trial trained nothing, and its
        # retry draws what was missing. A trial that had drawn its whole graph trains exactly that graph again.
        if GRAPH_ATTR in trial.user_attrs:
            assert retry.params == trial.params
    assert any(GRAPH_ATTR in trial.user_attrs for trial in interrupted)  # the one in its first epoch, at least


@pytest.mark.skipif(not os.environ.get("KTG_TEST_POSTGRES_URL"),
                    reason="KTG_TEST_POSTGRES_URL is not set (.ci/run starts a PostgreSQL server and sets it)")
def test_two_workers_on_postgres_share_one_budget(tmp_path):
    url = os.environ["KTG_TEST_POSTGRES_URL"]
    study = f"pg-{uuid.uuid4().hex[:8]}"
    outs = [tmp_path / "machine-a", tmp_path / "machine-b"]  # as on two machines: one database, own folders
    workers = [start_worker("--trials", "4", "--epochs", "2", "--storage", url, "--study", study, "--out", str(out))
               for out in outs]
    for worker in workers:
        output, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, output
    assert_consistent(url, study, 4, outs)


def test_only_the_first_stop_signal_interrupts():
    # Slurm signals every process of a job and a parent forwards its own SIGTERM to its workers: the second
    # signal arrives while the first one's cleanup (fail the trial, queue it again) runs, and must not cut it short.
    from ktg.search.signals import StopRequest

    StopRequest.requested = False
    try:
        with pytest.raises(KeyboardInterrupt):
            StopRequest.handle(signal.SIGTERM, None)
        try:
            StopRequest.handle(signal.SIGTERM, None)
        except KeyboardInterrupt:
            pytest.fail("a second stop signal interrupted the cleanup of the first")
        with pytest.raises(KeyboardInterrupt):
            StopRequest.check()  # the worker loop still stops before its next trial
    finally:
        StopRequest.requested = False


def test_a_worker_that_loses_the_race_to_create_the_tables_of_a_sqlite_study_tries_again(tmp_path, monkeypatch):
    # 16 workers started together on a new study.db: the losers see "table studies already exists", which SQLite
    # raises as an OperationalError (PostgreSQL: IntegrityError, ProgrammingError). The race, held open: another
    # worker creates the tables after this one found them missing and before it creates them.
    import sqlalchemy
    from optuna.storages._rdb.models import BaseModel

    import ktg.search.storage as storage_module

    real, attempts, url = storage_module.RDBStorage, [], f"sqlite:///{tmp_path}/study.db"

    def another_worker_creates_them_first(metadata, connection, **kwargs):
        attempts.append("create")
        if attempts == ["open", "create"]:  # only this worker's first try; the other worker's create goes through
            real(url)

    def counted(*args, **kwargs):
        attempts.append("open")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_module, "RDBStorage", counted)
    monkeypatch.setattr(storage_module.random, "uniform", lambda low, high: 0.0)
    sqlalchemy.event.listen(BaseModel.metadata, "before_create", another_worker_creates_them_first)
    try:
        assert isinstance(storage_module.open_storage(url), real)
    finally:
        sqlalchemy.event.remove(BaseModel.metadata, "before_create", another_worker_creates_them_first)
    # this worker's create, the other's (inside it), this worker's second try, which finds the tables in place
    assert attempts == ["open", "create", "create", "open", "create"]
    attempts.clear()

    def unopenable(*args, **kwargs):  # any other SQLite error is not a race: it is reported at once
        attempts.append(args[0])
        raise sqlalchemy.exc.OperationalError("connect", {}, Exception("unable to open database file"))

    monkeypatch.setattr(storage_module, "RDBStorage", unopenable)
    with pytest.raises(KTGError, match="unable to open database file"):
        storage_module.open_storage(f"sqlite:///{tmp_path}/other.db")
    assert len(attempts) == 1


@pytest.mark.slow
def test_workers_whose_parent_is_killed_stop_cleanly_instead_of_searching_on(tmp_path):
    out = tmp_path / "search"
    url = resolve_storage_url(None, out)
    search = start_worker("--trials", "6", "--epochs", "2", "--out", str(out), "--jobs-per-device", "2",
                          new_session=True)
    try:
        def a_trial_in_its_first_epoch():
            running = load_study(url, "synthetic-2nodes").get_trials(states=(TrialState.RUNNING,))
            return [t for t in running if GRAPH_ATTR in t.user_attrs and not t.intermediate_values]

        wait_for(a_trial_in_its_first_epoch, 120, "a worker to start training a trial")
        # SIGKILL leaves the parent no time to forward a stop (the OOM killer, or a script killing its child)
        os.kill(search.pid, signal.SIGKILL)
        search.wait(timeout=30)  # not communicate(): the workers hold the output pipe open until they end

        def stopped():
            trials = load_study(url, "synthetic-2nodes").get_trials()
            return not [t for t in trials if t.state == TrialState.RUNNING] and trials
        trials = wait_for(stopped, 120, "the orphaned workers to stop")  # a loaded machine starts them slowly
    finally:
        try:
            os.killpg(search.pid, signal.SIGKILL)  # the workers, had they searched on
        except ProcessLookupError:
            pass
        search.stdout.close()
    # each worker stopped its trial as if Ctrl-C had been pressed, and none drew another one
    interrupted = [t for t in trials if t.user_attrs.get(FAIL_REASON_ATTR) == "interrupted (Ctrl-C or SIGTERM)"]
    assert interrupted and len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) < 6
