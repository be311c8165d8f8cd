"""``ktg export``: a trained graph as one ONNX or TorchScript file, verified, with a JSON description beside it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ktg.io import check_writable
from ktg.run_folder import RunFolder, check_outside_runs


def add_parser(commands) -> None:
    """Add ``export`` to the ``ktg`` subcommands."""
    parser = commands.add_parser(
        "export", help="export a run's graph as one ONNX or TorchScript model",
        description="Export the whole ensemble of a run as one model file: input a normalised N×3×S×S float "
        "batch (any N), outputs the ensemble's logits and, if asked, every node's logits and attention maps. "
        "A JSON file beside it (its name plus .json) holds the class names, the input size and the preprocessing "
        "to apply. The written model is run once on a batch of another size and compared to PyTorch.")
    parser.add_argument("--run", type=Path, required=True, help="the run folder written by ktg train")
    parser.add_argument("--format", required=True, help="onnx (needs pip install -e '.[export]') or torchscript")
    parser.add_argument("--out", type=Path, required=True, help="the model file, e.g. model.onnx or model.pt")
    parser.add_argument("--node-logits", action="store_true", help="also output every node's logits")
    parser.add_argument("--attention", action="store_true", help="also output every node's attention map")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest absolute difference to PyTorch accepted by the check (default: 1e-4)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    RunFolder(args.run).check_is_run()
    check_outside_runs(args.out, "--out")
    check_writable(args.out.parent, "the model file --out")  # before the graph is loaded, traced and checked

    from ktg.export import description_path, export_run  # after the check that needs no framework
    from ktg.inference import unfinished_weights

    outputs = ["logits"] + ["node_logits"] * args.node_logits + ["attention"] * args.attention
    description = export_run(args.run, args.out, args.format, outputs=outputs, tolerance=args.tolerance)
    verified = description["verified"]
    worst = max(verified["max_abs_difference"].values())
    print(f"{args.format} model written to {args.out} (outputs: {', '.join(outputs)}; input batch×3×"
          f"{description['input']['shape'][2]}×{description['input']['shape'][3]})")
    print(f"checked on a batch of {verified['batch_size']}: largest difference to PyTorch {worst:.2g} "
          f"(tolerance {verified['tolerance']:g})")
    print(f"description written to {description_path(args.out)}")
    unfinished = unfinished_weights(description["epoch"], description["epochs"])
    if unfinished:
        print(f"ktg: note: exported {unfinished}", file=sys.stderr)
    return 0
