"""The graph as data: which network nodes exist, and which edges carry what knowledge under which gate.

A :class:`GraphSpec` is small, validated and saved as JSON (see README, "Graph files"). The engine
interprets it; the search writes it; nothing else is needed to retrain a found graph on another dataset.
Network nodes are numbered 0..N-1; the label node is ``"label"`` and the ensemble node ``"ensemble"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from ktg.errors import KTGError
from ktg.gates import GATES
from ktg.io import write_json
from ktg.losses import ATTENTION_DESIGNS, LOSS_DESIGNS

FORMAT = "ktg.graph"
FORMAT_VERSION = 1
ENSEMBLE = "ensemble"
LABEL = "label"

NodeRef = Union[int, str]


class GraphError(KTGError):
    """A graph description that does not validate; the message names the field and the allowed values."""


@dataclass(frozen=True)
class NodeSpec:
    """A network node: a registered model name (None: the trainer picks one for the data) and its options
    for :func:`ktg.models.create_model` (e.g. ``attention_residual``, ``pretrained``)."""

    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EdgeSpec:
    """A network edge: ``source`` teaches ``target`` with loss ``loss`` weighted by gate ``gate``.

    ``source`` is a node index or ``"ensemble"``; ``target`` is a node index.
    """

    source: NodeRef
    target: int
    loss: str
    gate: str

    @property
    def label(self) -> str:
        """A short name for logs: ``edge 1→0 prob_kl/through``."""
        return f"edge {self.source}→{self.target} {self.loss}/{self.gate}"


@dataclass(frozen=True)
class GraphSpec:
    """A knowledge transfer graph.

    Attributes:
        nodes: the N network nodes.
        label_gates: the gate of the label edge into each node (N entries).
        edges: network edges; an ordered pair that is not listed is cut off.
        temperature: T of the probability edges (KL terms are scaled by T²).
        crop_sizes: the k of the k×k attention crops.
        ensemble_as_source: allow the ensemble node as the source of network edges (off in the papers).
        name: a free label (``"dml"``, ``"trial 17"``).
    """

    nodes: tuple[NodeSpec, ...]
    label_gates: tuple[str, ...]
    edges: tuple[EdgeSpec, ...] = ()
    temperature: float = 1.0
    crop_sizes: tuple[int, ...] = (3, 7, 11)
    ensemble_as_source: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        self._validate()

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def active_edges(self) -> tuple[EdgeSpec, ...]:
        """The edges whose gate is not ``cutoff``: the only ones the engine computes."""
        return tuple(edge for edge in self.edges if edge.gate != "cutoff")

    @property
    def needs_attention(self) -> bool:
        return any(edge.loss in ATTENTION_DESIGNS for edge in self.active_edges)

    def with_models(self, model: str) -> "GraphSpec":
        """The same graph with every node's model replaced by ``model`` (options kept)."""
        nodes = tuple(NodeSpec(model, dict(node.options)) for node in self.nodes)
        return GraphSpec(nodes, self.label_gates, self.edges, self.temperature, self.crop_sizes,
                         self.ensemble_as_source, self.name)

    # -- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready description, with format and version fields."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "nodes": [{"model": node.model, "options": dict(node.options)} for node in self.nodes],
            "label_gates": list(self.label_gates),
            "edges": [
                {"source": edge.source, "target": edge.target, "loss": edge.loss, "gate": edge.gate}
                for edge in self.edges
            ],
            "temperature": self.temperature,
            "crop_sizes": list(self.crop_sizes),
            "ensemble": {"as_source": self.ensemble_as_source},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "graph") -> "GraphSpec":
        """Build and validate a graph from its JSON description; errors name ``where`` and the field."""
        try:
            return _parse(data)
        except GraphError as error:
            raise GraphError(f"{where}: {error}") from None

    def save(self, path: str | Path) -> None:
        """Write the graph as JSON to ``path`` atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "GraphSpec":
        """Read and validate a graph file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise GraphError(f"cannot read graph file {path}: {error.strerror or error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise GraphError(f"graph file {path} is not valid JSON: {error.msg} at line {error.lineno}, "
                             f"column {error.colno}") from None
        return cls.from_dict(data, where=f"graph file {path}")

    # -- validation ----------------------------------------------------------------------------------

    def _validate(self) -> None:
        n = len(self.nodes)
        if n < 1:
            raise GraphError(f"nodes: a graph needs at least one network node")
        if len(self.label_gates) != n:
            raise GraphError(f"label_gates: expected one gate per node ({n}), got {len(self.label_gates)}")
        for i, gate_name in enumerate(self.label_gates):
            _check_choice(f"label_gates[{i}]", gate_name, GATES)
        if self.temperature <= 0 or isinstance(self.temperature, bool):
            raise GraphError(f"temperature: must be a positive number, got {self.temperature!r}")
        if not self.crop_sizes or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in self.crop_sizes):
            raise GraphError(f"crop_sizes: must be a non-empty list of positive integers, got {list(self.crop_sizes)}")
        seen: set[tuple[NodeRef, int]] = set()
        for i, edge in enumerate(self.edges):
            field_name = f"edges[{i}]"
            allowed_sources = list(range(n)) + ([ENSEMBLE] if self.ensemble_as_source else [])
            if edge.source not in allowed_sources or isinstance(edge.source, bool):
                hint = "" if self.ensemble_as_source or edge.source != ENSEMBLE else \
                    ' (set "ensemble": {"as_source": true} to let the ensemble teach)'
                raise GraphError(f"{field_name}.source: {edge.source!r} is not a source node; "
                                 f"allowed: {', '.join(map(str, allowed_sources))}{hint}")
            if edge.target not in range(n) or isinstance(edge.target, bool):
                raise GraphError(f"{field_name}.target: {edge.target!r} is not a network node; "
                                 f"allowed: 0..{n - 1}")
            if edge.source == edge.target:
                raise GraphError(f"{field_name}: node {edge.source} cannot teach itself")
            if (edge.source, edge.target) in seen:
                raise GraphError(f"{field_name}: a second edge {edge.source}→{edge.target}; "
                                 f"each ordered pair has at most one edge")
            seen.add((edge.source, edge.target))
            _check_choice(f"{field_name}.loss", edge.loss, LOSS_DESIGNS)
            _check_choice(f"{field_name}.gate", edge.gate, GATES)


