"""``ktg search``: find the graph whose ensemble is most accurate."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ktg.cli.options import (
    add_data_arguments,
    add_model_arguments,
    add_training_arguments,
    at_least_one,
    check_models,
    data_source_from_args,
    defaults,
    given_model_options,
    given_training,
)
from ktg.config import recipe_record
from ktg.errors import KTGError
from ktg.graph import DEFAULT_NODES, NAMED_GRAPHS, GraphSpec, resolve_graph
from ktg.plan import given_node_options, training_config
from ktg.registry import (
    DEFAULT_CROP_SIZES,
    DEFAULT_SPACE,
    DEFAULT_TEMPERATURE,
    DEFAULT_TRIAL_LENGTH,
    SAMPLERS,
    SPACES,
    TRIAL_LENGTHS,
    design_names,
    gate_names,
    pruner_names,
    sampler_names,
)
from ktg.run_folder import check_outside_runs
from ktg.search.settings import (
    BEST_GRAPH,
    DEFAULT_BASELINES,
    DEFAULT_RESCORE_MIN_GAIN,
    DEFAULT_RESCORE_SEEDS,
    DEFAULT_RESCORE_TOP,
    LEADERBOARD,
    VERDICT,
    SearchSettings,
    resolve_storage_url,
    trial_training,
)
from ktg.search.space import SearchSpace

if TYPE_CHECKING:  # the parser and the checks before a search starts import no framework
    from ktg.search.rescore import RaceRun


def add_parser(commands) -> None:
    """Add ``search`` to the ``ktg`` subcommands."""
    search = commands.add_parser(
        "search", help="search for the graph whose ensemble is most accurate",
        description="Search the knowledge transfer graphs of --nodes nodes in a --space (the papers': a gate per label "
        "edge, a loss design and a gate per ordered pair of nodes) for the one whose ensemble node is most accurate "
        "on a split held out of the training set. Trials are stored in a database; run the same command again "
        "(another terminal, GPU or machine) to add a worker to the same study, or to resume it after Ctrl-C. The "
        "study stops at --trials finished trials, however many workers join.")
    settings = defaults(SearchSettings)
    group = search.add_argument_group("search")
    group.add_argument("--trials", type=int, default=100, help="budget of finished (complete or pruned) trials over "
                       "all workers (default: 100; the paper ran 6000)")
    group.add_argument("--out", type=Path, help="search folder: trials/, leaderboard.csv, best_graph.json, and the "
                       "default storage study.db (default: runs/search-<dataset>-<N>nodes)")
    group.add_argument("--storage", help="database URL shared by all workers, e.g. postgresql+psycopg2://USER:PASS@HOST"
                       "/DB, or grpc://HOST:PORT of a ktg storage serve (default: the SQLite file OUT/study.db)")
    group.add_argument("--study", help="study name in the storage (default: <dataset>-<N>nodes)")
    group.add_argument("--pruner", choices=pruner_names(), default=settings["pruner"], help="stop poor trials early; "
                       "epochs are the resource (default: %(default)s, reduction factor 2, as in the paper). none "
                       "trains every trial to the end and evaluates it on the held-out split after every epoch, so "
                       "that ktg study fidelity can measure how well each epoch predicts the final ranking")
    group.add_argument("--trial-length", choices=TRIAL_LENGTHS, help="how long a trial trains on its share of the "
                       "training split (1 − --holdout); --epochs is the training the chosen graph will get on all of "
                       "it. steps: as many optimiser steps as that training, --epochs / (1 − --holdout) epochs "
                       "rounded up (step milestones scaled alike), so that the race ranks graphs trained as long as "
                       "the chosen one will be; epochs: --epochs epochs, as the papers' search did, fewer steps "
                       f"(default: {DEFAULT_TRIAL_LENGTH}, docs/results.md#how-long-a-trial-trains; the paper "
                       "recipe's: epochs)")
    group.add_argument("--first-rung", type=int, metavar="R", help="the first epoch of a trial at which it may be "
                       "stopped: successive halving's rungs are epochs R, 2R, 4R, … up to the trial's last, "
                       "hyperband's R, 3R, 9R, …, the median pruner reads every epoch from R on, none has no rungs; "
                       "stored with the study (default: 70 %% of the trial's epochs, rounded up, where the measured "
                       "rankings of short runs began to tell, "
                       "docs/results.md#rungs-how-early-does-a-short-runs-ranking-tell; the paper recipe's: 1)")
    group.add_argument("--sampler", choices=sampler_names(), default=settings["sampler"],
                       help="what draws the graphs, stored with the study (default: %(default)s): "
                       + "; ".join(f"{record.name}: {record.description}" for record in SAMPLERS.values()))
    group.add_argument("--search-seed", type=int, default=settings["seed"], help="seed of the sampler: trial k draws "
                       "from a random stream of its own, whichever worker runs it (default: %(default)s)")
    group.add_argument("--baseline", nargs="+", default=list(DEFAULT_BASELINES), metavar="GRAPH",
                       help="known graphs of the space the study runs first as trials of their own, never pruned, "
                       "and races against the best searched graphs: named graphs (independent, dml) or graph files; "
                       f"'none' for no baseline (default: {' '.join(DEFAULT_BASELINES)})")
    group.add_argument("--rescore-top", type=int, default=DEFAULT_RESCORE_TOP, metavar="K", help="after the search, "
                       "race the K best complete searched graphs and the baselines with common fresh seeds and fresh "
                       "held-out splits (run i of every contender: the same seed, the same split): every contender "
                       "gets 3 seeds, then more at a few looks (after 3, 5, 8, 12, 18 and 30 seeds for 30) while the "
                       "leader does not beat it at 95 %% (paired t-interval), up to --rescore-seeds; a baseline, "
                       "while the best searched graph is not told apart from it. best_graph.json is the winner if it "
                       "beats the best baseline at 95 %% over the whole race (the 5 %% shared among the looks, most of "
                       "it at the last, and among the K searched graphs), else that baseline; verdict.json says "
                       "why. The runs are stored in the "
                       "study: running the command again resumes them, and other workers share them. 0: no race, "
                       "best_graph.json is the luckiest single run (default: %(default)s)")
    group.add_argument("--rescore-seeds", type=int, default=DEFAULT_RESCORE_SEEDS, metavar="S", help="most seeds of "
                       "a contender in the race (default: %(default)s)")
    group.add_argument("--rescore-min-gain", type=float, default=100 * DEFAULT_RESCORE_MIN_GAIN, metavar="POINTS",
                       help="the smallest gain over the best baseline worth racing for, in points of held-out "
                       "accuracy: a searched graph leaves the race once its paired 95 %% interval against the best "
                       "baseline, or against the best searched graph, lies below it (without lying above zero), so a "
                       "race of graphs that tie their baselines or each other ends before --rescore-seeds; 0: race "
                       "them to the bound (default: %(default)g)")
    group.add_argument("--same-seed", action="store_true", help="train every trial with --seed (common random "
                       "numbers: the same initial weights, batch order and augmentation) instead of a seed of its "
                       "own derived from --seed and the trial number")
    group.add_argument("--jobs-per-device", type=int, help="trials run side by side on this device, each in its "
                       "own process (default: 1 on CPU; on CUDA enough to train ~256 images per step, bounded by "
                       "GPU memory and CPU cores)")
    group.add_argument("--mps", action="store_true", help="run the workers on one GPU side by side through CUDA "
                       "MPS instead of taking turns: joins the MPS daemon already running, or starts a private one "
                       "(nvidia-cuda-mps-control) for the search and quits it at the end; never changes the GPU's "
                       "compute mode. Use it where your cluster allows MPS")
    group.add_argument("--heartbeat-interval", type=int, default=settings["heartbeat_interval"],
                       help="seconds between a running trial's heartbeats (default: %(default)s)")
    group.add_argument("--grace-period", type=int, default=settings["grace_period"], help="a running trial silent "
                       "this long is taken for the trial of a dead worker: failed and queued again; with a grpc:// "
                       "storage, also how long a worker waits for a server that does not answer before it stops "
                       "(default: %(default)s s)")
    group.add_argument("--max-retry", type=int, default=settings["max_retry"], help="how often a dead worker's trial "
                       "is queued again; the retry continues it from its last finished epoch (default: %(default)s)")
    group.add_argument("--max-failures", type=at_least_one, default=settings["max_failures_in_a_row"], metavar="N",
                       help="a worker stops with an error after N failed trials in a row (default: %(default)s)")
    group.add_argument("--keep-weights", type=kept_weights, default=settings["keep_weights"], metavar="best:K",
                       help="keep the final weights (checkpoint.pt) of the K best complete trials, so that ktg eval, "
                       "predict and attention work on them; every other trial keeps its graph, config, metrics and "
                       "TensorBoard log only (default: none, no trial keeps weights)")

    space = search.add_argument_group("search space")
    space.add_argument("--space", choices=tuple(SPACES), help="the graphs searched, stored with the study; the "
                       f"options below narrow or replace its choices (default: {DEFAULT_SPACE}; the paper recipe's: "
                       "paper): "
                       + "; ".join(f"{record.name}: {record.description} ({space_size_text(record.name)} graphs of "
                                   f"{DEFAULT_NODES} nodes)" for record in SPACES.values()))
    space.add_argument("--designs", nargs="+", choices=design_names(), metavar="DESIGN",
                       help=f"loss designs of network edges, from: {', '.join(design_names())} (default: the "
                       f"--space's, else the papers': {' '.join(design_names(paper_only=True))})")
    for option, edges in (("--gates", "network"), ("--label-gates", "label")):
        space.add_argument(option, nargs="+", choices=gate_names(on=edges), metavar="GATE",
                           help=f"gates of {edges} edges, from: {', '.join(gate_names(on=edges))} (default: the "
                           f"--space's, else the papers': {' '.join(gate_names(paper_only=True, on=edges))})")
    space.add_argument("--ensemble-as-source", action="store_true",
                       help="also search edges from the ensemble node to each node (off in the papers)")
    space.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                       help="T of probability edges (default: %(default)g)")
    space.add_argument("--temperatures", type=float, nargs="+", metavar="T",
                       help="search each edge's temperature among these (default: not searched)")
    space.add_argument("--models", nargs="+", metavar="MODEL",
                       help="search each node's model among these, e.g. abn_resnet20 abn_resnet32 (default: --model)")
    space.add_argument("--crop-sizes", type=int, nargs="+", default=list(DEFAULT_CROP_SIZES),
                       help="attention crop sizes; each must fit the attention map (default: "
                       f"{' '.join(map(str, DEFAULT_CROP_SIZES))})")
    add_model_arguments(search)
    add_data_arguments(search)
    add_training_arguments(search, search=True)
    search.set_defaults(handler=run)


def space_size_text(name: str, num_nodes: int = DEFAULT_NODES) -> str:
    """How many graphs of ``num_nodes`` nodes the registered space ``name`` holds, for people: 1,140 or 1.2e+10."""
    size = SearchSpace(num_nodes=num_nodes, name=name).size
    return f"{size:,}" if size < 10**6 else f"{size:.2g}"


def kept_weights(text: str) -> int:
    """An argparse type for ``--keep-weights``: ``none`` → 0, ``best:K`` → K (K ≥ 1)."""
    if text == "none":
        return 0
    kind, _, count = text.partition(":")
    if kind != "best" or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected best:K (K ≥ 1) or none, got {text!r}")
    return int(count)


def search_settings_from_args(args: argparse.Namespace) -> SearchSettings:
    """The :class:`~ktg.search.settings.SearchSettings` a ``ktg search`` command line describes, checked (it
    needs no framework)."""
    nodes = DEFAULT_NODES if args.nodes is None else args.nodes
    source = data_source_from_args(args)
    # The one rule (ktg.plan); without --holdout a search holds out the fraction its dataset suggests.
    final = training_config(source, args.recipe, given_training(args),
                            {**source.defaults.train, "holdout": source.defaults.search_holdout})
    check_models([args.model, *(args.models or ())])
    choices = {key: tuple(value) for key, value in
               (("designs", args.designs), ("gates", args.gates), ("label_gates", args.label_gates)) if value}
    # The one rule for the search's protocol, as for training: option given > recipe > ktg's default.
    protocol = search_protocol(args)
    config = trial_training(final, trial_length(args))
    space = SearchSpace(num_nodes=nodes, name=args.space or protocol.get("space", DEFAULT_SPACE),
                        ensemble_as_source=args.ensemble_as_source, model=args.model,
                        temperature=args.temperature, crop_sizes=tuple(args.crop_sizes),
                        models=tuple(args.models) if args.models else None,
                        temperatures=tuple(args.temperatures) if args.temperatures else None, **choices)
    out = args.out or Path("runs") / f"search-{args.dataset}-{nodes}nodes"
    check_outside_runs(out, "--out")
    options = given_node_options(args.recipe, given_model_options(args))
    return SearchSettings(
        space=space, config=config, out=out, storage_url=resolve_storage_url(args.storage, out),
        study_name=args.study or f"{args.dataset}-{nodes}nodes", trials=args.trials,
        data_source=source, node_options=source.defaults.with_node_options(options),
        pruner=args.pruner, sampler=args.sampler, seed=args.search_seed, same_seed=args.same_seed,
        first_rung=args.first_rung if args.first_rung is not None else protocol.get("first_rung"),
        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period, max_retry=args.max_retry,
        keep_weights=args.keep_weights, max_failures_in_a_row=args.max_failures,
        baselines=baselines_from_args(args.baseline, nodes, args.model, options),
        rescore_top=args.rescore_top, rescore_seeds=args.rescore_seeds, rescore_min_gain=args.rescore_min_gain / 100,
    )


def search_protocol(args: argparse.Namespace) -> dict:
    """The search protocol of ``--recipe`` (its space, first rung, trial length), empty without a recipe."""
    return recipe_record(args.recipe).search if args.recipe is not None else {}


def trial_length(args: argparse.Namespace) -> str:
    """``--trial-length`` as resolved by the one rule: the option given, else the recipe's, else ktg's default."""
    return args.trial_length or search_protocol(args).get("trial_length", DEFAULT_TRIAL_LENGTH)


def baselines_from_args(given: list[str], nodes: int, model: str | None, options: dict) -> tuple[GraphSpec, ...]:
    """The graphs of ``--baseline``: named graphs or graph files (a file is known by the name it gives, else by its
    file name); ``none`` alone: no baseline."""
    if given == ["none"]:
        return ()
    if "none" in given:
        raise KTGError("--baseline none means no baseline; it cannot be given with other graphs")
    specs = []
    for name in given:
        spec = resolve_graph(name, nodes, model, options)
        specs.append(spec if name in NAMED_GRAPHS or spec.name else dataclasses.replace(spec, name=Path(name).stem))
    return tuple(specs)


def run(args: argparse.Namespace) -> int:
    settings = search_settings_from_args(args)

    from ktg.search.keys import BASELINE_ATTR, GRPC_SCHEME
    from ktg.search.rescore import chosen, verdict
    from ktg.search.results import budget_spent, format_table, leaderboard, state_counts
    from ktg.search.run import run_search
    from ktg.search.storage import Snapshot, display_url
    from ktg.viz.attention import log_attention_grid

    url = display_url(settings.storage_url)

    def announce() -> None:
        baselines = ", ".join(spec.name for spec in settings.baselines)
        print(f"search: study {settings.study_name!r} in {url}, {settings.space.size:.3g} graphs of "
              f"{settings.space.num_nodes} nodes ({settings.space.name} space) drawn by {settings.sampler} search, "
              f"budget {settings.trials} trials"
              + (f" and the baselines {baselines}" if baselines else "")
              + f" of {settings.config.epochs} epochs"
              + (" (as many steps as --epochs on the whole split)" if trial_length(args) == "steps" else "")
              + f", scored on a held-out {settings.config.holdout:.0%} of the {args.dataset} training split")

    try:
        # The race's runs log their attention grid; trials log none (see Worker).
        study = run_search(settings, jobs_per_device=args.jobs_per_device, mps=args.mps,
                           progress=not args.no_progress, on_start=announce, on_finish=log_attention_grid,
                           on_race_run=_rescore_line)
    except KeyboardInterrupt:
        print(f"\nktg: search interrupted; finished trials and rescore runs are kept in {url}, an interrupted trial "
              f"is queued to run again. Run the same command to resume.", file=sys.stderr)
        return 130
    study = Snapshot(study)  # what follows reads the study as it is now, once
    counts = state_counts(study)
    print(f"\nstudy {study.study_name!r}: {counts['complete']} complete, {counts['pruned']} pruned, "
          f"{counts['fail']} failed (accuracy of the ensemble node on the held-out split)")
    print(format_table(leaderboard(study), top=10))
    print(f"\nbudget: {budget_spent(study, settings.config.epochs)}")
    found = verdict(study)
    if found is not None:
        print("\nverdict, in the search's own regime (held-out splits and seeds common to every contender):")
        print("\n".join(f"  {line}" for line in found.lines()))
    elif settings.baselines:
        print("\nverdict: none; only a race over common seeds (--rescore-top K) can say whether the search beat its "
              "baselines")
    out = settings.out
    best = chosen(study)
    print("\nfiles:")
    if best is not None:
        baseline = best[0].user_attrs.get(BASELINE_ATTR)
        which = f"the baseline {baseline}, trial" if baseline else "trial"
        print(f"  {out / BEST_GRAPH}  the graph to use ({which} {best[0].number}, {100 * best[0].value:.2f} % in the "
              f"search); retrain it on the full training split: ktg train --graph {out / BEST_GRAPH} "
              f"--dataset {args.dataset}")
    if found is not None:
        print(f"  {out / VERDICT}  the race's contenders, their runs and the searched graph's paired differences")
    print(f"  {out / LEADERBOARD}  every trial, best first")
    print(f"  {out / 'trials'}/<n>/  each trial's run: graph.json, metrics.jsonl, tensorboard/")
    dashboard = "" if settings.storage_url.startswith(GRPC_SCHEME) else f"  |  optuna-dashboard {url}"
    print(f"  storage {url}, study {study.study_name!r}: ktg study show --storage {url} --study "
          f"{study.study_name}{dashboard}")
    return 0


def _rescore_line(trial: int, index: int, result: RaceRun) -> None:
    accuracy = result.ensemble_accuracy
    outcome = f"ensemble {100 * accuracy:.2f} %" if accuracy is not None else f"failed, {result.fail_reason}"
    print(f"race: trial {trial}, seed {index + 1}: {outcome}")
