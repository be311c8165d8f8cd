"""``ktg compare``: the final accuracies of finished runs side by side (a searched graph beside a baseline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ktg.errors import KTGError
from ktg.run_folder import FinalMetrics, RunFolder


def add_parser(commands) -> None:
    """Add ``compare`` to the ``ktg`` subcommands."""
    parser = commands.add_parser("compare", help="finished runs' accuracies side by side",
                                 description="Print the final accuracy of every node, the mean node and the ensemble "
                                 "node of finished runs side by side, one column per run (from their metrics.json).")
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders written by ktg train")
    parser.add_argument("--names", nargs="+", metavar="NAME", help="a column title per run (default: the folders)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    names = args.names or [str(path) for path in args.runs]
    if len(names) != len(args.runs):
        raise KTGError(f"--names gives {len(names)} names for {len(args.runs)} runs; give one per run")
    finals = []
    for path in args.runs:
        folder = RunFolder(path)
        folder.check_is_run()
        if not folder.is_finished():
            raise KTGError(f"{path} has not finished: it has no final metrics yet (continue it with ktg train "
                           f"--resume --out {path})")
        finals.append(folder.read_metrics())
    print(format_comparison(names, finals))
    return 0


#: Characters of a graph's name the table shows: a graph a search chose names how it was chosen, verdict and all,
#: which would widen a column past any screen (the whole name is in the run's graph.json).
GRAPH_CELL = 32


def format_comparison(names: list[str], finals: list[FinalMetrics]) -> str:
    """A table with one column per run: what was trained (dataset, graph, epochs, split), then the top-1
    accuracy in % of every node, of the mean node and of the ensemble node (``—`` where a run has fewer nodes).
    A graph's name longer than :data:`GRAPH_CELL` characters is cut there, with an ellipsis."""
    def percent(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.2f} %"

    rows = [("dataset", [final.dataset for final in finals]),
            ("graph", [_cut(final.graph or "") for final in finals]),
            ("epochs", [str(final.epochs) for final in finals]),
            ("evaluated on", [f"{final.split} split" for final in finals])]
    for node in range(max(len(final.node_accuracy) for final in finals)):
        rows.append((f"node {node}", [percent(final.node_accuracy[node] if node < len(final.node_accuracy)
                                              else None) for final in finals]))
    rows.append(("mean node", [percent(final.mean_node_accuracy) for final in finals]))
    rows.append(("ensemble", [percent(final.ensemble_accuracy) for final in finals]))
    widths = [max(len(name), *(len(values[column]) for _, values in rows)) for column, name in enumerate(names)]
    label = max(len(key) for key, _ in rows)

    def line(key: str, values: list[str]) -> str:
        return "  ".join([f"{key:<{label}}", *(f"{value:>{width}}" for value, width in zip(values, widths))]).rstrip()

    return "\n".join([line("", names), *(line(key, values) for key, values in rows)])


def _cut(name: str) -> str:
    return name if len(name) <= GRAPH_CELL else name[:GRAPH_CELL - 1] + "…"
