"""A knowledge transfer graph drawn the way the papers draw it, and the same graph as text.

:func:`graph_figure` puts the label node on top, the network nodes around the centre and the ensemble node
below; every active edge is one arrow, coloured by its gate and labelled by its loss design ("KL pull p",
"cos push A", ...), each label placed along its arc clear of every node and arrowhead; the two directions of a
pair curve apart; cut-off edges are left out. The network nodes are joined to the ensemble node by dotted lines
(its logits are their mean; it learns nothing).
:func:`to_dot`, :func:`to_mermaid` and :func:`summary` describe the same edges as Graphviz, Mermaid and a
plain-text table.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import RendererAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from ktg.graph import ENSEMBLE, LABEL, GraphSpec, NodeRef
from ktg.registry import GATES, LOSS_DESIGNS
from ktg.viz import FIGURE_DPI, GRAPH_FIGURE_SIZE

#: The loss of a label edge (ABN: cross-entropy of both branches); it pulls the node towards the labels.
LABEL_LOSS = "CE"

_NODE_RADIUS = 0.42
#: Where an edge's label may sit: arc parameters t around the preferred one (nearest first), then the same
#: shifted across the arc by these drawing units; never nearer the ends than _ARC_ENDS.
_ALONG = tuple(sorted((0.04 * k for k in range(-10, 11)), key=abs))
_ACROSS = (0.0, 0.12, -0.12, 0.24, -0.24)
_ARC_ENDS = 0.12


class DrawnEdge(NamedTuple):
    """One active edge as the pictures show it: ``source`` → ``target`` (``"label"``, ``"ensemble"`` or an
    index), the loss design's name (``"CE"`` on label edges), its short label and the gate."""

    source: NodeRef
    target: int
    loss: str
    text: str
    gate: str

    @property
    def pushes(self) -> bool:
        """Whether the design drives the target away from the source (e.g. the cosine designs)."""
        return self.loss != LABEL_LOSS and LOSS_DESIGNS[self.loss].pushes


def design_label(loss: str) -> str:
    """The short label of a registered loss design (``prob_kl`` → ``"KL pull p"``)."""
    return LOSS_DESIGNS[loss].label


def gate_color(gate: str) -> str:
    """The colour of a registered gate's edges."""
    return GATES[gate].color


def drawn_edges(spec: GraphSpec) -> list[DrawnEdge]:
    """The edges a picture shows: label edges, then network edges, those with a gate never computed
    (``cutoff``) left out."""
    edges = [DrawnEdge(LABEL, target, LABEL_LOSS, LABEL_LOSS, gate)
             for target, gate in enumerate(spec.label_gates) if GATES[gate].computed]
    edges += [DrawnEdge(edge.source, edge.target, edge.loss, _edge_text(edge), edge.gate) for edge in spec.active_edges]
    return edges


def _edge_text(edge) -> str:
    """The design's label, plus the stage a hint compares and a temperature of the edge's own."""
    text = design_label(edge.loss) + (f"@{edge.stage}" if edge.stage else "")
    return text + (f" T={edge.temperature:g}" if edge.temperature is not None else "")


def cut_off_edges(spec: GraphSpec) -> list[str]:
    """Every edge the graph cuts off, as ``"label → 2"`` / ``"0 → 1"``: unlisted ordered pairs and
    edges whose gate is never computed (``cutoff``)."""
    cut = [f"{LABEL} → {target}" for target, gate in enumerate(spec.label_gates) if not GATES[gate].computed]
    active = {(edge.source, edge.target) for edge in spec.active_edges}
    n = spec.num_nodes
    cut += [f"{s} → {t}" for s in range(n) for t in range(n) if s != t and (s, t) not in active]
    return cut


