"""The package's layers: no import cycle between its modules and subpackages, and nothing below the command line
imports it. Imports inside functions count too: a late import still ties two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

import ktg

PACKAGE = Path(ktg.__file__).parent


def unit_of(module: str) -> str | None:
    """The top-level module or subpackage of ktg that ``module`` (a dotted name) lies in; None outside ktg."""
    parts = module.split(".")
    if parts[0] != "ktg":
        return None
    return parts[1] if len(parts) > 1 else "ktg"


def imports_of(path: Path) -> set[str]:
    """The ktg units a file imports (``from ktg import x`` counts as unit x when x is a module or subpackage)."""
    package = ".".join(("ktg", *path.relative_to(PACKAGE).parent.parts))
    units = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            folder = PACKAGE.joinpath(*base.split(".")[1:])
            names = [f"{base}.{alias.name}" if (folder / alias.name).is_dir() or (folder / f"{alias.name}.py").exists()
                     else base for alias in node.names]
        else:
            continue
        units.update(unit for unit in map(unit_of, names) if unit is not None)
    return units


def import_graph() -> dict[str, set[str]]:
    """Unit → the other units it imports, over every file of the package."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        unit = unit_of(".".join(("ktg", *path.relative_to(PACKAGE).with_suffix("").parts)))
        graph.setdefault(unit, set()).update(imports_of(path) - {unit})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> list[str] | None:
        if unit in path:
            return path[path.index(unit):] + [unit]
        if unit in done:
            return None
        for other in sorted(graph.get(unit, ())):
            cycle = visit(other, path + [unit])
            if cycle:
                return cycle
        done.add(unit)
        return None

    for unit in sorted(graph):
        cycle = visit(unit, [])
        if cycle:
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle)


def test_nothing_below_the_command_line_imports_it():
    assert sorted(unit for unit, imported in import_graph().items() if "cli" in imported and unit != "cli") == []


def test_the_checks_see_cycles_and_late_imports():
    cycle = find_cycle({"config": set(), "train": {"config", "viz"}, "viz": {"evaluate"}, "evaluate": {"train"}})
    assert cycle[0] == cycle[-1] and sorted(cycle[1:]) == ["evaluate", "train", "viz"]
    assert find_cycle({"train": {"config"}, "config": set()}) is None
    assert "viz" not in import_graph()["train"] and "train" in import_graph()["evaluate"]
