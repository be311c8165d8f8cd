"""The command line as the top layer: its own package, run as ``python -m ktg.cli``, answering at once."""

from __future__ import annotations

import ast
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import ktg

PACKAGE = Path(ktg.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, at any depth (``from ktg.cli import x`` gives ``ktg.cli``)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def test_nothing_in_the_library_imports_the_cli():
    library = [path for path in PACKAGE.rglob("*.py") if PACKAGE / "cli" not in path.parents]
    importers = sorted(str(path.relative_to(PACKAGE)) for path in library
                       if any(m == "ktg.cli" or m.startswith("ktg.cli.") for m in imported_modules(path)))
    assert importers == []


def test_only_the_cli_imports_argparse():
    library = [path for path in PACKAGE.rglob("*.py") if PACKAGE / "cli" not in path.parents]
    assert sorted(str(path.relative_to(PACKAGE)) for path in library if "argparse" in imported_modules(path)) == []


HEAVY = ("torch", "optuna", "matplotlib", "tensorboard")


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m ktg.cli ARGS`` in a fresh interpreter: (its result, the CPU seconds it took)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "ktg.cli", *args], capture_output=True, text=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_building_every_parser_imports_no_framework():
    code = ("import sys; from ktg.cli import build_parser; build_parser(); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("args, expected", [(["--version"], f"ktg {ktg.__version__}\n"), (["--help"], "usage: ktg")])
def test_version_and_help_answer_in_under_a_second_of_cpu(args, expected):
    done, cpu_seconds = run_cli(*args)
    assert done.returncode == 0 and done.stdout.startswith(expected)
    assert cpu_seconds < 1.0


@pytest.mark.parametrize("args, option", [
    (["train", "--epochs", "x"], "--epochs"),
    (["eval"], "--run"),
    (["search", "--pruner", "nope"], "--pruner"),
    (["search", "--designs", "prob_l2"], "--designs"),
    (["study", "show"], "--storage"),
    (["graph", "show", "dml", "--format", "jpeg"], "--format"),
    (["attention", "--run", "r", "--n", "many"], "--n"),
    (["chain", "c.json"], "--out"),
    (["fly"], "COMMAND"),
])
def test_an_argument_error_is_one_line_naming_the_option_in_under_a_second_of_cpu(args, option):
    done, cpu_seconds = run_cli(*args)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and ": error: " in lines[0] and option in lines[0], done.stderr
    assert cpu_seconds < 1.0
