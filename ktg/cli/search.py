"""``ktg search``: find the graph whose ensemble is most accurate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ktg.cli.options import (
    add_data_arguments,
    add_model_arguments,
    add_training_arguments,
    check_models,
    data_source_from_args,
    defaults,
    node_options_from_args,
    train_config_from_args,
)
from ktg.graph import DEFAULT_NODES
from ktg.registry import (
    DEFAULT_CROP_SIZES,
    DEFAULT_TEMPERATURE,
    SAMPLERS,
    design_names,
    gate_names,
    pruner_names,
    sampler_names,
)
from ktg.run_folder import check_outside_runs
from ktg.search.settings import BEST_GRAPH, LEADERBOARD, SearchSettings, check_rescore, resolve_storage_url
from ktg.search.space import SearchSpace


def add_parser(commands) -> None:
    """Add ``search`` to the ``ktg`` subcommands."""
    search = commands.add_parser(
        "search", help="search for the graph whose ensemble is most accurate",
        description="Search the knowledge transfer graphs of --nodes nodes (a gate per label edge, a loss design "
        "and a gate per ordered pair of nodes) for the one whose ensemble node is most accurate on a split held out "
        "of the training set. Trials are stored in a database; run the same command again (another terminal, "
        "GPU or machine) to add a worker to the same study, or to resume it after Ctrl-C. The study stops at "
        "--trials finished trials, however many workers join.")
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
                       "epochs are the resource (default: %(default)s, reduction factor 2, as in the paper)")
    group.add_argument("--sampler", choices=sampler_names(), default=settings["sampler"],
                       help="what draws the graphs, stored with the study (default: %(default)s): "
                       + "; ".join(f"{record.name}: {record.description}" for record in SAMPLERS.values()))
    group.add_argument("--search-seed", type=int, default=settings["seed"], help="seed of the sampler: trial k draws "
                       "from a random stream of its own, whichever worker runs it (default: %(default)s)")
    group.add_argument("--rescore-top", type=int, metavar="K", help="after the search, retrain the K best complete "
                       "graphs with --rescore-seeds fresh seeds each on the same held-out split and choose the best "
                       "mean for best_graph.json, rather than the one luckiest run (default: off). The runs are stored "
                       "in the study: running the command again resumes them, and other workers share them")
    group.add_argument("--rescore-seeds", type=int, default=3, metavar="S", help="seeds per graph of --rescore-top, "
                       "the same for every graph (default: %(default)s)")
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
    group.add_argument("--keep-weights", type=kept_weights, default=settings["keep_weights"], metavar="best:K",
                       help="keep the final weights (checkpoint.pt) of the K best complete trials, so that ktg eval, "
                       "predict and attention work on them; every other trial keeps its graph, config, metrics and "
                       "TensorBoard log only (default: none, no trial keeps weights)")

    space = search.add_argument_group("search space")
    space.add_argument("--designs", nargs="+", choices=design_names(), metavar="DESIGN",
                       help=f"loss designs of network edges, from: {', '.join(design_names())} (default: the papers': "
                       f"{' '.join(design_names(paper_only=True))})")
    for option, edges in (("--gates", "network"), ("--label-gates", "label")):
        space.add_argument(option, nargs="+", choices=gate_names(on=edges), metavar="GATE",
                           help=f"gates of {edges} edges, from: {', '.join(gate_names(on=edges))} (default: the "
                           f"papers': {' '.join(gate_names(paper_only=True, on=edges))})")
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
    # Without --holdout a search holds out the fraction its dataset suggests.
    config = train_config_from_args(args, {**source.defaults.train, "holdout": source.defaults.search_holdout})
    check_models([args.model, *(args.models or ())])
    choices = {key: tuple(value) for key, value in
               (("designs", args.designs), ("gates", args.gates), ("label_gates", args.label_gates)) if value}
    space = SearchSpace(num_nodes=nodes, ensemble_as_source=args.ensemble_as_source, model=args.model,
                        temperature=args.temperature, crop_sizes=tuple(args.crop_sizes),
                        models=tuple(args.models) if args.models else None,
                        temperatures=tuple(args.temperatures) if args.temperatures else None, **choices)
    out = args.out or Path("runs") / f"search-{args.dataset}-{nodes}nodes"
    check_outside_runs(out, "--out")
    return SearchSettings(
        space=space, config=config, out=out, storage_url=resolve_storage_url(args.storage, out),
        study_name=args.study or f"{args.dataset}-{nodes}nodes", trials=args.trials,
        data_source=source, node_options=source.defaults.with_node_options(node_options_from_args(args)),
        pruner=args.pruner, sampler=args.sampler, seed=args.search_seed, same_seed=args.same_seed,
        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period, max_retry=args.max_retry,
        keep_weights=args.keep_weights,
    )


def run(args: argparse.Namespace) -> int:
    settings = search_settings_from_args(args)
    if args.rescore_top is not None:
        check_rescore(args.rescore_top, args.rescore_seeds)

    from ktg.search.rescore import chosen, rescore
    from ktg.search.results import format_table, leaderboard, state_counts, write_results
    from ktg.search.run import run_search
    from ktg.search.storage import GRPC_SCHEME, display_url
    from ktg.viz.attention import log_attention_grid

    url = display_url(settings.storage_url)

    def announce() -> None:
        print(f"search: study {settings.study_name!r} in {url}, {settings.space.size:.3g} graphs of "
              f"{settings.space.num_nodes} nodes drawn by {settings.sampler} search, "
              f"budget {settings.trials} trials of {settings.config.epochs} "
              f"epochs, scored on a held-out {settings.config.holdout:.0%} of the {args.dataset} training split")

    try:
        # Trials log no attention grid: a search's trials keep a few kilobytes each (the figure of a kept trial
        # is one ktg attention away); the rescore runs, trained once each, log it.
        study = run_search(settings, jobs_per_device=args.jobs_per_device, mps=args.mps,
                           progress=not args.no_progress, on_start=announce)
        if args.rescore_top is not None:
            print(f"\nrescore: the top {args.rescore_top} complete trials, {args.rescore_seeds} fresh seeds each, on "
                  f"the same held-out split")
            rescore(settings, study, top=args.rescore_top, seeds=args.rescore_seeds, on_run=_rescore_line,
                    on_finish=log_attention_grid, progress=not args.no_progress)
            write_results(study, settings.out)
    except KeyboardInterrupt:
        print(f"\nktg: search interrupted; finished trials and rescore runs are kept in {url}, an interrupted trial "
              f"is queued to run again. Run the same command to resume.", file=sys.stderr)
        return 130
    counts = state_counts(study)
    print(f"\nstudy {study.study_name!r}: {counts['complete']} complete, {counts['pruned']} pruned, "
          f"{counts['fail']} failed (accuracy of the ensemble node on the held-out split)")
    print(format_table(leaderboard(study), top=10))
    out = settings.out
    best = chosen(study)
    print("\nfiles:")
    if best is not None:
        print(f"  {out / BEST_GRAPH}  best graph (trial {best[0].number}, {100 * best[0].value:.2f} % in the search; "
              f"chosen by the {best[1]}); retrain it on the full training split: ktg train --graph "
              f"{out / BEST_GRAPH} --dataset {args.dataset}")
    print(f"  {out / LEADERBOARD}  every trial, best first")
    print(f"  {out / 'trials'}/<n>/  each trial's run: graph.json, metrics.jsonl, tensorboard/")
    dashboard = "" if settings.storage_url.startswith(GRPC_SCHEME) else f"  |  optuna-dashboard {url}"
    print(f"  storage {url}, study {study.study_name!r}: ktg study show --storage {url} --study "
          f"{study.study_name}{dashboard}")
    return 0


def _rescore_line(trial: int, index: int, result: dict) -> None:
    accuracy = result.get("ensemble_accuracy")
    outcome = f"ensemble {100 * accuracy:.2f} %" if accuracy is not None else f"failed, {result['fail_reason']}"
    print(f"rescore: trial {trial}, seed {index + 1}: {outcome}")
