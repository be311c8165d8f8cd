#!/usr/bin/env python
"""Replay stored races with smallest gains worth racing for (``ktg search --rescore-min-gain``), or with other looks
at their intervals, and print what each would have decided and spent.

    python experiments/race_min_gain.py runs/miniature/search docs/results/*-verdict*.json --min-gains 0 1 1.5 2
    python experiments/race_min_gain.py docs/results/*-verdict*.json --looks every-seed even-shares growing-shares

A race's state is a function of its stored runs alone (:func:`ktg.search.rescore.replay`), and a smallest gain only
ever stops runs sooner, so every race of a smaller bound is a prefix of the stored one: nothing is retrained. A race
replayed with another way of reading its intervals (``--looks``: ``as-run``, the default, or one of
:data:`ktg.search.rescore.READINGS`: ``every-seed``, a 95 % interval after every seed, as races asked until the
evening of 2026-12-07 read them; ``even-shares`` and ``growing-shares``, at the race's looks) may ask for runs the
stored race never trained: it then reads "(not finished)" with the runs it holds. A search folder (or a study file)
replays its whole race, every contender. A ``verdict.json`` holds the runs of the race's best searched graph and of
the baselines only, so its replay leaves out the searched contenders that were dropped: it says whether the smallest
gain would have dropped the graph the verdict names, and when; replayed ``growing-shares``, it shares the 5 % among
the looks and as many searched graphs as the race did (a verdict that does not say how many: that one)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

from ktg.cli import quiet_when_the_reader_leaves
from ktg.errors import KTGError
from ktg.search.keys import BASELINE_ATTR, RESCORE_ATTR
from ktg.search.rescore import READINGS, RaceRun, Standings, contenders, judge, reading_of, replay, stored_runs
from ktg.search.settings import STUDY_DB, resolve_storage_url
from ktg.search.storage import Snapshot, load_study


class Race(NamedTuple):
    """A stored race, as :func:`ktg.search.rescore.replay` takes it."""

    results: dict[int, tuple[FrozenTrial, list[RaceRun | None]]]
    seeds: int  # its bound
    reading: str  # how it read its intervals (ktg.search.rescore.READINGS)
    searched: int | None  # among how many searched graphs it shared its 5 % (None: those of its results)


def from_study(path: Path) -> Race:
    """Every contender of the race stored in the study of search folder (or study file) ``path``."""
    if not (path / STUDY_DB if path.is_dir() else path).is_file():
        raise KTGError(f"{path}: no search folder (with a {STUDY_DB}), study file or verdict.json there")
    study = Snapshot.of(load_study(resolve_storage_url(str(path)), None))
    asked = study.user_attrs.get(RESCORE_ATTR)
    if not isinstance(asked, dict):
        raise KTGError(f"{path}: the study holds no race (ktg search --rescore-top K)")
    return Race({trial.number: (trial, stored_runs(study.user_attrs, trial.number, asked["seeds"]))
                 for trial in contenders(study, asked["top"])}, asked["seeds"], reading_of(asked), None)


def from_verdict(path: Path) -> Race:
    """The searched graph and the baselines of ``verdict.json`` at ``path``, with their runs; its bound: its last
    look's seeds, or for a verdict without looks as many seeds as the longest of them ran."""
    try:
        found = json.loads(path.read_text())
        results = {}
        for contender in [found["searched"], *found["baselines"]]:
            if contender is None:
                continue
            attrs = {BASELINE_ATTR: contender["baseline"]} if contender["baseline"] else {}
            trial = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0, user_attrs=attrs)
            trial.number = contender["trial"]
            runs = [None if accuracy is None else RaceRun(0, 0, accuracy / 100) for accuracy in contender["runs"]]
            results[contender["trial"]] = (trial, runs)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KTGError(f"{path}: not a verdict.json of ktg search ({type(error).__name__}: {error})") from None
    if not results:
        raise KTGError(f"{path}: the verdict holds no contender with runs")
    # a run the file does not hold was never trained: a replay that asks for it waits for it, as the race would;
    # the bound is the last look's where the verdict has looks (a race that ended sooner ran fewer seeds)
    looks = found.get("looks")
    seeds = max(max(len(runs) for _, runs in results.values()), looks["at"][-1] if looks else 0)
    padded = {number: (trial, runs + [None] * (seeds - len(runs))) for number, (trial, runs) in results.items()}
    # a verdict written before its race said how it read its intervals: even shares at its looks if it has looks
    return Race(padded, seeds, "every-seed" if looks is None else looks.get("reading", "even-shares"),
                None if looks is None else looks.get("searched"))


#: ``--looks``: how the replay reads its intervals.
LOOKS = ("as-run", *READINGS)


def describe(found: Standings) -> tuple[str, str, str, int]:
    """What the race keeps, its best searched graph − the best baseline, − the other baselines, and the runs it
    trained."""
    verdict = judge(found)
    if verdict is None:
        return "(not finished)", "", "", sum(r.seeds for r in found.ranked)
    keep = verdict.keep()
    best = verdict.best_baseline.baseline if verdict.best_baseline is not None else None
    difference = verdict.differences.get(best)
    said = f"{verdict.searched.label}: {difference.describe()}" if difference is not None else ""
    others = "; ".join(f"{name}: {other.describe()}" for name, other in verdict.differences.items() if name != best)
    return keep.label if keep is not None else "nothing", said, others, sum(r.seeds for r in found.ranked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("races", nargs="+", type=Path, help="search folders, study files or verdict.json files")
    parser.add_argument("--min-gains", nargs="+", type=float, default=[0.0, 1.0], metavar="POINTS",
                        help="smallest gains to replay, in points of held-out accuracy (default: 0 1)")
    parser.add_argument("--looks", nargs="+", choices=LOOKS, default=["as-run"],
                        help="when each replay reads its intervals (default: as-run, as the race did)")
    args = parser.parse_args()
    if any(not 0 <= gain < 100 for gain in args.min_gains):
        parser.error(f"--min-gains must be points from 0 to below 100, got {args.min_gains}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    races = {path: from_verdict(path) if path.suffix == ".json" else from_study(path) for path in args.races}
    print("| race | looks | smallest gain | keep | best searched − best baseline | − the other baselines | runs |")
    print("|---|---|---|---|---|---|---|")
    for path, (results, seeds, reading, searched) in races.items():
        for looks in args.looks:
            for min_gain in args.min_gains:
                found = replay(results, seeds, min_gain / 100, reading if looks == "as-run" else looks, searched)
                keep, said, others, runs = describe(found)
                confidences = sorted({f"{100 * c:.2f}" for c in found.looks.confidences}, key=float, reverse=True)
                confidence = (f"{found.looks.reading}, {'–'.join(confidences[::len(confidences) - 1 or 1])} % at "
                              f"{len(found.looks.at)}")
                print(f"| {path} | {confidence} | {min_gain:g} | {keep} | {said} | {others} | {runs} |")
    return 0


def run() -> int:
    try:
        return main()
    except KTGError as error:
        print(f"race_min_gain.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(quiet_when_the_reader_leaves(run))
