"""The command line as the top layer: its own package, run as ``python -m ktg.cli``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


def test_python_m_ktg_cli_runs_the_command_line():
    done = subprocess.run([sys.executable, "-m", "ktg.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"ktg {ktg.__version__}"
