"""Soak: many ``ktg search`` workers against one study through one storage, for a fixed budget of tiny trials.

    python experiments/soak.py --storage sqlite|postgres|grpc|grpc-postgres [--workers 16] [--trials 96]
                               [--timeout 900] [--out DIR]

Starts ``--workers`` separate ``ktg search`` commands (one process each, as on as many machines) on one study and
one search folder, each trial a tiny synthetic run on the CPU (2 nodes of width 4 on 16-px images, 2 epochs: a few
seconds each when 16 share two cores), and waits until they all exit (``--timeout``: then they are killed). The
storages: ``sqlite`` the default OUT/study.db of one machine; ``postgres`` a throwaway PostgreSQL server on
loopback, started and removed here as .ci/run does (``--postgres-url`` uses one already running); ``grpc`` a
``ktg storage serve`` in front of a SQLite file; ``grpc-postgres`` one in front of PostgreSQL.

Counted from the storage afterwards:

- lost: retry chains (a trial and its queued retries) with a failure but neither a finished nor a queued member;
- duplicated: finished trials past the budget, and chains that finished more than once;
- stuck: trials still RUNNING when every worker has exited;
- failed: trials failed for another reason than "not run"; hand-backs: those that a worker asked for in a race
  for the last places and handed back unrun ("not run: ...");
- peak connections, sampled every 0.5 s: PostgreSQL's backends for the database (``pg_stat_activity``), the TCP
  connections to the gRPC server's port, or the processes holding the SQLite file open;
- trials per minute: finished trials over the time from the first trial's start to the last one's end.

Prints one Markdown table row and writes everything to OUT/soak.json.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from optuna.trial import TrialState

from ktg.search.keys import FAIL_REASON_ATTR, FAILED_TRIAL_ATTR
from ktg.search.storage import POOL_OVERFLOW, POOL_SIZE, load_study

STORAGES = ("sqlite", "postgres", "grpc", "grpc-postgres")
STUDY = "soak"
TRIAL = ["--baseline", "none", "--rescore-top", "0", "--dataset", "synthetic", "--image-size", "16",
         "--dataset-option", "train_size=32",
         "--dataset-option", "test_size=8", "--dataset-option", "num_classes=2", "--nodes", "2", "--crop-sizes", "3",
         "--width", "4", "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--no-progress"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def throwaway_postgres(folder: Path):
    """A PostgreSQL server on loopback for this soak (its URL), removed afterwards; as root, it runs as postgres."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if not binaries:
        raise SystemExit("soak: PostgreSQL is not installed (apt-get install postgresql), or give --postgres-url")
    pg = Path(binaries[-1])
    owner = []
    if os.getuid() == 0:  # initdb refuses root
        os.chown(folder, pwd.getpwnam("postgres").pw_uid, -1)
        owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"

    def run(*command: str) -> None:
        subprocess.run([*owner, *command], check=True, stdout=subprocess.DEVNULL)

    run(str(pg / "initdb"), "-D", str(data), "-U", "ktg", "--auth=trust", "-E", "UTF8", "--locale=C")
    run(str(pg / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
        f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}", "start")
    try:
        run(str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ktg", "ktg_soak")
        yield f"postgresql+psycopg2://ktg@127.0.0.1:{port}/ktg_soak"
    finally:
        subprocess.run([*owner, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def served(database: str, log: Path):
    """``ktg storage serve`` of ``database`` on a free port: its grpc:// address."""
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "ktg.cli", "storage", "serve", "--storage", database,
                                   "--port", "0"], stdout=subprocess.PIPE, stderr=output, text=True)
        try:
            line = server.stdout.readline()
            found = re.search(r"grpc://\S+:\d+", line)
            if not found:
                raise SystemExit(f"soak: ktg storage serve did not start: {line}{log.read_text()}")
            yield found.group()
        finally:
            server.terminate()
            server.wait(timeout=60)


class Peak:
    """The largest of ``count()``, sampled every 0.5 s from a thread while in the ``with`` block."""

    def __init__(self, count) -> None:
        self.count, self.peak, self._stop = count, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "Peak":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):  # a process or connection that ends while it is counted
                self.peak = max(self.peak, self.count())


def postgres_backends(url: str):
    import psycopg2
    import sqlalchemy

    parts = sqlalchemy.engine.make_url(url)
    connection = psycopg2.connect(host=parts.host, port=parts.port, user=parts.username, dbname=parts.database)
    connection.autocommit = True

    def count() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                           (parts.database,))
            return cursor.fetchone()[0]

    return count


def tcp_connections(port: int):
    """Established TCP connections whose local port is ``port`` (the server's side of each)."""
    def count() -> int:
        total = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as file:
                for line in file.readlines()[1:]:
                    fields = line.split()
                    total += int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01"
        return total

    return count


def file_holders(path: Path):
    """Processes holding ``path`` open."""
    target = str(path)

    def count() -> int:
        holders = 0
        for fd_dir in glob.glob("/proc/[0-9]*/fd"):
            with contextlib.suppress(OSError):
                holders += any(os.readlink(os.path.join(fd_dir, fd)) == target for fd in os.listdir(fd_dir))
        return holders

    return count


