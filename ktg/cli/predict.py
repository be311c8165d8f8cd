"""``ktg predict``: classify new images with a trained graph: the ensemble's answer, every node's, and where
each node looked."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

from ktg.cli.options import add_inference_arguments, add_progress_argument, check_inference_arguments
from ktg.ensemble import ENSEMBLE_RULES
from ktg.errors import KTGError
from ktg.io import check_writable, write_text
from ktg.run_folder import RunFolder, check_outside_runs

OUTPUT_SUFFIXES = (".csv", ".json")
POWER = 0.5  # power_mean's exponent when --power is not given


def add_parser(commands) -> None:
    """Add ``predict`` to the ``ktg`` subcommands."""
    parser = commands.add_parser(
        "predict", help="classify image files with a trained run",
        description="Classify image files with the graph of a run: each image goes through the run's own "
        "evaluation pipeline and gets the ensemble's top classes (and with --per-node every node's). Files that "
        "cannot be read are listed and skipped; the exit status is then 2, after the readable ones are done.")
    parser.add_argument("--run", type=Path, required=True, help="the run folder written by ktg train")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files, folders (searched recursively) or glob patterns such as 'photos/**/*.jpg'")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default: 5)")
    parser.add_argument("--per-node", action="store_true", help="also every node's top classes")
    parser.add_argument("--ensemble", choices=tuple(ENSEMBLE_RULES), default="mean_logits",
                        help="how the nodes' answers combine: the ensemble node (mean_logits, default, as trained), "
                        "soft voting (mean_probabilities), hard voting (majority_vote) or power_mean (see --power)")
    parser.add_argument("--power", type=float, help=f"exponent u of --ensemble power_mean (default: {POWER}); "
                        "an error with any other rule")
    parser.add_argument("--out", type=Path, help="write the predictions to a .csv (one row per image) or .json file "
                        "instead of printing them")
    parser.add_argument("--attention", type=Path, metavar="DIR",
                        help="save, per image, the grid of every node's attention map (as ktg attention draws it) "
                        "into DIR, as <image path relative to the inputs' common folder>.png (its ensemble column is "
                        "the ensemble node, mean logits, whatever --ensemble says)")
    add_inference_arguments(parser)
    add_progress_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_inference_arguments(args)
    if args.power is not None and args.ensemble != "power_mean":
        raise KTGError(f"--power applies to --ensemble power_mean only, not to {args.ensemble}")
    if args.power is None:
        args.power = POWER  # so that the JSON output records the exponent power_mean used
    if args.top_k < 1:
        raise KTGError(f"--top-k must be at least 1, got {args.top_k}")
    if args.out is not None and args.out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise KTGError(f"--out {args.out} must end in {' or '.join(OUTPUT_SUFFIXES)}")
    RunFolder(args.run).check_is_run()
    # now, not after the graph is loaded and every image classified (and maybe every grid drawn)
    if args.out is not None:
        check_outside_runs(args.out, "--out")
        check_writable(args.out.parent, "the predictions file --out")
    if args.attention is not None:
        check_outside_runs(args.attention, "--attention")
        check_writable(args.attention, "the attention folder --attention")

    from ktg.inference import find_images, load_run, predict_images  # after the checks that need no framework
    paths, problems = find_images(args.images)
    if not paths:
        raise KTGError("no images to classify: " + "; ".join(f"{error.name}: {error.reason}" for error in problems))
    _report(problems)
    model = load_run(args.run, args.device)
    if model.unfinished:
        print(f"ktg: note: {args.run} predicts with {model.unfinished}", file=sys.stderr)
    on_batch = None if args.attention is None else _attention_writer(model, args.attention, paths)
    predictions, unreadable = predict_images(model, paths, rule=args.ensemble, power=args.power,
                                             batch_size=args.batch_size, progress=not args.no_progress,
                                             on_batch=on_batch)
    if args.out is None:
        _print(predictions, model, args)
    else:
        write_text(args.out, (_csv if args.out.suffix.lower() == ".csv" else _json)(predictions, model, args))
        print(f"predictions for {len(predictions)} image(s) written to {args.out}")
    if args.attention is not None and predictions:
        print(f"attention grids written to {args.attention}/")
    _report(unreadable)
    failed = len(problems) + len(unreadable)
    if failed:
        raise KTGError(f"{failed} input(s) could not be read and were skipped (listed above); "
                       f"{len(predictions)} image(s) classified")
    return 0


def _report(errors) -> None:
    for error in errors:
        print(f"ktg: skipped {error.name}: {error.reason}", file=sys.stderr)


def _print(predictions, model, args) -> None:
    def line(ranked) -> str:
        return ", ".join(f"{name} {100 * score:.1f} %" for name, score in ranked)

    for prediction in predictions:
        print(f"{prediction.name}: {line(prediction.top(args.top_k, model.classes))}")
        if args.per_node:
            for node in range(model.num_nodes):
                print(f"    node {node}: {line(prediction.top(args.top_k, model.classes, node))}")


def _columns(prefix: str, k: int) -> list[str]:
    return [name for rank in range(1, k + 1) for name in (f"{prefix}class_{rank}", f"{prefix}score_{rank}")]


def _csv(predictions, model, args) -> str:
    k = min(args.top_k, len(model.classes))
    header = ["path", *_columns("", k)]
    nodes = range(model.num_nodes) if args.per_node else range(0)
    for node in nodes:
        header += _columns(f"node{node}_", k)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for prediction in predictions:
        row = [prediction.name]
        for node in (None, *nodes):
            ranked = prediction.top(args.top_k, model.classes, node)
            row += [value for name, score in ranked for value in (name, f"{score:.6f}")]
        writer.writerow(row)
    return buffer.getvalue()


def _json(predictions, model, args) -> str:
    def ranked(prediction, node=None):
        return [{"class": name, "score": round(score, 6)}
                for name, score in prediction.top(args.top_k, model.classes, node)]

    records = []
    for prediction in predictions:
        record = {"path": prediction.name, "top": ranked(prediction)}
        if args.per_node:
            record["nodes"] = [ranked(prediction, node) for node in range(model.num_nodes)]
        records.append(record)
    report = {"run": str(args.run), "epoch": model.epoch, "rule": args.ensemble,
              **({"power": args.power} if args.ensemble == "power_mean" else {}), "predictions": records}
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def _attention_writer(model, folder: Path, paths: list[Path]):
    """A batch callback that saves every image's attention grid as ``folder/<path relative to the common
    folder of all inputs>.png``."""
    from ktg.viz import save_figure
    from ktg.viz.attention import attention_grid, shorten

    common = Path(os.path.commonpath([path.resolve().parent for path in paths]))

    def write(pixels, sizes, names) -> None:
        for index, name in enumerate(names):
            relative = Path(name).resolve().relative_to(common)
            figure = attention_grid(model.graph, pixels[index:index + 1], None, model.classes,
                                    transform=model.transform.transform, original_sizes=sizes[index:index + 1],
                                    row_names=[shorten(relative.name, 20)])
            save_figure(figure, folder / relative.parent / f"{relative.name}.png")

    return write