def layout(num_nodes: int) -> dict[NodeRef, tuple[float, float]]:
    """Node centres in drawing units: network nodes evenly on a circle, symmetric about the vertical axis
    (an odd count points up, an even count has no node at the top), the label node above, the ensemble below."""
    radius = 1.5 if num_nodes <= 3 else 1.9
    start = math.pi / 2 if num_nodes % 2 else math.pi / 2 + math.pi / num_nodes
    positions: dict[NodeRef, tuple[float, float]] = {
        i: (radius * math.cos(start + 2 * math.pi * i / num_nodes),
            radius * math.sin(start + 2 * math.pi * i / num_nodes))
        for i in range(num_nodes)
    }
    if num_nodes == 1:
        positions[0] = (0.0, 0.0)
    positions[LABEL] = (0.0, radius + 1.4)
    positions[ENSEMBLE] = (0.0, -radius - 1.4)
    return positions


def _port(box: tuple[float, float], towards: tuple[float, float]) -> tuple[float, float]:
    """Where a line to ``towards`` leaves the label or ensemble box: spread along the box in the direction of
    the other end, so that lines fan out instead of crossing the nodes next to the box."""
    return box[0] + max(-0.6, min(0.6, 0.4 * (towards[0] - box[0]))), box[1]


def _short_model(model: str | None) -> str:
    return "" if model is None else model.removeprefix("abn_")


def _node_flags(node) -> str:
    """``frozen`` (a fixed teacher) and ``bagging`` (its own bootstrap replicate), as the node is marked."""
    return " ".join(flag for flag, on in (("frozen", node.frozen), ("bagging", node.bagging)) if on)


def graph_figure(spec: GraphSpec, *, size: tuple[float, float] = GRAPH_FIGURE_SIZE, dpi: int = FIGURE_DPI,
                 title: str | None = None) -> Figure:
    """Draw ``spec`` on a new figure of ``size`` inches at ``dpi`` (a PNG of it is size × dpi pixels).

    ``title`` defaults to the graph's name and its count of active edges.
    """
    figure = Figure(figsize=size, dpi=dpi)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    positions = layout(spec.num_nodes)
    patches = _draw_nodes(axes, spec, positions)
    edges = drawn_edges(spec)
    pairs = {(edge.source, edge.target) for edge in edges}
    labels = []
    for edge in edges:
        # An edge whose reverse is drawn too bends more, so that the two directions separate clearly.
        if edge.source == LABEL:
            others = [positions[i] for i in range(spec.num_nodes) if i != edge.target]
            rad = _label_rad(_port(positions[LABEL], positions[edge.target]), positions[edge.target], others)
        else:
            rad = 0.22 if (edge.target, edge.source) in pairs else 0.1
        labels.append(_draw_edge(axes, edge, positions, patches, rad))
    # Limits with the figure's aspect ratio, so that circles stay round and nothing is cropped.
    half_height = positions[LABEL][1] + 0.9
    half_width = max(half_height * size[0] / size[1], positions[LABEL][1] + 0.9)
    axes.set_xlim(-half_width, half_width)
    axes.set_ylim(-half_width * size[1] / size[0], half_width * size[1] / size[0])
    network_edges = sum(1 for edge in edges if edge.source != LABEL)
    heading = title if title is not None else (
        f"{spec.name or 'graph'}: {spec.num_nodes} nodes, {network_edges} network edges, "
        f"{len(edges) - network_edges} label edges")
    figure.text(0.5, 0.985, heading, ha="center", va="top", fontsize=11)
    _legend(axes, {edge.gate for edge in edges}, any(edge.pushes for edge in edges))
    _place_labels(figure, axes, labels, patches)
    return figure


