"""``ktg chain``: train the stages of a chain file in order (teachers → assistants → students)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ktg.chain import load_chain, plan_chain, run_chain
from ktg.cli.options import add_data_arguments, add_progress_argument, data_source_from_args
from ktg.run_folder import check_outside_runs


def add_parser(commands) -> None:
    """Add ``chain`` to the ``ktg`` subcommands."""
    parser = commands.add_parser("chain", help="train a chain of graphs (teachers → assistants → students)",
                                 description="Train the stages of a chain file in order; each finished stage's "
                                 "nodes can teach later stages as frozen nodes (\"weights\": {\"run\": \"@stage\", "
                                 "\"node\": i}). Re-running skips finished stages and resumes an interrupted one.")
    parser.add_argument("chain", type=Path, help="the chain file (JSON, format ktg.chain)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the chain; one sub-folder per stage")
    parser.add_argument("--device", help="auto, cpu, cuda (overrides the chain file)")
    parser.add_argument("--epochs", type=int, help="epochs of every stage (overrides the chain file; quick runs)")
    parser.add_argument("--batch-size", type=int, help="batch size of every stage (overrides the chain file)")
    parser.add_argument("--width", type=int, help="base width of every node's model (quick runs); a node "
                        "of a stage that sets another width is an error")
    add_progress_argument(parser)
    add_data_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    source = data_source_from_args(args)
    check_outside_runs(args.out, "--out")
    overrides: dict[str, Any] = {"device": args.device} if args.device else {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    overrides.update({name: getattr(args, name) for name in ("holdout", "holdout_seed")
                      if getattr(args, name) is not None})
    node_options = {"base_width": args.width} if args.width is not None else {}

    chain = load_chain(args.chain)
    stages = plan_chain(chain, args.out, source, overrides=overrides, node_options=node_options)

    # Everything above needs no framework: a mistake in any stage is reported before one is imported.
    from ktg.viz.attention import log_attention_grid

    dataset = source.load()
    try:
        results = run_chain(stages, dataset, on_finish=log_attention_grid, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("\nktg: interrupted; run the same command again: finished stages are kept and the interrupted one "
              "continues from its last finished epoch", file=sys.stderr)
        return 130
    print()
    for stage, final in zip(chain["stages"], results):
        nodes = " ".join(f"{100 * a:.2f}" for a in final.node_accuracy)
        print(f"  {stage['name']:<16} ensemble {100 * final.ensemble_accuracy:6.2f} %   nodes {nodes}")
    print(f"stages written to {args.out}/")
    return 0
