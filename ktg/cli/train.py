"""``ktg train``: train one graph into a run folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ktg.cli.options import (
    add_data_arguments,
    add_model_arguments,
    add_training_arguments,
    check_models,
    training_plan_from_args,
)
from ktg.errors import KTGError
from ktg.graph import NAMED_GRAPHS
from ktg.run_folder import RunFolder, check_outside_runs


def add_parser(commands) -> None:
    """Add ``train`` to the ``ktg`` subcommands."""
    parser = commands.add_parser("train", help="train one graph", description="Train one knowledge transfer graph "
                                 "and write metrics, checkpoints and TensorBoard logs into --out.")
    parser.add_argument("--graph", default="dml", help=f"graph file, or a named graph: {', '.join(NAMED_GRAPHS)} "
                        "(default: %(default)s)")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/<dataset>-<graph>-<time>)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                       "(from the previous epoch's, with a warning, if the last one is damaged)")
    start.add_argument("--restart", action="store_true", help="replace the run in --out: delete its files (and only "
                       "those) and train from the start")
    parser.add_argument("--eval-every", type=int, default=1, metavar="N",
                        help="evaluate on the evaluated split (the test split, or the --holdout part) after every N-th "
                        "epoch, and always after the last: the final metrics are the last epoch's, and no file "
                        "chooses a best epoch on the test split (default: %(default)s, every epoch)")
    add_model_arguments(parser)
    add_data_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.eval_every < 1:
        raise KTGError(f"--eval-every must be at least 1, got {args.eval_every}")
    plan = training_plan_from_args(args)
    check_models(node.model for node in plan.graph.nodes)
    if args.out is not None:
        check_outside_runs(args.out, "--out", run=True)

    from ktg.train import train  # everything above needs no framework: a mistake there is reported at once
    from ktg.viz.attention import log_attention_grid

    dataset = plan.source.load()
    spec = plan.graph_at(dataset.image_size)
    config = plan.config
    out = args.out or Path("runs") / f"{args.dataset}-{spec.name or 'graph'}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        final = train(spec, dataset, config, out, resume=args.resume, restart=args.restart,
                      eval_epochs=range(args.eval_every, config.epochs + 1, args.eval_every),
                      on_finish=log_attention_grid, progress=not args.no_progress)
    except KeyboardInterrupt:
        kept = ("its finished epochs are kept: add --resume to continue" if RunFolder(out).holds_run()
                else "no epoch had finished, so nothing is kept: run the same command again to start over")
        print(f"\nktg: interrupted; {out}: {kept}", file=sys.stderr)
        return 130
    print(f"\n{dataset.name}, graph {spec.name or args.graph}, {final.epochs} epochs, "
          f"evaluated on the {final.split} split")
    for i, value in enumerate(final.node_accuracy):
        print(f"  node {i:<10} top-1 {100 * value:6.2f} %")
    print(f"  {'mean node':<15} top-1 {100 * final.mean_node_accuracy:6.2f} %")
    print(f"  {'ensemble':<15} top-1 {100 * final.ensemble_accuracy:6.2f} %")
    print(f"run written to {out}/ ({RunFolder.main_files()})")
    return 0