def _draw_nodes(axes, spec: GraphSpec, positions) -> dict[NodeRef, object]:
    patches: dict[NodeRef, object] = {}
    for i, node in enumerate(spec.nodes):
        x, y = positions[i]
        patch = Circle((x, y), _NODE_RADIUS, facecolor="#D9D9D9" if node.frozen else "#F2F2F2", edgecolor="#333333",
                       linewidth=1.4, linestyle="--" if node.frozen else "-", zorder=3)
        axes.add_patch(patch)
        axes.text(x, y + 0.1, f"node {i}", ha="center", va="center", fontsize=9, weight="bold", zorder=4)
        axes.text(x, y - 0.12, _short_model(node.model), ha="center", va="center", fontsize=7, zorder=4)
        if _node_flags(node):
            axes.text(x, y - 0.27, _node_flags(node), ha="center", va="center", fontsize=6, style="italic", zorder=4)
        patches[i] = patch
    for ref, text, color in ((LABEL, "label ŷ", "#FFF4D6"), (ENSEMBLE, "ensemble (mean)", "#E3EEF9")):
        x, y = positions[ref]
        width, height = 1.7, 0.55
        patch = FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                               boxstyle="round,pad=0.02,rounding_size=0.15",
                               facecolor=color, edgecolor="#333333", linewidth=1.4, zorder=3)
        axes.add_patch(patch)
        axes.text(x, y, text, ha="center", va="center", fontsize=9, weight="bold", zorder=4)
        patches[ref] = patch
    for i in spec.members:
        axes.add_patch(FancyArrowPatch(positions[i], _port(positions[ENSEMBLE], positions[i]),
                                       patchA=patches[i], patchB=patches[ENSEMBLE],
                                       arrowstyle="-", linestyle=":", color="#999999", linewidth=1.0, zorder=1))
    return patches


class _EdgeLabel(NamedTuple):
    """An edge's label, the arrow it names and the arc it may sit on: from ``start`` to ``end``, bent by ``rad``,
    preferably at parameter ``t``."""

    text: Text
    arrow: FancyArrowPatch
    start: tuple[float, float]
    end: tuple[float, float]
    rad: float
    t: float


