"""The ``ktg`` command line, the top layer of ktg: one module per command (``ktg <command> --help`` for each).

Each command module adds its parser with ``add_parser(commands)`` and runs with ``run(args)``; nothing in the
library imports this package. Building the parsers imports no framework (torch, Optuna, matplotlib,
TensorBoard): defaults, choices and the names of datasets and models come from torch-free modules
(:mod:`ktg.config`, :mod:`ktg.registry`, :mod:`ktg.graph`, :mod:`ktg.search.settings`, the registries of
:mod:`ktg.data` and :mod:`ktg.models`). A command first checks everything that needs no framework (its
options, the dataset's name, the graph, the run folder) and only then imports what it needs, so ``ktg --help``,
``ktg --version`` and a mistake in the arguments answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import signal
import sys
from typing import TYPE_CHECKING, Callable, NoReturn, Sequence

from ktg import __version__
from ktg.errors import KTGError

if TYPE_CHECKING:
    from ktg.plan import TrainingPlan
    from ktg.search.settings import SearchSettings

#: The command modules, in the order ``ktg --help`` lists them; each defines ``add_parser(commands)``.
COMMANDS: tuple[str, ...] = ("train", "eval", "compare", "predict", "export", "graph", "attention", "search", "study",
                             "storage", "chain")


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (``ktg train: error: argument --epochs: …``) like every other
    error of ktg; ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``ktg`` parser with every command."""
    parser = Parser(
        prog="ktg", description="Knowledge transfer graphs: train ensembles of Attention Branch Networks that teach "
        "each other, and search for the graph that makes the best ensemble.")
    parser.add_argument("--version", action="version", version=f"ktg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ktg.cli.{name}").add_parser(commands)
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """``ktg ARGV`` parsed as the command line would parse it; KTGError with its one-line message where it refuses
    the arguments (for scripts that check command lines before they run them)."""
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            return build_parser().parse_args(argv)
    except SystemExit:
        lines = usage.getvalue().strip().splitlines()
        raise KTGError(lines[-1] if lines else f"ktg {' '.join(argv)}: not a command line") from None


def plan(argv: Sequence[str]) -> TrainingPlan | SearchSettings:
    """What ``ktg ARGV`` would do, resolved by the command's own rule without running it: a
    :class:`~ktg.plan.TrainingPlan` for ``train``, the :class:`~ktg.search.settings.SearchSettings` for
    ``search``. For scripts that drive ktg with command lines and must know what those will train, so that no
    script re-derives it. KTGError for a command line the command would refuse (its one-line message); needs no
    framework."""
    from ktg.cli.options import training_plan_from_args
    from ktg.cli.search import search_settings_from_args

    args = parse(argv)
    planners = {"train": training_plan_from_args, "search": search_settings_from_args}
    if args.command not in planners:
        raise KTGError(f"ktg {args.command}: only {' and '.join(planners)} command lines have a plan")
    return planners[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 3 out of memory, 130 interrupted, 141 the
    reader of the output went away)."""
    return quiet_when_the_reader_leaves(lambda: _run(argv))


def quiet_when_the_reader_leaves(command: Callable[[], int]) -> int:
    """``command()``'s exit status, or 141 (128 + SIGPIPE) without a traceback when the reader of its standard
    output went away (``ktg predict … | head``: the rest is not wanted), as a command killed by SIGPIPE ends.
    The experiment scripts run their ``main`` through it too."""
    try:
        try:
            return command()
        finally:
            sys.stdout.flush()  # output to a pipe is buffered: a reader that went away shows here, not at exit
    except BrokenPipeError:
        # stdout now points at /dev/null, so that Python's own flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KTGError as error:
        return fail(str(error))
    except KeyboardInterrupt:
        print("\nktg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # an OSError, but no problem of the environment: see main
    except OSError as error:  # a folder that cannot be written, a disk that is full: the environment, not ktg
        return fail(f"{error.filename}: {error.strerror}" if error.filename and error.strerror else first_line(error))
    except ImportError as error:
        if (error.name or "").partition(".")[0] == "ktg":
            raise  # a module of ktg itself is missing: a bug or a broken install, whose traceback helps
        return fail(f"{first_line(error)} (a package this command needs is not installed: pip install it)")
    except Exception as error:
        if not _out_of_memory(error):
            raise
        print("ktg: error: the GPU ran out of memory; lower --batch-size (or run fewer jobs per GPU)", file=sys.stderr)
        return 3


def fail(message: str) -> int:
    """Print ``message`` as ktg's one-line error and return the exit status of a user error. Control characters
    (a newline in a graph file's key, a name, a path) are shown escaped, so the error stays one line."""
    print(f"ktg: error: {_CONTROL.sub(lambda match: repr(match.group())[1:-1], message)}", file=sys.stderr)
    return 2


#: Control characters, and what Python counts as a line break among the rest (NEL, the line and paragraph separators).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type when it has none)."""
    return next(iter(str(error).splitlines()), "") or type(error).__name__


def _out_of_memory(error: Exception) -> bool:
    """Whether ``error`` is PyTorch's out-of-memory error (torch is imported only by commands that need it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)
