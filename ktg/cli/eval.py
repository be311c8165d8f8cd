"""``ktg eval``: evaluate a run's checkpoint with several ensemble rules."""

from __future__ import annotations

import argparse
from pathlib import Path

from ktg.cli.options import add_inference_arguments, add_progress_argument, check_inference_arguments
from ktg.config import EVAL_POWERS
from ktg.errors import KTGError
from ktg.run_folder import SPLITS, RunFolder


def add_parser(commands) -> None:
    """Add ``eval`` to the ``ktg`` subcommands."""
    parser = commands.add_parser("eval", help="evaluate a run's checkpoint with several ensemble rules",
                                 description="Evaluate the checkpoint of a finished or running run: every node, "
                                 "the ensemble node and other ensemble rules (soft/hard voting, power means).")
    parser.add_argument("--run", type=Path, required=True, help="the run folder written by ktg train")
    parser.add_argument("--split", choices=SPLITS, default="test", help="(default: test)")
    parser.add_argument("--power", type=float, nargs="+", default=list(EVAL_POWERS), help="exponents u of the "
                        f"power-mean rule (default: {' '.join(f'{u:g}' for u in EVAL_POWERS)})")
    add_inference_arguments(parser)
    add_progress_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_inference_arguments(args)
    if min(args.power) <= 0:
        raise KTGError(f"--power: the power-mean exponents must be positive, got {' '.join(map(str, args.power))}")
    RunFolder(args.run).check_is_run()

    from ktg.evaluate import evaluate_run  # after the checks that need no framework

    report = evaluate_run(args.run, split=args.split, device=args.device, batch_size=args.batch_size,
                          powers=args.power, progress=not args.no_progress)
    print(f"\n{report.dataset} {report.split} split, {report.num_images} images, checkpoint of epoch {report.epoch}")
    for i, value in enumerate(report.node_accuracy):
        print(f"  node {i:<24} top-1 {100 * value:6.2f} %")
    for rule, value in report.ensemble_accuracy.items():
        print(f"  {rule:<29} top-1 {100 * value:6.2f} %")
    print(f"written to {RunFolder(args.run).eval_report_file(report.split)}")
    return 0