def _draw_edge(axes, edge: DrawnEdge, positions, patches, rad: float) -> _EdgeLabel:
    """Draw the arrow of ``edge``; its label is made here and placed by :func:`_place_labels`."""
    color = gate_color(edge.gate)
    end = positions[edge.target]
    start = _port(positions[LABEL], end) if edge.source == LABEL else positions[edge.source]
    arrow = FancyArrowPatch(
        start, end, patchA=patches[edge.source], patchB=patches[edge.target], shrinkA=2, shrinkB=3,
        arrowstyle="-|>", mutation_scale=13, connectionstyle=f"arc3,rad={rad}", color=color, linewidth=1.6,
        linestyle=(0, (4, 2)) if edge.pushes else "-", zorder=2,
    )
    axes.add_patch(arrow)
    text = axes.text(*start, edge.text, ha="center", va="center", fontsize=7, color=color, zorder=5,
                     bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    # Network labels prefer a spot past the middle, towards the target, so that the labels of crossing edges do
    # not pile up in the centre.
    return _EdgeLabel(text, arrow, start, end, rad, 0.5 if edge.source == LABEL else 0.62)


def _place_labels(figure: Figure, axes, labels: list[_EdgeLabel], patches: dict[NodeRef, object]) -> None:
    """Put each label on its arc where its box covers no node and no arrowhead, nor (where it can) the legend
    or a label placed before it: the spot nearest its preferred one along the arc, else nudged across the arc;
    where every spot covers something, the one covering least (nodes and arrowheads weigh most).

    Works in display coordinates (pixels), after the axes' limits are set and the legend drawn.
    """
    renderer = RendererAgg(int(figure.bbox.width), int(figure.bbox.height), figure.dpi)
    to_display = axes.transData.transform
    circles = [(np.asarray(to_display(patch.center)), patch.get_window_extent().width / 2)
               for patch in patches.values() if isinstance(patch, Circle)]
    hard = [patch.get_window_extent() for patch in patches.values() if not isinstance(patch, Circle)]
    hard += [_arrowhead_box(label.arrow).padded(4) for label in labels]
    soft = [axes.get_legend().get_window_extent(renderer)]
    for label in labels:
        extent = label.text.get_window_extent(renderer)
        # The white box around the text: pad 0.15 of the font size (points → pixels), and a pixel to spare.
        pad = 0.15 * label.text.get_fontsize() * figure.dpi / 72 + 1
        half = np.array([extent.width / 2 + pad, extent.height / 2 + pad])
        (x0, y0), (x1, y1) = label.start, label.end
        across = np.array([y1 - y0, x0 - x1]) / math.dist(label.start, label.end)
        spots = ((offset, label.t + delta) for offset in _ACROSS for delta in _ALONG
                 if _ARC_ENDS <= label.t + delta <= 1 - _ARC_ENDS)
        best = None
        for offset, t in spots:
            point = np.asarray(_arc_point(label.start, label.end, label.rad, t)) + offset * across
            centre = to_display(point)
            box = Bbox([centre - half, centre + half])
            cost = (_covered(box, circles, hard), _covered(box, [], soft))
            if best is None or cost < best[0]:
                best = (cost, point, box)
            if cost == (0.0, 0.0):
                break
        label.text.set_position(tuple(best[1]))
        soft.append(best[2])


def _arrowhead_box(arrow: FancyArrowPatch) -> Bbox:
    """The display-coordinate box of an arrow's head: the closed polygon at the end of its path."""
    head = arrow.get_transform().transform(arrow.get_path().to_polygons(closed_only=False)[-1])
    return Bbox([head.min(axis=0), head.max(axis=0)])


def _covered(box: Bbox, circles: list[tuple[np.ndarray, float]], boxes: list[Bbox]) -> float:
    """How much ``box`` covers the circles (squared depth) and the boxes (area), in pixels²."""
    total = 0.0
    for centre, radius in circles:
        depth = radius - float(np.linalg.norm(centre - np.clip(centre, box.min, box.max)))
        total += max(depth, 0.0) ** 2
    for other in boxes:
        width = min(box.x1, other.x1) - max(box.x0, other.x0)
        height = min(box.y1, other.y1) - max(box.y0, other.y0)
        total += max(width, 0.0) * max(height, 0.0)
    return total


def _arc_point(start: tuple[float, float], end: tuple[float, float], rad: float, t: float) -> tuple[float, float]:
    """The point at parameter t of matplotlib's ``arc3`` curve from start to end: the quadratic Bézier whose
    control point is the chord's midpoint moved by rad·(dy, −dx)."""
    (x0, y0), (x1, y1) = start, end
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    return ((1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t ** 2 * x1,
            (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t ** 2 * y1)


def _label_rad(start: tuple[float, float], end: tuple[float, float], others: list[tuple[float, float]]) -> float:
    """The curvature of a label edge: bowed away from the centre, so that it parts from the network edges
    arriving at the same node, by as much as 0.3 where the curve keeps clear of every other node."""
    (x0, y0), (x1, y1) = start, end
    outward = 1.0 if (y1 - y0) * (x0 + x1) - (x1 - x0) * (y0 + y1) >= 0 else -1.0
    for rad in (0.3, 0.2, 0.1):
        points = [_arc_point(start, end, outward * rad, k / 10) for k in range(1, 10)]
        if all(math.dist(p, q) > _NODE_RADIUS + 0.25 for p in points for q in others):
            return outward * rad
    return 0.0


def _legend(axes, gates: set[str], pushes: bool) -> None:
    handles = [Line2D([], [], color=gate_color(gate), linewidth=2, label=f"gate {gate}") for gate in GATES
               if gate in gates]
    handles.append(Line2D([], [], color="#333333", linewidth=1.5, label="pull together"))
    if pushes:
        handles.append(Line2D([], [], color="#333333", linewidth=1.5, linestyle=(0, (4, 2)), label="push apart"))
    handles.append(Line2D([], [], color="#999999", linewidth=1.0, linestyle=":", label="averaged into ensemble"))
    axes.legend(handles=handles, loc="lower left", fontsize=7, frameon=False)


# -- text ---------------------------------------------------------------------------------------------


def _node_id(ref: NodeRef) -> str:
    return f"n{ref}" if isinstance(ref, int) else str(ref)


def _node_text(index: int, node, line_break: str) -> str:
    return line_break.join(part for part in (f"node {index}", node.model, _node_flags(node)) if part)


def _quoted(text: str) -> str:
    """A DOT string literal (backslashes, quotes and line breaks escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(spec: GraphSpec) -> str:
    """The graph in Graphviz DOT: one ``->`` line per active edge, labelled ``design (gate)`` and coloured by
    gate; dotted lines without arrowheads join the network nodes to the ensemble node."""
    lines = [f"digraph {_quoted(spec.name or 'ktg')} {{",
             "  node [fontname=Helvetica, fontsize=11];",
             "  edge [fontname=Helvetica, fontsize=9];",
             '  label [label="label ŷ", shape=box, style="rounded,filled", fillcolor="#FFF4D6"];']
    node_texts = [_quoted(_node_text(i, node, "\n")) for i, node in enumerate(spec.nodes)]
    lines += [f"  n{i} [label={text}, shape=circle];" for i, text in enumerate(node_texts)]
    lines += ['  ensemble [label="ensemble (mean)", shape=box, style="rounded,filled", fillcolor="#E3EEF9"];',
              "  { rank=min; label; }", "  { rank=max; ensemble; }"]
    for edge in drawn_edges(spec):
        style = ", style=dashed" if edge.pushes else ""
        lines.append(f"  {_node_id(edge.source)} -> n{edge.target} [label={_quoted(f'{edge.text} ({edge.gate})')}, "
                     f"color={_quoted(gate_color(edge.gate))}, fontcolor={_quoted(gate_color(edge.gate))}{style}];")
    lines += [f"  n{i} -> ensemble [style=dotted, arrowhead=none, color=gray];" for i in spec.members]
    return "\n".join(lines + ["}"]) + "\n"


def to_mermaid(spec: GraphSpec) -> str:
    """The graph as a Mermaid flowchart: one ``-->`` line per active edge, labelled ``design · gate``,
    coloured (and dashed for push designs) by ``linkStyle``; dotted ``-.-`` links to the ensemble node."""
    lines = ["flowchart TB", '  label(["label ŷ"])']
    lines += [f'  n{i}(("{_node_text(i, node, "<br/>")}"))' for i, node in enumerate(spec.nodes)]
    lines.append('  ensemble[["ensemble (mean)"]]')
    edges = drawn_edges(spec)
    lines += [f'  {_node_id(edge.source)} -->|"{edge.text} · {edge.gate}"| n{edge.target}' for edge in edges]
    lines += [f"  n{i} -.- ensemble" for i in spec.members]
    for index, edge in enumerate(edges):
        dash = ",stroke-dasharray:5 3" if edge.pushes else ""
        lines.append(f"  linkStyle {index} stroke:{gate_color(edge.gate)},stroke-width:2px{dash}")
    return "\n".join(lines) + "\n"


def summary(spec: GraphSpec) -> str:
    """A plain-text description for the terminal: the nodes, a table of active edges (label edges first) and
    the list of cut-off edges."""
    edges = drawn_edges(spec)
    lines = [f"graph {spec.name or '(unnamed)'}: {spec.num_nodes} network nodes, {len(edges)} active edges, "
             f"temperature {spec.temperature:g}, attention crops {', '.join(map(str, spec.crop_sizes))}"
             + (", ensemble may teach" if spec.ensemble_as_source else "")]
    for i, node in enumerate(spec.nodes):
        options = ", ".join([f"{key}={value}" for key, value in node.options.items()] + _node_flags(node).split())
        lines.append(f"  node {i}: {node.model or '(default model)'}" + (f" ({options})" if options else ""))
    if spec.ensemble_members is not None:
        lines.append(f"  the ensemble node averages nodes {', '.join(map(str, spec.members))}")
    rows = [(f"{edge.source} → {edge.target}", edge.loss, edge.text, edge.gate) for edge in edges]
    header = ("edge", "loss", "meaning", "gate")
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(4)]
    lines.append("")
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
              for row in [header, *rows]]
    cut = cut_off_edges(spec)
    lines.append("")
    lines.append(f"  cut off: {', '.join(cut)}" if cut else "  cut off: none")
    return "\n".join(lines) + "\n"
