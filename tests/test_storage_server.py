"""``ktg storage serve``: workers reach a study through one server process (Optuna's gRPC proxy); the server
records their heartbeats and fails the trials of dead workers; a worker whose server goes away stops with one
line after its stated wait, and a restarted server lets the same command resume the study whole."""

import re
import signal
import subprocess
import sys
from pathlib import Path

from optuna.trial import TrialState
from test_search import one_thread  # noqa: F401 (autouse: this process trains on one thread too)
from test_search_workers import ENV, SEARCH, assert_consistent, start_worker, wait_for

from ktg.cli import main
from ktg.search.keys import GRAPH_ATTR
from ktg.search.settings import resolve_storage_url
from ktg.search.storage import load_study


def start_server(storage: Path, grace_period: int) -> tuple[subprocess.Popen, str]:
    """``ktg storage serve`` on a free port: the process and the address it printed."""
    server = subprocess.Popen([sys.executable, "-m", "ktg.cli", "storage", "serve", "--storage", str(storage),
                               "--port", "0", "--grace-period", str(grace_period)],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = server.stdout.readline()
    found = re.search(r"grpc://127\.0\.0\.1:\d+", line)
    assert found, line + server.stdout.read()
    return server, found.group()


def stop(server: subprocess.Popen) -> str:
    server.send_signal(signal.SIGTERM)  # what Slurm sends, as Ctrl-C does
    output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    return output


def test_workers_behind_a_server_survive_its_restart(tmp_path, capsys):
    database, out = tmp_path / "served" / "study.db", tmp_path / "search"
    url = resolve_storage_url(str(database), new_file=True)  # read beside the server, as its machine could
    options = ["--trials", "2", "--epochs", "2", "--out", str(out), "--heartbeat-interval", "1", "--grace-period", "3"]
    server, address = start_server(database, grace_period=4)
    try:
        worker = start_worker(*options, "--storage", address)
        try:
            def training_trial():
                running = load_study(url, "synthetic-2nodes").get_trials(states=(TrialState.RUNNING,))
                return [t for t in running if GRAPH_ATTR in t.user_attrs]

            abandoned = wait_for(training_trial, 120, "a worker to start training a trial")[0]
            assert "the studies are kept in sqlite:///" in stop(server)
            output, _ = worker.communicate(timeout=60)  # it waits its grace period (3 s) for the server, then stops
        finally:
            if worker.poll() is None:
                worker.kill()
    finally:
        if server.poll() is None:
            server.kill()
    assert worker.returncode == 2, output
    assert f"ktg: error: the storage server {address} stopped answering and did not come back within 3 s" in output
    assert "Traceback" not in output
    assert load_study(url, None).trials[abandoned.number].state == TrialState.RUNNING  # as after a lost machine

    server, address = start_server(database, grace_period=4)
    try:
        other = tmp_path / "other.db"  # a second server on the same port would share it with the first
        assert main(["storage", "serve", "--storage", str(other), "--port", address.rsplit(":", 1)[1]]) == 2
        assert "the port is taken" in capsys.readouterr().err and not other.exists()
        # The abandoned trial holds one of the two places until the server, finding no heartbeat for 4 s, fails
        # it and queues it again; this worker then runs the retry.
        assert main([*SEARCH, *options, "--storage", address]) == 0
        capsys.readouterr()
        assert main(["study", "show", "--storage", address]) == 0
        assert "its worker stopped sending heartbeats (killed or lost); retried as trial" in capsys.readouterr().out
    finally:
        stop(server)
    trials = assert_consistent(url, "synthetic-2nodes", 2, [out])
    assert trials[abandoned.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == abandoned.number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == abandoned.params
    assert not any(key.startswith("ktg:") for t in trials for key in t.system_attrs)  # heartbeats are not attributes
