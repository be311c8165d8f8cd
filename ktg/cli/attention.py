"""``ktg attention``: every node's attention map over the same images of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ktg.cli.graph import FIGURE_SUFFIXES
from ktg.cli.options import add_device_argument
from ktg.errors import KTGError
from ktg.io import check_writable
from ktg.run_folder import SPLITS, RunFolder, check_outside_runs
from ktg.viz import FIGURE_DPI


def add_parser(commands) -> None:
    """Add ``attention`` to the ``ktg`` subcommands."""
    attention = commands.add_parser(
        "attention", help="overlay every node's attention map on the same images of a run",
        description="Draw a grid of attention maps of a trained run: rows = images, columns = the input, every "
        "node and the ensemble node, each titled with the predicted class and ✓/✗ against the true one.")
    attention.add_argument("--run", type=Path, required=True, help="the run folder written by ktg train")
    attention.add_argument("--split", choices=SPLITS, default="test",
                           help="images of this split (val: the held-out part of a --holdout run; default: test)")
    attention.add_argument("--n", type=int, default=8, help="number of images (rows; default: 8)")
    attention.add_argument("--seed", type=int, default=0, help="which images: a seeded random draw (default: 0)")
    attention.add_argument("--first", action="store_true", help="take the split's first --n images instead")
    attention.add_argument("--indices", type=int, nargs="+", help="exactly these images (indices into the split)")
    attention.add_argument("--out", type=Path,
                           help="figure file, .png .svg or .pdf (default: RUN/attention_<split>.png)")
    attention.add_argument("--alpha", type=float, default=0.5, help="opacity of the overlay (default: 0.5)")
    attention.add_argument("--no-ensemble", action="store_true", help="leave out the ensemble column")
    attention.add_argument("--dpi", type=int, default=FIGURE_DPI, help="(default: %(default)s)")
    add_device_argument(attention)
    attention.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    folder = RunFolder(args.run)
    out = args.out or folder.attention_figure_file(args.split)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise KTGError(f"--out {out} must end in one of {', '.join(FIGURE_SUFFIXES)}")
    if args.dpi < 1:
        raise KTGError(f"--dpi must be at least 1, got {args.dpi}")
    folder.check_is_run()
    check_outside_runs(out, "--out", own=folder.attention_figure_file(args.split))
    check_writable(out.parent, "the figure --out")  # before the run is loaded and its images drawn

    from ktg.viz import save_figure
    from ktg.viz.attention import attention_grid_for_run  # after the checks that need no framework

    figure = attention_grid_for_run(args.run, args.split, args.n, None if args.first else args.seed,
                                    indices=args.indices, device=args.device, alpha=args.alpha,
                                    show_ensemble=not args.no_ensemble, dpi=args.dpi)
    save_figure(figure, out)
    print(f"attention grid written to {out}")
    return 0
