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

import pytest
from optuna.trial import TrialState
from test_search import one_thread  # noqa: F401 (autouse: this process trains on one thread too)

from ktg.cli import main
from ktg.errors import KTGError
from ktg.run_folder import RunFolder
from ktg.search.objective import FAIL_REASON_ATTR, GRAPH_ATTR, trial_dir, trial_seed
from ktg.search.results import leaderboard
from ktg.search.settings import resolve_storage_url
from ktg.search.storage import load_study

SEARCH = ["search", "--nodes", "2", "--crop-sizes", "3", "5", "--dataset", "synthetic", "--image-size", "16",
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
    for trial in finished:
        runs = [out for out in outs if (out / "trials" / str(trial.number) / "metrics.json").exists()]
        assert len(runs) == 1, f"trial {trial.number} ran in {runs}"
    assert len({tuple(sorted(t.params.items())) for t in finished}) == budget
    expected = [(row["trial"], row["state"]) for row in leaderboard(study)]
    for out in outs:
        with open(out / "leaderboard.csv", newline="") as file:
            assert [(int(r["trial"]), r["state"]) for r in csv.DictReader(file)] == expected
    return trials


def test_a_killed_worker_leaves_a_consistent_study_and_its_trial_is_retried(tmp_path):
    out = tmp_path / "search"
    url = resolve_storage_url(None, out)
    options = ["--trials", "2", "--epochs", "3", "--out", str(out), "--heartbeat-interval", "1",
               "--grace-period", "3"]
    victim = start_worker(*options)
    try:
        def training_trial():
            running = load_study(url, "synthetic-2nodes").get_trials(states=(TrialState.RUNNING,))
            return [t for t in running if GRAPH_ATTR in t.user_attrs]

        killed = wait_for(training_trial, 120, "a worker to start training a trial")[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert load_study(url, "synthetic-2nodes").trials[killed.number].state == TrialState.RUNNING

    assert main([*SEARCH, *options]) == 0  # a second worker: it finds the killed trial stale after 3 s
    trials = assert_consistent(url, "synthetic-2nodes", 2, [out])
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == killed.params
    retried_config = RunFolder(trial_dir(out, retries[0].number)).read_config()
    assert retried_config.train.seed == trial_seed(0, killed.number)  # the killed trial's seed, not its own
    note = next(row["note"] for row in leaderboard(load_study(url, None)) if row["trial"] == killed.number)
    assert "heartbeats" in note and f"retried as trial {retries[0].number}" in note


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
    assert {t.number for t in interrupted} <= set(queued), output

    assert main([*SEARCH, *options[:-1], "1"]) == 0  # resume; one worker is enough (and starts faster)
    trials = assert_consistent(url, "synthetic-2nodes", 4, [out])
    for trial in interrupted:
        retry = trials[queued[trial.number].number]
        assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED) and retry.params == trial.params


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
