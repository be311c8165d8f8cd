"""The ``ktg`` command line, the top layer of ktg: one module per command (``ktg <command> --help`` for each).

Each command module adds its parser with ``add_parser(commands)`` and runs with ``run(args)``; nothing in the
library imports this package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from ktg import __version__
from ktg.errors import KTGError

#: The command modules, in the order ``ktg --help`` lists them; each defines ``add_parser(commands)``.
COMMANDS: tuple[str, ...] = ("train", "eval", "graph", "attention", "search", "study", "chain")


def build_parser() -> argparse.ArgumentParser:
    """The ``ktg`` parser with every command."""
    parser = argparse.ArgumentParser(
        prog="ktg", description="Knowledge transfer graphs: train ensembles of Attention Branch Networks that teach "
        "each other, and search for the graph that makes the best ensemble.")
    parser.add_argument("--version", action="version", version=f"ktg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ktg.cli.{name}").add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 3 out of memory, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KTGError as error:
        print(f"ktg: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nktg: interrupted; finished epochs are kept in the run's checkpoint (continue with --resume)",
              file=sys.stderr)
        return 130
    except Exception as error:
        if not _out_of_memory(error):
            raise
        print("ktg: error: the GPU ran out of memory; lower --batch-size (or run fewer jobs per GPU). "
              "Finished epochs are kept in the run's checkpoint: add --resume to continue.", file=sys.stderr)
        return 3


def _out_of_memory(error: Exception) -> bool:
    """Whether ``error`` is PyTorch's out-of-memory error (torch is imported only by commands that need it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)
