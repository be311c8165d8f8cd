"""The package's layers: no import cycle between its subpackages, nor between the modules of one, and nothing
below the command line imports it. Imports inside functions count too: a late import still ties two modules
together."""

from __future__ import annotations

import ast
from pathlib import Path

import ktg

PACKAGE = Path(ktg.__file__).parent


def module_of(name: str) -> str | None:
    """The ktg module (a file's dotted name; a subpackage is its ``__init__``) that the dotted ``name`` imports:
    the longest prefix of it that is a file or folder of the package; None outside ktg."""
    parts = name.split(".")
    if parts[0] != "ktg":
        return None
    for end in range(len(parts), 0, -1):
        path = PACKAGE.joinpath(*parts[1:end])
        if path.with_suffix(".py").exists() or path.is_dir():
            return ".".join(parts[:end])
    return None


def unit_of(module: str) -> str | None:
    """The top-level module or subpackage of ktg that ``module`` (a dotted name) lies in; None outside ktg."""
    parts = module.split(".")
    if parts[0] != "ktg":
        return None
    return parts[1] if len(parts) > 1 else "ktg"


def imported_names(path: Path) -> set[str]:
    """The dotted names a file imports (``from ktg import x`` names ``ktg.x`` when x is a module or subpackage)."""
    package = ".".join(("ktg", *path.relative_to(PACKAGE).parent.parts))
    imported = set()
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
        imported.update(names)
    return imported


def imports_of(path: Path) -> set[str]:
    """The ktg units a file imports."""
    return {unit for unit in map(unit_of, imported_names(path)) if unit is not None}


def module_graph() -> dict[str, set[str]]:
    """Module → the other ktg modules it imports, over every file of the package. A subpackage's ``__init__``
    that exposes names of its own modules (``ktg.data`` → ``ktg.data.images``) is left out: the package is
    their front, not a module beside them."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("ktg", *(parts[:-1] if parts[-1] == "__init__" else parts)))
        inside = f"{name}." if parts[-1] == "__init__" else None
        graph[name] = {module for module in map(module_of, imported_names(path))
                       if module not in (None, name) and not (inside and module.startswith(inside))}
    return graph


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


def test_no_two_modules_import_each_other():
    cycle = find_cycle(module_graph())
    assert cycle is None, " → ".join(cycle)


def test_nothing_below_the_command_line_imports_it():
    assert sorted(unit for unit, imported in import_graph().items() if "cli" in imported and unit != "cli") == []


def test_the_checks_see_cycles_and_late_imports():
    cycle = find_cycle({"config": set(), "train": {"config", "viz"}, "viz": {"evaluate"}, "evaluate": {"train"}})
    assert cycle[0] == cycle[-1] and sorted(cycle[1:]) == ["evaluate", "train", "viz"]
    assert find_cycle({"train": {"config"}, "config": set()}) is None
    assert "viz" not in import_graph()["train"] and "train" in import_graph()["evaluate"]
    modules = module_graph()
    assert "ktg.search.keys" in modules["ktg.search.proxy"] and "ktg.search.proxy" in modules["ktg.search.storage"]
    assert "ktg.search.storage" not in modules["ktg.search.proxy"]  # the cycle they once made
