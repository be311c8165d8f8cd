"""``ktg graph show``: draw a graph, export it (DOT, Mermaid) or summarise it in the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

from ktg.errors import KTGError
from ktg.graph import DEFAULT_NODES, NAMED_GRAPHS, resolve_graph
from ktg.run_folder import RunFolder, check_outside_runs
from ktg.search.settings import BEST_GRAPH
from ktg.viz import FIGURE_DPI, FIGURE_FORMATS, GRAPH_FIGURE_SIZE

#: Text outputs of ``ktg graph show`` and the file suffixes that choose them.
TEXT_FORMATS = {"text": (".txt",), "dot": (".dot", ".gv"), "mermaid": (".mmd", ".mermaid")}
FIGURE_SUFFIXES = tuple(f".{kind}" for kind in FIGURE_FORMATS)


def add_parser(commands) -> None:
    """Add ``graph`` (with ``show``) to the ``ktg`` subcommands."""
    graph = commands.add_parser("graph", help="draw or describe a graph (ktg graph show --help)",
                                description="Draw or describe a knowledge transfer graph.")
    actions = graph.add_subparsers(dest="graph_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", help="draw a graph (PNG/SVG/PDF), export it (DOT, Mermaid) or summarise it in the terminal",
        description="Draw a graph the way the papers do (label node on top, network nodes around, ensemble node "
        "below; one arrow per active edge, coloured by gate, labelled by loss design; cut-off edges left out), "
        "export it as Graphviz DOT or Mermaid, or print a plain-text summary (the default).")
    show.add_argument("graph", help="graph file, run or search folder (its graph.json / best_graph.json), "
                      f"or a named graph: {', '.join(NAMED_GRAPHS)}")
    show.add_argument("--nodes", type=int, help=f"number of network nodes of a named graph (default {DEFAULT_NODES})")
    text_suffixes = ", ".join(" ".join(suffixes) for suffixes in TEXT_FORMATS.values())
    show.add_argument("--out", type=Path, help=f"write here; the suffix picks the format: {' '.join(FIGURE_SUFFIXES)} "
                      f"(figure), {text_suffixes} (default: print to the terminal)")
    show.add_argument("--format", choices=(*TEXT_FORMATS, *FIGURE_FORMATS),
                      help="output format (default: from --out's suffix, else text)")
    show.add_argument("--size", type=float, nargs=2, default=GRAPH_FIGURE_SIZE, metavar=("WIDTH", "HEIGHT"),
                      help=f"figure size in inches (default: {' '.join(f'{side:g}' for side in GRAPH_FIGURE_SIZE)})")
    show.add_argument("--dpi", type=int, default=FIGURE_DPI,
                      help="figure resolution (default: %(default)s; PNG = size × dpi pixels)")
    show.set_defaults(handler=run_show)


def load_graph(name_or_path: str, num_nodes: int | None = None):
    """A named graph, a graph file, or the graph of a run folder (graph.json) or search folder (best_graph.json)."""
    path = Path(name_or_path)
    if path.is_dir():
        for graph_file in (RunFolder(path).graph_file, path / BEST_GRAPH):
            if graph_file.is_file():
                return resolve_graph(str(graph_file), num_nodes)
        raise KTGError(f"{path} is a folder without {RunFolder(path).graph_file.name} (a run) or {BEST_GRAPH} "
                       f"(a search)")
    if name_or_path not in NAMED_GRAPHS and not path.exists():
        raise KTGError(f"{name_or_path!r} is neither a named graph ({', '.join(NAMED_GRAPHS)}) nor an existing "
                       f"graph file, run folder or search folder")
    return resolve_graph(name_or_path, num_nodes)


def _output_format(args: argparse.Namespace) -> str:
    by_suffix = None
    if args.out is not None:
        suffix = args.out.suffix.lower()
        by_suffix = next((name for name, suffixes in TEXT_FORMATS.items() if suffix in suffixes),
                         suffix.lstrip(".") if suffix in FIGURE_SUFFIXES else None)
        if by_suffix is None and args.format is None:
            raise KTGError(f"cannot tell the format of --out {args.out}; use a suffix .png .svg .pdf .dot .mmd .txt "
                           "or give --format")
    chosen = args.format or by_suffix or "text"
    if args.out is not None and by_suffix is not None and chosen != by_suffix:
        raise KTGError(f"--format {chosen} does not match --out {args.out.name}")
    if args.out is None and chosen not in TEXT_FORMATS:
        raise KTGError(f"a {chosen} figure needs a file: add --out FILE.{chosen}")
    return chosen


def run_show(args: argparse.Namespace) -> int:
    spec = load_graph(args.graph, args.nodes)
    kind = _output_format(args)
    if args.out is not None:
        check_outside_runs(args.out, "--out")

    from ktg.io import write_text
    from ktg.viz.graph_figure import summary, to_dot, to_mermaid  # matplotlib: after the checks that need none

    if kind in TEXT_FORMATS:
        text = {"text": summary, "dot": to_dot, "mermaid": to_mermaid}[kind](spec)
        if args.out is None:
            print(text, end="")
        else:
            write_text(args.out, text)
            print(f"written to {args.out}")
        return 0

    from ktg.viz import save_figure
    from ktg.viz.graph_figure import graph_figure

    if args.dpi < 1 or min(args.size) <= 0:
        raise KTGError("--size and --dpi must be positive")
    out = args.out if args.out.suffix else args.out.with_suffix(f".{kind}")
    save_figure(graph_figure(spec, size=tuple(args.size), dpi=args.dpi), out)
    print(summary(spec), end="")
    print(f"figure written to {out}")
    return 0
