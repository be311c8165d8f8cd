#!/usr/bin/env python
"""Which sampler finds a good graph in fewer trials, and how lucky is the winner?

    python experiments/samplers.py                     # digits, 3 study seeds, 100 trials each
    python experiments/samplers.py --quick             # the same steps in well under a minute
    python experiments/samplers.py --trials 60 --study-seeds 0 1 2 3 4 --search-args '--epochs 3'

For every sampler of ``ktg search --sampler`` and every study seed it runs a search of T trials on a small
digits regime (``REGIME``: 20 % of the training split trains, the other 80 % scores, two epochs: ensembles far
from the ceiling), then ``--rescore-top K --rescore-seeds S``, and retrains both the plain argmax and the
rescored winner with R further fresh seeds on the same training images, scoring each run on the held-out split
and on the test split (which no search saw). It reports

1. the best held-out ensemble accuracy against trials, per sampler (median and range over study seeds): the
   figure ``samplers.png``;
2. for each sampler but random, the trials it needs to reach random search's best after T trials (the same study
   seed), median over study seeds — the target is T/5;
3. the winner's curse: the chosen graph's selection score minus its score retrained with the R seeds, for the
   argmax (selection score: its one search run) and for the rescored winner (its mean over the S seeds);
4. what each sampler chose is worth: the test-split ensemble accuracy of its argmax and of its rescored winner
   (mean of the R runs), and the rescored winner's paired difference against the argmax of the same study.

``tpe`` and ``evolution`` draw random search's graphs until enough trials have finished, and every trial trains
with a seed derived from its number, so their first trials are random search's, trained alike; they are copied
from the random study of the same seed instead of trained again. Everything goes under ``--out``, one search
folder per sampler and seed; running the command again continues (the searches join their studies, rescore runs
are stored in them). Results: ``samplers.json``, ``samplers.md`` and the figure.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ktg.cli import plan as command_plan
from ktg.evaluate import evaluate_run
from ktg.io import write_json, write_text
from ktg.registry import DEFAULT_SAMPLER, sampler_names
from ktg.run_folder import RunFolder
from ktg.search.rescore import candidates, rescore, rescore_run, store_run, stored_run
from ktg.search.run import run_search
from ktg.search.sampler import EVOLUTION_POPULATION, TPE_STARTUP_TRIALS
from ktg.search.settings import SearchSettings
from ktg.search.worker import connect

#: The search of every study: digits, 3 nodes, trained on 20 % of the training split and scored on the other
#: 80 %, 2 epochs of narrow nodes on 12-pixel images, every trial to the end (so a trial is a unit of cost).
REGIME = ["--dataset", "digits", "--nodes", "3", "--epochs", "2", "--holdout", "0.8", "--image-size", "12",
          "--width", "4", "--crop-sizes", "3", "5", "--pruner", "none", "--device", "cpu", "--no-progress"]
#: The trials a sampler draws exactly as random search does (same seed, same trial numbers).
RANDOM_START = {DEFAULT_SAMPLER: 0, "tpe": TPE_STARTUP_TRIALS, "evolution": EVOLUTION_POPULATION}
#: The ``ktg eval`` rule that is the ensemble node's: the mean of the members' logits.
ENSEMBLE = "mean_logits"
DEFAULTS = {"trials": 100, "study_seeds": [0, 1, 2], "rescore_top": 3, "rescore_seeds": 2, "eval_seeds": 2}
QUICK = {"trials": 2, "study_seeds": [0], "rescore_top": 1, "rescore_seeds": 1, "eval_seeds": 1,
         "search_args": ["--nodes", "2", "--epochs", "1"]}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Compare ktg's samplers over several study seeds and measure the "
                                     "winner's curse of the argmax beside --rescore-top.")
    parser.add_argument("--samplers", nargs="+", choices=sampler_names(), default=list(sampler_names()),
                        help="samplers to compare; random is always run, as the reference (default: all)")
    parser.add_argument("--study-seeds", type=int, nargs="+", help="--search-seed of each study "
                        f"(default: {' '.join(map(str, DEFAULTS['study_seeds']))})")
    parser.add_argument("--trials", type=int, help=f"trials of every search (default: {DEFAULTS['trials']})")
    parser.add_argument("--rescore-top", type=int, help=f"K (default: {DEFAULTS['rescore_top']})")
    parser.add_argument("--rescore-seeds", type=int, help=f"S (default: {DEFAULTS['rescore_seeds']})")
    parser.add_argument("--eval-seeds", type=int, help="R: further fresh seeds that retrain the argmax and the "
                        "rescored winner, to measure the winner's curse and their test accuracy (default: "
                        f"{DEFAULTS['eval_seeds']})")
    parser.add_argument("--search-args", type=shlex.split, metavar="'OPTIONS'", help="ktg search options that "
                        "replace or extend REGIME's, in one string, e.g. '--epochs 3'")
    parser.add_argument("--out", type=Path, default=Path("runs/samplers"), help="the searches and the results "
                        "(default: %(default)s)")
    parser.add_argument("--figure", type=Path, help="where the figure goes (default: OUT/samplers.png)")
    parser.add_argument("--quick", action="store_true", help="one study seed, 2 trials, 2 nodes, 1 epoch, K = S = "
                        "R = 1: every step in well under a minute (explicit options still win)")
    return parser


@dataclass
class Study:
    """One search and what was measured on it (accuracies are fractions; ``*_test`` ones of the test split, the
    others of the held-out split)."""

    sampler: str
    seed: int
    best_so_far: list[float]
    argmax: int
    argmax_score: float
    argmax_retrained: float
    argmax_test: float
    chosen: int
    chosen_score: float
    chosen_retrained: float
    chosen_test: float

    @property
    def argmax_gap(self) -> float:
        return self.argmax_score - self.argmax_retrained

    @property
    def chosen_gap(self) -> float:
        return self.chosen_score - self.chosen_retrained


def settings_for(args: argparse.Namespace, sampler: str, seed: int) -> SearchSettings:
    # The plain search of the papers: this experiment races the argmax and the rescored winner itself.
    argv = ["search", *REGIME, "--baseline", "none", "--rescore-top", "0", *(args.search_args or []),
            "--sampler", sampler, "--search-seed", str(seed),
            "--trials", str(args.trials), "--out", str(args.out / f"{sampler}-seed{seed}")]
    return command_plan(argv)


def copy_random_start(study: optuna.Study, random_study: optuna.Study, count: int) -> None:
    """Give an empty ``study`` the first ``count`` trials of ``random_study``: the trials its sampler would draw
    and train exactly alike. Nothing is copied unless they all completed (their numbers must stay the same)."""
    start = [t for t in random_study.get_trials(deepcopy=False) if t.number < count]
    if study.get_trials(deepcopy=False) or len(start) < count or any(t.state != TrialState.COMPLETE for t in start):
        return
    for trial in sorted(start, key=lambda t: t.number):
        study.add_trial(trial)


def retrained(settings: SearchSettings, study: optuna.Study, dataset, trial: int,
              indices: range) -> tuple[float, float]:
    """The mean ensemble accuracy of ``trial``'s graph over rescore runs ``indices`` (trained here unless stored
    in the study already) on the held-out split and on the test split: the same trained runs, evaluated on both."""
    (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
    held_out, test = [], []
    for index in indices:
        result = stored_run(study.user_attrs, trial, index)
        if result is None:
            result = rescore_run(settings, dataset, frozen, index, keep_weights=True)  # evaluated on the test split
            store_run(study, trial, index, result)
        if result.ensemble_accuracy is not None:
            held_out.append(result.ensemble_accuracy)
            test.append(test_accuracy(Path(result.run_dir)))
    nan = float("nan")
    return (statistics.fmean(held_out), statistics.fmean(test)) if held_out else (nan, nan)


def test_accuracy(run_dir: Path) -> float:
    """The test-split ensemble accuracy of a finished run (its ``ktg eval --split test`` report, made here unless
    the run folder holds it already)."""
    report = RunFolder(run_dir).read_eval_report("test") or evaluate_run(run_dir, split="test", device="cpu",
                                                                         progress=False)
    return report.ensemble_accuracy[ENSEMBLE]


def run_study(args: argparse.Namespace, sampler: str, seed: int) -> Study:
    settings = settings_for(args, sampler, seed)
    dataset = settings.data_source.load()
    if sampler != DEFAULT_SAMPLER:
        study, _, _ = connect(settings, heartbeats=False)
        random_study, _, _ = connect(settings_for(args, DEFAULT_SAMPLER, seed), heartbeats=False)
        copy_random_start(study, random_study, min(RANDOM_START[sampler], args.trials))
    study = run_search(settings, progress=False)
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    by_number = {t.number: t.value for t in complete}
    best, curve = float("-inf"), []
    for number in range(args.trials):
        best = max(best, by_number.get(number, float("-inf")))
        curve.append(best)
    ranked = rescore(settings, study, top=args.rescore_top, seeds=args.rescore_seeds, dataset=dataset)
    argmax = candidates(study, 1)[0]
    evaluation = range(args.rescore_seeds, args.rescore_seeds + args.eval_seeds)
    return Study(sampler, seed, curve, argmax.number, argmax.value,
                 *retrained(settings, study, dataset, argmax.number, evaluation), ranked[0].trial, ranked[0].mean,
                 *retrained(settings, study, dataset, ranked[0].trial, evaluation))


def trials_to_reach(curve: list[float], target: float) -> int | None:
    """How many trials the curve needs to reach ``target`` (None: not within its trials)."""
    return next((n + 1 for n, best in enumerate(curve) if best >= target), None)


def summarise(studies: list[Study], trials: int) -> dict[str, Any]:
    reference = {s.seed: s.best_so_far[-1] for s in studies if s.sampler == DEFAULT_SAMPLER}
    samplers: dict[str, Any] = {}
    for name in dict.fromkeys(s.sampler for s in studies):
        own = [s for s in studies if s.sampler == name]
        reach = [trials_to_reach(s.best_so_far, reference[s.seed]) for s in own]
        # a study that never reaches the reference counts as needing more than T trials
        median = statistics.median(r if r is not None else trials + 1 for r in reach)
        samplers[name] = {
            "best_after_T": [s.best_so_far[-1] for s in own],
            "trials_to_reach_random_best": reach,
            "median_trials_to_reach_random_best": None if median > trials else median,
            "argmax_gap": [s.argmax_gap for s in own], "rescored_gap": [s.chosen_gap for s in own],
            "argmax_retrained": [s.argmax_retrained for s in own],
            "rescored_retrained": [s.chosen_retrained for s in own],
            "argmax_test": [s.argmax_test for s in own], "rescored_test": [s.chosen_test for s in own],
            "rescored_minus_argmax_test": [s.chosen_test - s.argmax_test for s in own],
        }
    return {"trials": trials, "target_trials": trials / 5, "samplers": samplers,
            "studies": [{**vars(s), "argmax_gap": s.argmax_gap, "chosen_gap": s.chosen_gap} for s in studies]}


def percent(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    trials = summary["trials"]
    lines = [f"Study seeds {' '.join(map(str, args.study_seeds))}; {trials} trials each; --rescore-top "
             f"{args.rescore_top} --rescore-seeds {args.rescore_seeds}; retrained with {args.eval_seeds} further "
             f"seeds. Accuracies: held-out ensemble accuracy (%), mean ± std over study seeds.", "",
             f"| sampler | best after {trials} trials | trials to reach random's best (per seed; median) | "
             "argmax: search − retrained | rescored: mean − retrained | retrained argmax | retrained rescored |",
             "|---|---|---|---|---|---|---|"]
    tests = ["", f"What each sampler chose, retrained with the {args.eval_seeds} further seeds: test-split ensemble "
             "accuracy (%), mean ± std over study seeds, and the rescored winner − the argmax of the same study "
             "(points of %; per study seed).", "",
             "| sampler | test: argmax | test: rescored | rescored − argmax (per seed) |", "|---|---|---|---|"]
    for name, row in summary["samplers"].items():
        reach = ", ".join(str(r) if r is not None else f">{trials}" for r in row["trials_to_reach_random_best"])
        median = row["median_trials_to_reach_random_best"]
        lines.append(f"| {name} | {percent(row['best_after_T'])} | {reach}; "
                     f"{median if median is not None else f'>{trials}'} | {percent(row['argmax_gap'])} | "
                     f"{percent(row['rescored_gap'])} | {percent(row['argmax_retrained'])} | "
                     f"{percent(row['rescored_retrained'])} |")
        differences = ", ".join(f"{100 * d:+.2f}" for d in row["rescored_minus_argmax_test"])
        tests.append(f"| {name} | {percent(row['argmax_test'])} | {percent(row['rescored_test'])} | "
                     f"{percent(row['rescored_minus_argmax_test'])} ({differences}) |")
    return "\n".join(lines + tests) + "\n"


def figure(studies: list[Study], path: Path) -> None:
    from matplotlib.figure import Figure

    from ktg.viz import save_figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    colours = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00")
    for colour, name in zip(colours, dict.fromkeys(s.sampler for s in studies)):
        curves = [s.best_so_far for s in studies if s.sampler == name]
        x = range(1, len(curves[0]) + 1)
        ax.plot(x, [100 * statistics.median(c[i] for c in curves) for i in range(len(x))], color=colour,
                label=f"{name} (median of {len(curves)})")
        ax.fill_between(x, [100 * min(c[i] for c in curves) for i in range(len(x))],
                        [100 * max(c[i] for c in curves) for i in range(len(x))], color=colour, alpha=0.15)
    ax.set_xlabel("trials")
    ax.set_ylabel("best held-out ensemble accuracy (%)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    for key, value in {**DEFAULTS, **(QUICK if args.quick else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = [DEFAULT_SAMPLER, *(name for name in args.samplers if name != DEFAULT_SAMPLER)]
    studies = []
    for seed in args.study_seeds:
        for sampler in samplers:
            studies.append(run_study(args, sampler, seed))
            print(f"{sampler}, study seed {seed}: best {100 * studies[-1].best_so_far[-1]:.2f} %", flush=True)
    summary = summarise(studies, args.trials)
    write_json(args.out / "samplers.json", summary)
    table = markdown(summary, args)
    write_text(args.out / "samplers.md", table)
    figure(studies, args.figure or args.out / "samplers.png")
    print(table)
    print(json.dumps({name: row["median_trials_to_reach_random_best"] for name, row in summary["samplers"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
