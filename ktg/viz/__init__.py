"""Pictures of graphs and of where nodes look: graph figures and text exports
(:mod:`ktg.viz.graph_figure`) and attention grids (:mod:`ktg.viz.attention`), drawn by the ``ktg graph`` /
``ktg attention`` commands (:mod:`ktg.cli.graph`, :mod:`ktg.cli.attention`).

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), never through pyplot, so
importing these modules changes no global backend and works the same in a script, a notebook or a trainer.
"""

from __future__ import annotations

from pathlib import Path

from ktg.errors import KTGError
from ktg.io import atomic_path

#: File types a figure can be saved as (by the path's suffix).
FIGURE_FORMATS = ("png", "svg", "pdf")
#: Resolution of every figure unless asked otherwise (a PNG is size × dpi pixels).
FIGURE_DPI = 100
#: Size in inches of a graph's figure unless asked otherwise.
GRAPH_FIGURE_SIZE = (7.0, 6.5)


def save_figure(figure, path: str | Path) -> Path:
    """Write a matplotlib ``figure`` to ``path`` atomically, as PNG, SVG or PDF by its suffix; parent folders
    are created. The figure keeps its size (no tight bounding box), so a PNG is exactly size × dpi pixels."""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in FIGURE_FORMATS:
        raise KTGError(f"cannot save a figure as {path.name!r}; use a file ending in "
                       f"{', '.join('.' + f for f in FIGURE_FORMATS)}")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=kind, dpi=figure.dpi)
    return path
