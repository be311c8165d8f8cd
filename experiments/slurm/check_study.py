"""What experiments/slurm/test_on_slurm.sh asks of a study: wait until a worker trains a trial, and check the
study after the job array ended.

    python experiments/slurm/check_study.py training STORAGE WORKER... [--timeout S]
        wait until every WORKER (HOST:PID, as ktg records it) trains a trial at the same time; print their numbers
    python experiments/slurm/check_study.py verify STORAGE OUT TRIALS
        the study holds TRIALS finished trials, none running; every graph it drew finished at most once and
        every interrupted trial's graph finished exactly once, in its retry; OUT/leaderboard.csv lists the
        storage's trials in its order; prints a summary, exits 1 naming what is wrong
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from optuna.trial import TrialState

from ktg.errors import KTGError
from ktg.search.keys import FAIL_REASON_ATTR, GRAPH_ATTR, WORKER_ATTR
from ktg.search.results import leaderboard
from ktg.search.settings import LEADERBOARD
from ktg.search.storage import load_study

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def training(storage: str, workers: list[str], timeout: float) -> list[int]:
    """The trials that ``workers`` train (graphs drawn) at one moment, waiting up to ``timeout`` s for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = load_study(storage, None).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except KTGError:  # no study yet
            running = []
        trains = {t.user_attrs.get(WORKER_ATTR): t.number for t in running if GRAPH_ATTR in t.user_attrs}
        if all(worker in trains for worker in workers):
            return [trains[worker] for worker in workers]
        time.sleep(0.2)
    raise SystemExit(f"check_study: workers {' '.join(workers)} did not train at the same time within {timeout:g} s")


def verify(storage: str, out: Path, budget: int) -> list[str]:
    """What is wrong with the study after the search (empty: nothing); prints a summary."""
    study = load_study(storage, None)
    trials = study.get_trials()
    problems = []
    finished = [t for t in trials if t.state in FINISHED]
    if len(finished) != budget:
        problems.append(f"{len(finished)} finished trials, not the budget of {budget}")
    running = [t.number for t in trials if t.state == TrialState.RUNNING]
    if running:
        problems.append(f"trials {running} are still running")
    graphs = [tuple(sorted(t.params.items())) for t in finished]
    if len(set(graphs)) != len(graphs):
        problems.append("a graph finished more than once")
    interrupted = [t for t in trials if t.state == TrialState.FAIL
                   and str(t.user_attrs.get(FAIL_REASON_ATTR, "")).startswith("interrupted")]
    for trial in interrupted:
        ends = [t.number for t in finished if t.params == trial.params]
        if len(ends) != 1:
            problems.append(f"interrupted trial {trial.number} finished {len(ends)} times in retries, not once")
    with open(out / LEADERBOARD, newline="") as file:
        written = [(int(row["trial"]), row["state"]) for row in csv.DictReader(file)]
    if written != [(row["trial"], row["state"]) for row in leaderboard(study)]:
        problems.append(f"{out / LEADERBOARD} does not list the storage's trials")
    states = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    print(f"check_study: {len(trials)} trials ({', '.join(f'{n} {s}' for s, n in states.items() if n)}); "
          f"interrupted and retried: {[t.number for t in interrupted]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True)
    wait = actions.add_parser("training")
    wait.add_argument("storage")
    wait.add_argument("workers", nargs="+")
    wait.add_argument("--timeout", type=float, default=300)
    check = actions.add_parser("verify")
    check.add_argument("storage")
    check.add_argument("out", type=Path)
    check.add_argument("trials", type=int)
    args = parser.parse_args()
    if args.action == "training":
        print(*training(args.storage, args.workers, args.timeout))
        return 0
    problems = verify(args.storage, args.out, args.trials)
    for problem in problems:
        print(f"check_study: FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
