#!/usr/bin/env python
"""How often a race claims a gain that is not there, how often it finds one that is, and what it spends: races of
simulated runs, replayed by the race's own code (:func:`ktg.search.rescore.replay`).

    python experiments/race_error.py                       # every scenario, 1,000 races each (about 4 CPU-minutes)
    python experiments/race_error.py --scenarios tie --races 200

Each simulated race has the contenders of ``ktg search``'s default race: the 3 best searched graphs (``--top``) and the
baselines ``independent`` and ``dml`` (4 points below ``independent``), up to 30 seeds, a smallest gain of 1 point.
Run i of every contender shares a common part (same seed, same held-out split: a normal draw of ``--common-sd``
points) and adds its own (normal, so that two contenders' paired differences spread by ``--paired-sd`` points).
The defaults are what the races on the MNIST folders measured: runs of one contender spread by 2.5–3 points, their
paired differences by 1.4–1.6 points with trials as long as the final training (``docs/results.md``, how long a
trial trains) and by 3–5 with the short trials before.

Scenarios: ``tie`` (every searched graph as good as ``independent``: any graph the race keeps other than a baseline
is a gain claimed that is not there), ``gain 1`` and ``gain 2`` (the first searched graph is 1 or 2 points better,
the others tie ``independent``), ``all gain 2`` (all three are 2 points better, and tie each other). For each, and
for each way a race reads its intervals (:data:`ktg.search.rescore.READINGS`: ``every-seed``, a 95 % interval after
every seed, the race until the evening of 2026-12-07; ``even-shares``, at its looks, each at 1 − 0.05 / looks, the
race on the evening of 2026-12-07; ``growing-shares``, at its looks with shares growing toward the last and split
among the searched graphs, the race since that night), it prints how often the race kept a searched graph, how often
it kept the better one, the runs it trained (mean), and its rounds: the looks it reached, each a batch of runs that
as many workers as runs can train at once."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ktg.cli import quiet_when_the_reader_leaves
from ktg.search.keys import BASELINE_ATTR
from ktg.search.rescore import READINGS, RaceRun, judge, replay
from ktg.search.settings import DEFAULT_RESCORE_TOP

#: The searched graphs' gain over ``independent`` (points) in each scenario; the race's baselines come after them.
SCENARIOS = {"tie": (0.0, 0.0, 0.0), "gain 1": (1.0, 0.0, 0.0), "gain 2": (2.0, 0.0, 0.0),
             "all gain 2": (2.0, 2.0, 2.0)}
BASELINES = {"independent": 0.0, "dml": -4.0}
#: ``independent``'s accuracy in the races (points; only differences matter).
LEVEL = 89.0


def contender(number: int, baseline: str | None) -> FrozenTrial:
    trial = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0,
                                      user_attrs={BASELINE_ATTR: baseline} if baseline else {})
    trial.number = number
    return trial


def race(rng: np.random.Generator, gains: tuple[float, ...], *, seeds: int, paired_sd: float, common_sd: float,
         min_gain: float, reading: str) -> tuple[bool, bool, int, int]:
    """One simulated race of one searched contender per gain: whether it kept a searched graph, whether it kept the
    first (the better one where there is one), the runs it trained and the looks it reached."""
    common = rng.normal(0.0, common_sd, seeds)
    means = [*gains, *BASELINES.values()]
    names = [None] * len(gains) + list(BASELINES)
    results = {}
    for number, (mean, baseline) in enumerate(zip(means, names)):
        accuracies = (LEVEL + mean + common + rng.normal(0.0, paired_sd / np.sqrt(2), seeds)) / 100
        results[number] = (contender(number, baseline), [RaceRun(0, 0, float(a)) for a in accuracies])
    found = replay(results, seeds, min_gain / 100, reading)
    kept = judge(found).keep()
    return (kept.baseline is None, kept.trial == 0, sum(r.seeds for r in found.ranked),
            found.look)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--paired-sd", nargs="+", type=float, default=[1.5, 3.0], metavar="POINTS",
                        help="spread of two contenders' paired differences (default: 1.5 3)")
    parser.add_argument("--common-sd", type=float, default=2.5, metavar="POINTS",
                        help="spread of the part every contender's run i shares (default: 2.5)")
    parser.add_argument("--races", type=int, default=1000, help="races per row (default: 1000)")
    parser.add_argument("--seeds", type=int, default=30, help="the race's bound (default: 30)")
    parser.add_argument("--min-gain", type=float, default=1.0, metavar="POINTS", help="default: 1")
    parser.add_argument("--seed", type=int, default=0, help="of the simulation (default: 0)")
    parser.add_argument("--readings", nargs="+", choices=READINGS, default=list(READINGS),
                        help="how the race reads its intervals (default: all three)")
    parser.add_argument("--top", type=int, default=DEFAULT_RESCORE_TOP, metavar="K",
                        help="searched graphs in the race, ktg search's --rescore-top; those past a scenario's "
                             "three tie independent (default: %(default)s)")
    args = parser.parse_args()
    if args.races < 1 or args.seeds < 1 or args.top < 1 or min(args.paired_sd) <= 0 or args.common_sd < 0:
        parser.error("--races, --seeds and --top must be at least 1, --paired-sd above 0 and --common-sd at least 0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{args.races} races a row, {args.top} searched graphs, up to {args.seeds} seeds, smallest gain "
          f"{args.min_gain:g} points, runs of a contender sharing {args.common_sd:g} points of spread")
    print()
    print("| scenario | paired sd | looks | kept a searched graph | kept the first | runs | rounds |")
    print("|---|---|---|---|---|---|---|")
    for scenario in args.scenarios:
        for paired_sd in args.paired_sd:
            for reading in args.readings:
                rng = np.random.default_rng([args.seed, round(100 * paired_sd)])  # the same races for every reading
                gains = (SCENARIOS[scenario] + (0.0,) * args.top)[:args.top]
                found = np.array([race(rng, gains, seeds=args.seeds, paired_sd=paired_sd,
                                       common_sd=args.common_sd, min_gain=args.min_gain, reading=reading)
                                  for _ in range(args.races)])
                searched, first, runs, rounds = found.mean(axis=0)
                print(f"| {scenario} | {paired_sd:g} | {reading} | {100 * searched:.1f} % | {100 * first:.1f} % | "
                      f"{runs:.1f} | {rounds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(quiet_when_the_reader_leaves(main))