def chains(trials) -> dict[int, list]:
    """Trials grouped by the original trial of their retry chain."""
    grouped: dict[int, list] = {}
    for trial in trials:
        grouped.setdefault(trial.system_attrs.get(FAILED_TRIAL_ATTR, trial.number), []).append(trial)
    return grouped


def count(url: str, budget: int) -> dict:
    trials = load_study(url, STUDY).get_trials()
    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    finished = [t for t in trials if t.state in finished_states]
    failed = [t for t in trials if t.state == TrialState.FAIL
              and not str(t.user_attrs.get(FAIL_REASON_ATTR, "")).startswith("not run")]
    lost = duplicated = 0
    for chain in chains(trials).values():
        ends = sum(t.state in finished_states for t in chain)
        queued = any(t.state == TrialState.WAITING for t in chain)
        lost += any(t in failed for t in chain) and not ends and not queued
        duplicated += max(0, ends - 1)
    starts = [t.datetime_start for t in finished if t.datetime_start]
    ends = [t.datetime_complete for t in finished if t.datetime_complete]
    minutes = (max(ends) - min(starts)).total_seconds() / 60 if finished else float("nan")
    return {"trials": len(trials), "finished": len(finished), "states": Counter(t.state.name for t in trials),
            "lost": lost, "duplicated": duplicated + max(0, len(finished) - budget),
            "stuck": sum(t.state == TrialState.RUNNING for t in trials), "failed": len(failed),
            "hand_backs": sum(t.state == TrialState.FAIL for t in trials) - len(failed),
            "reasons": sorted({str(t.user_attrs.get(FAIL_REASON_ATTR)) for t in failed}),
            "trials_per_minute": len(finished) / minutes if finished else 0.0}


def soak(storage: str, workers: int, budget: int, timeout: float, out: Path, postgres_url: str | None) -> dict:
    search = out / "search"
    with contextlib.ExitStack() as stack:
        if storage in ("postgres", "grpc-postgres"):
            database = postgres_url or stack.enter_context(
                throwaway_postgres(Path(tempfile.mkdtemp(prefix="ktg-soak-pg-"))))
        else:
            database = f"sqlite:///{(out / 'study.db').resolve()}"
        url = stack.enter_context(served(database, out / "server.log")) if storage.startswith("grpc") else database
        if storage in ("postgres", "grpc-postgres"):
            counter = postgres_backends(database)
        elif storage == "grpc":
            counter = tcp_connections(int(url.rsplit(":", 1)[1]))
        else:
            counter = file_holders((out / "study.db").resolve())
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "ktg.cli", "search", *TRIAL, "--trials", str(budget), "--study", STUDY,
                   "--storage", url, "--out", str(search), "--heartbeat-interval", "5", "--grace-period", "60"]
        logs = out / "workers"
        logs.mkdir()
        started = time.monotonic()
        with Peak(counter) as peak:
            processes = [subprocess.Popen(command, env=env, stdout=open(logs / f"{i}.log", "w"),
                                          stderr=subprocess.STDOUT) for i in range(workers)]
            deadline = started + timeout
            for process in processes:
                try:
                    process.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        wall = time.monotonic() - started
        result = {"storage": storage, "workers": workers, "budget": budget, "wall_s": round(wall, 1),
                  "exit_codes": Counter(p.returncode for p in processes), "peak_connections": peak.peak,
                  **count(url, budget)}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", choices=STORAGES, required=True)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--trials", type=int, default=96, help="the study's budget of finished trials")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before the workers are killed")
    parser.add_argument("--out", type=Path, help="folder for the study, search folder and logs (default: a new "
                        "temporary folder, removed unless something went wrong)")
    parser.add_argument("--postgres-url", help="a PostgreSQL database to use instead of a throwaway server")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix=f"ktg-soak-{args.storage}-"))
    out.mkdir(parents=True, exist_ok=True)
    result = soak(args.storage, args.workers, args.trials, args.timeout, out, args.postgres_url)
    (out / "soak.json").write_text(json.dumps(result, indent=2, default=dict) + "\n")
    codes = ", ".join(f"{n}× {code}" for code, n in sorted(result["exit_codes"].items()))
    print(f"| {args.storage} | {args.workers} | {result['finished']}/{args.trials} | {result['lost']} | "
          f"{result['duplicated']} | {result['stuck']} | {result['failed']} | {result['hand_backs']} | "
          f"{result['peak_connections']} | "
          f"{result['trials_per_minute']:.1f} | {result['wall_s']:.0f} s | {codes} |")
    print(f"soak: pool per process {POOL_SIZE} + {POOL_OVERFLOW}; details in {out / 'soak.json'}")
    clean = not (result["lost"] or result["duplicated"] or result["stuck"] or result["failed"]
                 or set(result["exit_codes"]) != {0} or result["finished"] != args.trials)
    if clean and args.out is None:
        shutil.rmtree(out)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
