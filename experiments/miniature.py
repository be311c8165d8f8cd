#!/usr/bin/env python
"""Table 1 in miniature: does the search pay on this data?

    python experiments/miniature.py                      # digits, 15 % of the training split, 5 seeds
    python experiments/miniature.py --quick              # the same steps on a one-minute budget
    python experiments/miniature.py --dataset imagefolder --data-root data/mine --train-subset 1000 \\
        --dataset-option augment=pad-crop --epochs 20 --batch-size 16

It runs the papers' comparison (docs/method.md#search) with ``ktg`` commands, on the same training images for
every run:

1. ``ktg search`` of T trials with its own defaults: its baselines (``independent``, ``dml``) run inside the study,
   each trial trains on part of those training images (as many steps as step 2's runs on all of them) and is
   scored on the held-out rest (the test split is never seen), and the race retrains the best searched graphs and
   the baselines with common fresh seeds, run i of each on the same fresh split. Its verdict (``verdict.json``)
   says, in the search's own regime, whether the best searched graph beats the baselines at 95 %, and its
   ``best_graph.json`` is that graph where it does, else the best baseline;
2. ``ktg train`` of ``independent``, ``dml`` and the race's best searched graph with the same S seeds, evaluated
   on the test split (a graph that trains as another is trained once);
3. the table: ensemble and mean-node accuracy (mean ± sample std over seeds) of each graph, the paired
   difference (same seed) of the searched graph against each baseline with a 95 % Student-t interval, the
   search's own verdict beside it, and whether the two agree.

Everything goes under ``--out``: one run folder per graph and seed, ``search/``, ``logs/``, and the results
``miniature.json``, ``miniature.md`` and ``miniature.png``. Running the command again continues: a finished run
whose config.json and graph.json are what this command would train is reused, an unfinished one resumes from
its checkpoint, one trained differently is trained again, and the search joins its study. Options this script
does not know (``--batch-size 16``, ``--width 8``, ``--lr 0.05``, …) are passed to every ``ktg train`` and
``ktg search``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ktg.cli import plan as command_plan
from ktg.cli.options import key_value
from ktg.errors import KTGError
from ktg.io import atomic_path, write_json, write_text
from ktg.run_folder import RunFolder
from ktg.runtime import resolve_device
from ktg.search.objective import TRIALS_DIR
from ktg.search.settings import BEST_GRAPH, LEADERBOARD, VERDICT
from ktg.stats import CONFIDENCE, paired_difference

BASELINES = ("independent", "dml")
#: The race's best searched graph, trained on the test split beside the baselines.
SEARCHED = "searched"
#: Options the script sets itself on every command: passing them through would contradict it.
_OWN_OPTIONS = {"--graph", "--seed", "--out", "--resume", "--restart", "--trials", "--search-seed", "--nodes",
                "--epochs", "--dataset", "--data-root", "--dataset-option", "--device", "--jobs-per-device",
                "--no-progress", "--eval-every"}
#: The budget of the experiment where the command line gives none: about 30 minutes on an idle 2-core CPU for
#: the digits; and with --quick, the same steps in about a minute.
DEFAULTS = {"train_subset": 0.15, "epochs": 12, "trials": 100, "seeds": 5}
QUICK = {"train_subset": 0.1, "epochs": 2, "trials": 4, "seeds": 2, "rescore_top": 1, "rescore_seeds": 2}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Search T graphs on a held-out part of the training images (the baselines and the race "
        "inside the search), train independent, dml and the race's best searched graph with S seeds on the test "
        "split, and print Table 1 in miniature with paired differences beside the search's own verdict. Options "
        "it does not know are passed to every ktg train and ktg search.",
        allow_abbrev=False)
    parser.add_argument("--dataset", default="digits", help="any dataset ktg reads (default: %(default)s)")
    parser.add_argument("--data-root", type=Path, help="the folder the dataset was unpacked into")
    parser.add_argument("--dataset-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="a loader option, e.g. augment=pad-crop for an image folder (repeatable)")
    parser.add_argument("--train-subset", type=subset_size, help="train every run on this stratified part of the "
                        "training split: a fraction, a number of images, or 'all' (default: "
                        f"{DEFAULTS['train_subset']}, where ensembles of the digits are not at their ceiling)")
    parser.add_argument("--nodes", type=int, default=3, help="network nodes of every graph (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help=f"epochs of every run and trial (default: {DEFAULTS['epochs']})")
    parser.add_argument("--trials", type=int, help=f"finished trials of the search (default: {DEFAULTS['trials']})")
    parser.add_argument("--seeds", type=int, help=f"seeds 0..S-1 of every graph (default: {DEFAULTS['seeds']})")
    parser.add_argument("--sampler", help="ktg search's --sampler (default: ktg search's)")
    parser.add_argument("--rescore-top", type=int, metavar="K", help="ktg search's --rescore-top: race the K best "
                        "searched graphs against the baselines; 0: no race, no verdict (default: ktg search's)")
    parser.add_argument("--rescore-seeds", type=int, metavar="S", help="ktg search's --rescore-seeds (default: ktg "
                        "search's)")
    parser.add_argument("--search-args", type=shlex.split, default=[], metavar="'OPTIONS'", help="further options "
                        "of ktg search only, in one string, e.g. '--crop-sizes 3 5 --pruner none'")
    parser.add_argument("--search-seed", type=int, default=0, help="seed of the search's sampler (default: "
                        "%(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="runs (and search trials) at a time, each in its own "
                        "process with one CPU thread on the CPU; 1 runs everything in this process (default: "
                        "%(default)s)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/miniature"), help="folder of the runs, the search "
                        "and the results (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a budget of about a minute: " + ", ".join(
        f"{key.replace('_', '-')} {value}" for key, value in QUICK.items()) + " (explicit options still win)")
    return parser


def subset_size(text: str) -> float | int | str:
    """``--train-subset``: '0.15' → a fraction, '300' → a number of images, 'all' as it is."""
    if text == "all":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction, a number of images or 'all', got {text!r}") from None
    return int(value) if value >= 1 and value.is_integer() else value


@dataclass(frozen=True)
class Plan:
    """What to run: the ktg options shared by every command (data, nodes, epochs, device, passed-through ones)
    and the rest of the experiment."""

    common: list[str]
    seeds: tuple[int, ...]
    trials: int
    search: list[str]
    jobs: int
    out: Path
    epochs: int

    def train_argv(self, name: str, graph: str | Path, seed: int) -> list[str]:
        """``ktg train`` of ``graph`` (a named graph or a file) with ``seed`` into the run folder of ``name``,
        evaluated on the test split after its last epoch only: the table reads nothing else (a test split of
        thousands of images evaluated every epoch cost more than the training)."""
        return ["train", "--graph", str(graph), "--seed", str(seed), "--out", str(self.run_dir(name, seed)),
                "--eval-every", str(self.epochs), *self.common]

    def run_dir(self, name: str, seed: int) -> Path:
        return self.out / name / f"seed{seed}"

    @property
    def search_dir(self) -> Path:
        return self.out / "search"

    def search_argv(self) -> list[str]:
        return ["search", "--trials", str(self.trials), *self.search, "--jobs-per-device", str(self.jobs),
                "--out", str(self.search_dir), *self.common]


def make_plan(args: argparse.Namespace, passed: list[str]) -> Plan:
    """The plan of the command line; KTGError for a passed-through option the script sets itself, or one ktg
    rejects (checked by ktg's own parser before anything runs)."""
    reserved = sorted({option.split("=", 1)[0] for option in passed + args.search_args} & _OWN_OPTIONS)
    if reserved:
        raise KTGError(f"{reserved[0]} is set by this script; use its own option (see --help)")
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seeds < 2:
        raise KTGError(f"--seeds must be at least 2 (a paired interval needs two seeds), got {args.seeds}")
    if args.jobs < 1:
        raise KTGError(f"--jobs must be at least 1, got {args.jobs}")
    if args.rescore_top == 0 and args.rescore_seeds is not None:
        raise KTGError("--rescore-seeds needs --rescore-top K of 1 or more")
    options = dict(args.dataset_option)
    if args.train_subset != "all":
        options["train_subset"] = args.train_subset
    common = ["--dataset", args.dataset, "--nodes", str(args.nodes), "--epochs", str(args.epochs),
              "--device", args.device, "--no-progress"]
    if args.data_root is not None:
        common += ["--data-root", str(args.data_root)]
    for key, value in options.items():
        common += ["--dataset-option", f"{key}={value}"]
    search = ["--search-seed", str(args.search_seed)]
    for option in ("sampler", "rescore_top", "rescore_seeds"):
        if getattr(args, option) is not None:
            search += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    search += args.search_args
    plan = Plan(common + passed, tuple(range(args.seeds)), args.trials, search, args.jobs, args.out, args.epochs)
    for argv in (plan.train_argv("dml", "dml", 0), plan.search_argv()):
        try:
            command_plan(argv)  # ktg's own checks, before anything runs
        except KTGError as error:
            raise KTGError(f"ktg {argv[0]} rejects the options {' '.join(argv)}: {error}") from None
    return plan


# -- running -------------------------------------------------------------------------------------------------


def ktg(argv: list[str], log: Path, threads: int | None) -> None:
    """Run ``ktg ARGV`` with its output in ``log``, in a new process with ``threads`` CPU threads (None: torch's
    default), or in this one for ``threads`` 0; KTGError naming the log if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as output:
        output.write("ktg " + " ".join(argv) + "\n")
        output.flush()
        if threads == 0:
            from ktg.cli import main as ktg_main

            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                status = ktg_main(argv)
        else:
            env = {**os.environ, **({} if threads is None else {"OMP_NUM_THREADS": str(threads)})}
            status = subprocess.run([sys.executable, "-m", "ktg.cli", *argv], stdout=output,
                                    stderr=subprocess.STDOUT, env=env).returncode
    if status != 0:
        lines = log.read_text(encoding="utf-8").strip().splitlines()
        raise KTGError(f"ktg {argv[0]} failed (exit status {status}): {lines[-1] if lines else ''} — see {log}; "
                       "run the same command again to continue, finished runs are kept")


def trained_as_planned(argv: list[str], run: RunFolder) -> bool:
    """Whether the run in ``run`` was trained with what ``ktg ARGV`` would train (:func:`ktg.cli.plan`): the same
    training options, data source and graph, whatever the graph's label."""
    planned = command_plan(argv)
    return planned.trained_in(run, resolve_device(planned.config.device).type)


def train_runs(plan: Plan, commands: Sequence[list[str]], device_threads: int | None) -> None:
    """Run the ``ktg train`` ``commands``, ``plan.jobs`` at a time: finished runs trained as planned are reused,
    unfinished ones resumed, others trained again."""
    pending = []
    for argv in commands:
        run = RunFolder(out_of(argv))
        if run.holds_run() and not trained_as_planned(argv, run):
            print(f"  {run.path}: trained with other options or another graph; training it again")
            argv = [*argv, "--restart"]
        elif run.is_finished():
            print(f"  {run.path}: finished already")
            continue
        elif run.holds_run():
            argv = [*argv, "--resume"]
        pending.append(argv)
    logs = plan.out / "logs"

    def one(argv: list[str]) -> None:
        run_dir = out_of(argv)
        started = time.monotonic()
        ktg(argv, logs / f"{run_dir.parent.name}-{run_dir.name}.log", device_threads)
        print(f"  {run_dir}: trained in {time.monotonic() - started:.0f} s", flush=True)

    with ThreadPoolExecutor(plan.jobs) as pool:
        for future in [pool.submit(one, argv) for argv in pending]:
            future.result()


def out_of(argv: list[str]) -> Path:
    """The run folder of a ``ktg train`` command line."""
    return Path(argv[argv.index("--out") + 1])


# -- the table -------------------------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample std (in %) of accuracies given as fractions, with the values themselves."""
    percent = [100 * value for value in values]
    return {"mean": statistics.fmean(percent), "std": statistics.stdev(percent), "values": percent}


def paired(searched: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """The paired difference searched − baseline of accuracies in % on the same seeds (points of %): mean, its
    95 % Student-t interval (:func:`ktg.stats.paired_difference`, as the search's race computes it), and on how
    many seeds the searched graph was better."""
    difference = paired_difference(searched, baseline)
    return {**difference.to_dict(scale=1.0), "values": [a - b for a, b in zip(searched, baseline)]}


def search_summary(plan: Plan) -> dict[str, Any]:
    """The search in brief: trials by state, the race's verdict (None without a race) and the graph it keeps."""
    import csv

    with open(plan.search_dir / LEADERBOARD, encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    states = {state: sum(row["state"] == state for row in rows) for state in ("complete", "pruned", "fail")}
    verdict_file = plan.search_dir / VERDICT
    verdict = json.loads(verdict_file.read_text(encoding="utf-8")) if verdict_file.exists() else None
    best = next(row for row in rows if row["rank"] == "1")
    searched = (verdict["searched"]["trial"] if verdict is not None and verdict["searched"] is not None else
                next(int(row["trial"]) for row in rows if row["rank"] and not row["baseline"]))
    kept = verdict["keep"] if verdict is not None else best["baseline"] or f"trial {best['trial']}"
    return {"trials": states, "verdict": verdict, "kept": kept,
            "searched_trial": searched, "graph": next(row["graph"] for row in rows if row["trial"] == str(searched))}


def searched_graph(plan: Plan, search: dict[str, Any]) -> Path:
    """The graph file of the race's best searched trial (the leaderboard's best searched one without a race)."""
    return plan.search_dir / TRIALS_DIR / str(search["searched_trial"]) / "graph.json"


def claim(difference: dict[str, Any]) -> str:
    """What a paired difference says at 95 %: ``gain`` (interval above zero), ``loss`` (below) or ``none``."""
    if difference["low"] is not None and difference["low"] > 0:
        return "gain"
    if difference["high"] is not None and difference["high"] < 0:
        return "loss"
    return "none"


def agreement(verdict: dict[str, Any] | None, test: dict[str, Any]) -> dict[str, Any] | None:
    """Whether the search's verdict (searched − baseline in its own regime) agrees with the test split's paired
    difference, for each baseline: the same sign of the mean (a zero agrees with either), and the same claim at
    95 % (:func:`claim`): a gain where the test interval is above zero, none where it holds zero."""
    if verdict is None:
        return None
    result = {}
    for baseline, own in verdict["differences"].items():
        on_test = test[baseline]["ensemble"]
        result[baseline] = {"same_sign": own["mean"] * on_test["mean"] >= 0, "search_claims": claim(own),
                            "test_claims": claim(on_test), "agree": claim(own) == claim(on_test)}
    return result


#: The accuracies of the table, and the FinalMetrics field each one is.
MEASURES = {"ensemble": "ensemble_accuracy", "mean_node": "mean_node_accuracy"}


def collect(plan: Plan, command: str) -> dict[str, Any]:
    """The results of every run as one JSON-ready dict (accuracies in %, differences in points of %)."""
    graphs: dict[str, Any] = {}
    for name in (*BASELINES, SEARCHED):
        metrics = [RunFolder(plan.run_dir(name, seed)).read_metrics() for seed in plan.seeds]
        graphs[name] = {measure: summary([getattr(m, key) for m in metrics]) for measure, key in MEASURES.items()}
        graphs[name]["runs"] = [str(plan.run_dir(name, seed)) for seed in plan.seeds]
    differences = {baseline: {measure: paired(graphs[SEARCHED][measure]["values"],
                                              graphs[baseline][measure]["values"])
                              for measure in MEASURES} for baseline in BASELINES}
    search = search_summary(plan)
    return {"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "ktg_options": plan.common, "seeds": list(plan.seeds), "search": search,
            "graphs": graphs, "paired": differences, "agreement": agreement(search["verdict"], differences)}


def markdown(results: dict[str, Any]) -> str:
    """Table 1's shape: a row per graph (mean ± std over seeds), the paired differences, then the search's own
    verdict and whether the test split agrees with it."""
    seeds = len(results["seeds"])
    search = results["search"]
    trials = search["trials"]
    lines = [f"`{results['command']}` ({results['date']})", "",
             f"Test-split accuracy (%), mean ± std over {seeds} seeds:", "",
             "| graph | ensemble | mean node | per seed (ensemble) |", "|---|---|---|---|"]
    for name, graph in results["graphs"].items():
        label = f"searched (trial {search['searched_trial']})" if name == SEARCHED else name
        values = " / ".join(f"{v:.2f}" for v in graph["ensemble"]["values"])
        lines.append(f"| {label} | {_mean_std(graph['ensemble'])} | {_mean_std(graph['mean_node'])} | {values} |")
    lines += ["", "Paired difference, searched − baseline, same seed (points of %), mean [95 % t-interval], "
              "seeds where the searched graph is better:", "",
              "| against | ensemble | mean node |", "|---|---|---|"]
    for baseline, measures in results["paired"].items():
        lines.append(f"| {baseline} | {' | '.join(_interval(d) for d in measures.values())} |")
    verdict = search["verdict"]
    lines += ["", f"Search: {trials['complete']} complete, {trials['pruned']} pruned, {trials['fail']} failed trials "
              f"(baselines included); best_graph.json is {search['kept']}."]
    if verdict is None:
        lines += ["", "No race (--rescore-top 0): the search gave no verdict against its baselines."]
    else:
        lines += ["", "The search's own verdict (its held-out split, the race's common fresh seeds), ensemble "
                  "accuracy (%):", "", "| contender | mean ± std | runs | dropped after |", "|---|---|---|---|"]
        for contender in [verdict["searched"], *verdict["baselines"]]:
            if contender is None:
                continue
            runs = " / ".join("failed" if r is None else f"{r:.2f}" for r in contender["runs"])
            spread = "" if contender["std"] is None else f" ± {contender['std']:.2f}"
            lines.append(f"| {contender['label']} | {contender['mean']:.2f}{spread} | {runs} | "
                         f"{contender['dropped_at'] or ''} |")
        lines += [""] + [f"- {line}" for line in verdict["summary"]]
        lines += ["", "Does the test split agree with the search's verdict (gain / loss / none at 95 %)?", "",
                  "| against | search: searched − it | test: searched − it | agree |", "|---|---|---|---|"]
        for baseline, agreed in results["agreement"].items():
            own = verdict["differences"][baseline]
            own_text = (f"{own['mean']:+.2f} [{own['low']:+.2f}, {own['high']:+.2f}], {own['wins']}/{own['seeds']}"
                        if own["low"] is not None else f"{own['mean']:+.2f} (one seed)")
            word = (f"{'yes' if agreed['agree'] else 'no'}: search {agreed['search_claims']}, test "
                    f"{agreed['test_claims']}" + ("" if agreed["same_sign"] else ", opposite signs"))
            lines.append(f"| {baseline} | {own_text} | {_interval(results['paired'][baseline]['ensemble'])} | "
                         f"{word} |")
    return "\n".join(lines + [""])


def _interval(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}], {d['wins']}/{d['seeds']}"


def _mean_std(summary: dict[str, Any]) -> str:
    return f"{summary['mean']:.2f} ± {summary['std']:.2f}"


def figure(results: dict[str, Any], path: Path) -> None:
    """Left: every seed's ensemble accuracy per graph, with the mean; right: the paired differences with
    their 95 % intervals, on the test split and (in orange, after a race) in the search's regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    names = list(results["graphs"])
    for x, name in enumerate(names):
        values = results["graphs"][name]["ensemble"]["values"]
        left.plot([x] * len(values), values, "o", alpha=0.6, color=f"C{x}")
        left.hlines(statistics.fmean(values), x - 0.25, x + 0.25, color=f"C{x}")
    left.set_xticks(range(len(names)), names)
    left.set_ylabel("ensemble accuracy, test split (%)")
    left.set_title(f"{len(results['seeds'])} seeds each")
    rows = [(f"{measure.replace('_', ' ')} vs {baseline}", d, "C2") for baseline, measures in
            results["paired"].items() for measure, d in measures.items()]
    verdict = results["search"]["verdict"] or {"differences": {}}
    # a race reads its intervals at confidences of its own (98.93 % at the last of 6 looks with 3 searched graphs),
    # each difference at its look's; a verdict of the evening of 2026-12-07 has one confidence for all its looks, or
    # none (95 %)
    race_confidence = (verdict.get("looks") or {}).get("confidence", 100 * CONFIDENCE)
    for baseline, d in verdict["differences"].items():
        if d["low"] is None:
            continue
        confidence = d.get("confidence", race_confidence)
        race = f"search's race ({confidence:.2f} %)" if confidence != 100 * CONFIDENCE else "search's race"
        rows.append((f"{race} vs {baseline}", d, "C1"))
    for y, (_, d, colour) in enumerate(rows):
        right.errorbar(d["mean"], y, xerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="o", capsize=4,
                       color=colour)
    right.axvline(0, color="grey", lw=1)
    right.set_yticks(range(len(rows)), [label for label, _, _ in rows])
    right.invert_yaxis()
    right.set_xlabel("searched − baseline (points of %)\n95 % unless the label says otherwise")
    right.set_title("paired difference, t-interval")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args, passed = get_args_parser().parse_known_args(argv)
    command = "python experiments/miniature.py " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        plan = make_plan(args, passed)
        threads = 0 if args.jobs == 1 else 1 if args.device == "cpu" else None
        started = time.monotonic()
        print(f"1/2 search, {plan.trials} trials and its baselines (log: {plan.out / 'logs' / 'search.log'})",
              flush=True)
        ktg(plan.search_argv(), plan.out / "logs" / "search.log", threads)
        if not (plan.search_dir / BEST_GRAPH).exists():
            raise KTGError(f"the search completed no trial, so it chose no graph ({plan.search_dir / LEADERBOARD}); "
                           "give it more --trials")
        searched = searched_graph(plan, search_summary(plan))
        print(f"2/2 independent, dml and the race's best searched graph ({searched}), seeds {plan.seeds[0]}.."
              f"{plan.seeds[-1]}, into {plan.out}/", flush=True)
        graphs = {**{name: name for name in BASELINES}, SEARCHED: searched}
        train_runs(plan, [plan.train_argv(name, graph, seed) for name, graph in graphs.items()
                          for seed in plan.seeds], threads)
        results = collect(plan, command)
    except KTGError as error:
        print(f"miniature.py: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # every finished trial, race run and training run is kept, and picked up again
        print(f"\nminiature.py: interrupted; the same command continues from what {args.out} holds", file=sys.stderr)
        return 130
    results["seconds"] = round(time.monotonic() - started)
    write_json(plan.out / "miniature.json", results)
    text = markdown(results)
    write_text(plan.out / "miniature.md", text)
    figure(results, plan.out / "miniature.png")
    print("\n" + text)
    print(f"written: {plan.out / 'miniature.json'}, miniature.md, miniature.png ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