def _check_choice(field_name: str, value: Any, allowed: dict) -> None:
    if value not in allowed:
        raise GraphError(f"{field_name}: {value!r} is not allowed; allowed: {', '.join(allowed)}")


def _parse(data: Any) -> GraphSpec:
    def require(mapping: Any, key: str, kind: type | tuple, path: str) -> Any:
        if key not in mapping:
            raise GraphError(f"{path}{key}: missing")
        value = mapping[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise GraphError(f"{path}{key}: expected {names}, got {type(value).__name__} {value!r}")
        return value

    if not isinstance(data, dict):
        raise GraphError(f"expected a JSON object at the top level, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise GraphError(f"format: expected {FORMAT!r}, got {data.get('format')!r}")
    version = data.get("version")
    if version != FORMAT_VERSION:
        raise GraphError(f"version: this ktg reads version {FORMAT_VERSION}, got {version!r}")
    known = {"format", "version", "name", "nodes", "label_gates", "edges", "temperature", "crop_sizes", "ensemble"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GraphError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")

    nodes = []
    for i, node in enumerate(require(data, "nodes", list, "")):
        if not isinstance(node, dict):
            raise GraphError(f"nodes[{i}]: expected an object with 'model' and 'options'")
        model = node.get("model")
        if model is not None and not isinstance(model, str):
            raise GraphError(f"nodes[{i}].model: expected a model name or null, got {model!r}")
        options = node.get("options", {})
        if not isinstance(options, dict):
            raise GraphError(f"nodes[{i}].options: expected an object, got {options!r}")
        extra = sorted(set(node) - {"model", "options"})
        if extra:
            raise GraphError(f"nodes[{i}]: unknown field(s) {', '.join(extra)}; allowed: model, options")
        nodes.append(NodeSpec(model, options))

    label_gates = require(data, "label_gates", list, "")
    edges = []
    for i, edge in enumerate(data.get("edges", [])):
        if not isinstance(edge, dict):
            raise GraphError(f"edges[{i}]: expected an object with source, target, loss, gate")
        extra = sorted(set(edge) - {"source", "target", "loss", "gate"})
        if extra:
            raise GraphError(f"edges[{i}]: unknown field(s) {', '.join(extra)}; allowed: source, target, loss, gate")
        edges.append(EdgeSpec(
            source=require(edge, "source", (int, str), f"edges[{i}]."),
            target=require(edge, "target", int, f"edges[{i}]."),
            loss=require(edge, "loss", str, f"edges[{i}]."),
            gate=require(edge, "gate", str, f"edges[{i}]."),
        ))
    ensemble = data.get("ensemble", {})
    if not isinstance(ensemble, dict) or set(ensemble) - {"as_source"}:
        raise GraphError(f"ensemble: expected {{\"as_source\": true|false}}, got {ensemble!r}")
    as_source = ensemble.get("as_source", False)
    if not isinstance(as_source, bool):
        raise GraphError(f"ensemble.as_source: expected true or false, got {as_source!r}")
    temperature = data.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise GraphError(f"temperature: expected a positive number, got {temperature!r}")
    crop_sizes = data.get("crop_sizes", [3, 7, 11])
    if not isinstance(crop_sizes, list):
        raise GraphError(f"crop_sizes: expected a list of positive integers, got {crop_sizes!r}")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise GraphError(f"name: expected a string or null, got {name!r}")

    return GraphSpec(tuple(nodes), tuple(label_gates), tuple(edges), float(temperature), tuple(crop_sizes),
                     as_source, name)


# -- named graphs -------------------------------------------------------------------------------------

def independent(num_nodes: int, model: str | None = None) -> GraphSpec:
    """Every node learns from the labels alone; no network edges (the papers' baseline)."""
    return GraphSpec(tuple(NodeSpec(model) for _ in range(num_nodes)), ("through",) * num_nodes, (), name="independent")


def dml(num_nodes: int, model: str | None = None) -> GraphSpec:
    """Deep mutual learning: labels plus ``prob_kl`` with ``through`` in both directions between every pair."""
    edges = tuple(
        EdgeSpec(source, target, "prob_kl", "through")
        for target in range(num_nodes) for source in range(num_nodes) if source != target
    )
    return GraphSpec(tuple(NodeSpec(model) for _ in range(num_nodes)), ("through",) * num_nodes, edges, name="dml")


NAMED_GRAPHS = {"independent": independent, "dml": dml}


def resolve_graph(name_or_path: str, num_nodes: int | None = None, model: str | None = None) -> GraphSpec:
    """A named graph (built for ``num_nodes`` nodes) or a graph file.

    With a file, ``num_nodes`` must agree with it when given, and ``model`` replaces every node's model.
    """
    if name_or_path in NAMED_GRAPHS:
        n = 3 if num_nodes is None else num_nodes
        if n < 2:
            raise GraphError(f"the named graph {name_or_path!r} needs --nodes ≥ 2, got {n}")
        return NAMED_GRAPHS[name_or_path](n, model)
    path = Path(name_or_path)
    if not path.exists():
        raise GraphError(f"--graph {name_or_path!r} is neither a named graph ({', '.join(NAMED_GRAPHS)}) "
                         f"nor an existing file")
    spec = GraphSpec.load(path)
    if num_nodes is not None and num_nodes != spec.num_nodes:
        raise GraphError(f"graph file {path} has {spec.num_nodes} nodes but --nodes {num_nodes} was given; "
                         f"drop --nodes or use another graph")
    return spec.with_models(model) if model is not None else spec
