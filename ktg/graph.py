"""The graph as data: which network nodes exist, and which edges carry what knowledge under which gate.

A :class:`GraphSpec` is small, validated and saved as JSON (see README, "Graph files"). The engine
interprets it; the search writes it; nothing else is needed to retrain a found graph on another dataset.
Network nodes are numbered 0..N-1; the label node is ``"label"`` and the ensemble node ``"ensemble"``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

from ktg.errors import KTGError
from ktg.io import read_json, write_json
from ktg.models import check_node_options, list_models
from ktg.registry import DEFAULT_CROP_SIZES, DEFAULT_TEMPERATURE, GATES, LOSS_DESIGNS, gate_names

FORMAT = "ktg.graph"
FORMAT_VERSION = 1
ENSEMBLE = "ensemble"
LABEL = "label"

NodeRef = Union[int, str]
NODE_FIELDS = {"model", "options", "weights", "frozen", "bagging"}
EDGE_FIELDS = {"source", "target", "loss", "gate", "temperature", "stage"}


class GraphError(KTGError):
    """A graph description that does not validate; the message names the field and the allowed values."""


@dataclass(frozen=True)
class NodeSpec:
    """A network node.

    Attributes:
        model: a registered model name (None: the trainer picks one for the data); nodes of one graph may
            use different models.
        options: keyword options of :func:`ktg.models.create_model` (``attention_residual``, ``pretrained``, …).
        weights: initial weights: ``{"file": PATH}`` (a state dict) or ``{"run": DIR, "node": i}`` (node i of a
            finished ktg run).
        frozen: a fixed teacher: never updated, BatchNorm statistics fixed, never the target of an edge.
        bagging: train this node on its own bootstrap replicate of the training set (per-sample Poisson(1)
            weights, seeded and saved with the run).
    """

    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] | None = None
    frozen: bool = False
    bagging: bool = False


@dataclass(frozen=True)
class EdgeSpec:
    """A network edge: ``source`` teaches ``target`` with loss ``loss`` weighted by gate ``gate``.

    ``source`` is a node index or ``"ensemble"``; ``target`` is a node index. ``temperature`` overrides the
    graph's for this edge; ``stage`` names the module whose output a hint design compares (e.g. ``"layer2"``).
    """

    source: NodeRef
    target: int
    loss: str
    gate: str
    temperature: float | None = None
    stage: str | None = None

    @property
    def label(self) -> str:
        """A short name for logs: ``edge 1→0 prob_kl/through`` (``hint_mse@layer2`` for hint edges)."""
        loss = f"{self.loss}@{self.stage}" if self.stage else self.loss
        return f"edge {self.source}→{self.target} {loss}/{self.gate}"


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
        ensemble_members: the nodes the ensemble node averages (None: all), e.g. the teachers when their
            ensemble is distilled into a student.
    """

    nodes: tuple[NodeSpec, ...]
    label_gates: tuple[str, ...]
    edges: tuple[EdgeSpec, ...] = ()
    temperature: float = DEFAULT_TEMPERATURE
    crop_sizes: tuple[int, ...] = DEFAULT_CROP_SIZES
    ensemble_as_source: bool = False
    name: str | None = None
    ensemble_members: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        self._validate()

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def active_edges(self) -> tuple[EdgeSpec, ...]:
        """The edges whose gate is computed (not ``cutoff``): the only ones the engine computes."""
        return tuple(edge for edge in self.edges if GATES[edge.gate].computed)

    @property
    def needs_attention(self) -> bool:
        return any(LOSS_DESIGNS[edge.loss].needs_attention for edge in self.active_edges)

    def label_teacher(self, target: int) -> NodeRef | None:
        """The node whose answers the label gate of ``target`` weighs by (``merit_label``: the source of the
        node's one ``merit`` edge), or None for a label gate without a teacher."""
        teacher_gate = GATES[self.label_gates[target]].teacher_gate
        if teacher_gate is None:
            return None
        return next(edge.source for edge in self.edges if edge.target == target and edge.gate == teacher_gate)

    @property
    def members(self) -> tuple[int, ...]:
        """The nodes the ensemble node averages."""
        return self.ensemble_members if self.ensemble_members is not None else tuple(range(self.num_nodes))

    def with_given(self, model: str | None = None, options: dict[str, Any] | None = None) -> "GraphSpec":
        """The graph with a ``model`` and model ``options`` given for every node (the command line's ``--model``,
        ``--width``, ``--pretrained``, ``--no-attention-residual``).

        This is the one rule between what is given for every node and what a node of the graph sets itself
        (README, "Graph files"): a node that leaves a choice open takes the given value; a node that sets the
        same value keeps it; a node that sets another value is a :class:`GraphError` naming the node, both values
        and the option, since either could be the one meant and neither may silently win. A dataset's
        suggestions are no part of this: :meth:`resolved` adds them only where neither says anything.
        """
        given = {**({"model": model} if model is not None else {}), **(options or {})}
        for i, node in enumerate(self.nodes):
            own = {**({"model": node.model} if node.model is not None else {}), **node.options}
            for key, value in given.items():
                if key in own and own[key] != value:
                    flag = GIVEN_FLAGS.get(key, key)
                    raise GraphError(f"nodes[{i}] sets {key} {json.dumps(own[key])} but {flag} gives "
                                     f"{json.dumps(value)}: an option given for every node may not contradict a node; "
                                     f"drop {flag} or change the node")
        nodes = tuple(replace(node, model=node.model or model, options={**(options or {}), **node.options})
                      for node in self.nodes)
        return replace(self, nodes=nodes)

    def resolved(self, image_size: int, node_options: dict[str, Any] | None = None) -> "GraphSpec":
        """The graph as it will be trained: every node's model filled in (:func:`default_model` for
        ``image_size`` where unset) and the suggested ``node_options`` (a dataset's, see
        :class:`ktg.data.DatasetDefaults`) added where a node does not set them itself, so a run's graph file
        says exactly what was trained. Options the user gives for every node go through :meth:`with_given`
        first, which refuses a node that disagrees."""
        nodes = tuple(replace(node, model=node.model or default_model(image_size),
                              options={**(node_options or {}), **node.options})
                      for node in self.nodes)
        return replace(self, nodes=nodes)

    @property
    def is_resolved(self) -> bool:
        """Whether every node names its model (see :meth:`resolved`)."""
        return all(node.model is not None for node in self.nodes)

    def trains_as(self, other: "GraphSpec") -> bool:
        """Whether ``other`` trains exactly as this graph does: the same in everything but its free label."""
        return replace(self, name=None).to_dict() == replace(other, name=None).to_dict()

    # -- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready description, with format and version fields."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "nodes": [_node_dict(node) for node in self.nodes],
            "label_gates": list(self.label_gates),
            "edges": [_edge_dict(edge) for edge in self.edges],
            "temperature": self.temperature,
            "crop_sizes": list(self.crop_sizes),
            "ensemble": {"as_source": self.ensemble_as_source,
                         **({"members": list(self.ensemble_members)} if self.ensemble_members is not None else {})},
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
        return cls.from_dict(read_json(path, "graph file", GraphError), where=f"graph file {path}")

    # -- validation ----------------------------------------------------------------------------------

    def _validate(self) -> None:
        n = len(self.nodes)
        if n < 1:
            raise GraphError("nodes: a graph needs at least one network node")
        if len(self.label_gates) != n:
            raise GraphError(f"label_gates: expected one gate per node ({n}), got {len(self.label_gates)}")
        for i, gate_name in enumerate(self.label_gates):
            _check_choice(f"label_gates[{i}]", gate_name, gate_names(on="label"))
        for i, node in enumerate(self.nodes):
            _check_node(f"nodes[{i}]", node, self.label_gates[i])
        if not _positive(self.temperature):
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
            _check_choice(f"{field_name}.gate", edge.gate, gate_names(on="network"))
            if self.nodes[edge.target].frozen and GATES[edge.gate].computed:
                raise GraphError(f"{field_name}.target: node {edge.target} is frozen and cannot learn")
            if edge.temperature is not None and not _positive(edge.temperature):
                raise GraphError(f"{field_name}.temperature: must be a positive number, got {edge.temperature!r}")
            hint = LOSS_DESIGNS[edge.loss].needs_features
            if hint and edge.source == ENSEMBLE:
                raise GraphError(f"{field_name}.source: hint edges need a network node as source, not the ensemble")
            if hint != (edge.stage is not None):
                hints = ", ".join(name for name, design in LOSS_DESIGNS.items() if design.needs_features)
                raise GraphError(f"{field_name}.stage: hint designs ({hints}) need the name of a "
                                 f"model stage such as \"layer2\", other designs take none; got {edge.stage!r}")
        for target, gate_name in enumerate(self.label_gates):
            teacher_gate = GATES[gate_name].teacher_gate
            teachers = [e for e in self.edges if e.target == target and e.gate == teacher_gate]
            if teacher_gate is not None and len(teachers) != 1:
                raise GraphError(f"label_gates[{target}]: {gate_name!r} needs exactly one {teacher_gate!r} edge into "
                                 f"node {target} (its teacher), found {len(teachers)}")
        if self.ensemble_members is not None:
            members = list(self.ensemble_members)
            if not members or len(set(members)) != len(members) or any(
                    isinstance(m, bool) or m not in range(n) for m in members):
                raise GraphError(f"ensemble.members: expected distinct node indices in 0..{n - 1}, got {members}")


def _positive(value: Any) -> bool:
    """Whether ``value`` is a finite number above 0 (JSON's NaN and Infinity are neither)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_node(field_name: str, node: NodeSpec, label_gate: str) -> None:
    if node.model is None or node.model in list_models():  # an unknown model is reported by name where it is built
        try:
            check_node_options(node.model, node.options, f"{field_name}.options")
        except KTGError as error:
            raise GraphError(str(error)) from None
    weights = node.weights
    if weights is not None:
        valid_file = set(weights) == {"file"} and isinstance(weights["file"], str)
        valid_run = (set(weights) == {"run", "node"} and isinstance(weights["run"], str)
                     and isinstance(weights["node"], int) and not isinstance(weights["node"], bool))
        if not (valid_file or valid_run):
            raise GraphError(f"{field_name}.weights: expected {{\"file\": PATH}} or {{\"run\": DIR, \"node\": i}}, "
                             f"got {weights!r}")
    if node.frozen:
        if weights is None:
            raise GraphError(f"{field_name}: a frozen node needs weights "
                             f"({{\"file\": …}} or {{\"run\": …, \"node\": …}})")
        if GATES[label_gate].computed:
            never_computed = " or ".join(repr(name) for name in gate_names(on="label") if not GATES[name].computed)
            raise GraphError(f"{field_name}: a frozen node cannot learn; its label gate must be {never_computed}")
        if node.bagging:
            raise GraphError(f"{field_name}: a frozen node is not trained, so it cannot bag")


def _node_dict(node: NodeSpec) -> dict[str, Any]:
    data: dict[str, Any] = {"model": node.model, "options": dict(node.options)}
    if node.weights is not None:
        data["weights"] = dict(node.weights)
    if node.frozen:
        data["frozen"] = True
    if node.bagging:
        data["bagging"] = True
    return data


def _edge_dict(edge: EdgeSpec) -> dict[str, Any]:
    data: dict[str, Any] = {"source": edge.source, "target": edge.target, "loss": edge.loss, "gate": edge.gate}
    if edge.temperature is not None:
        data["temperature"] = edge.temperature
    if edge.stage is not None:
        data["stage"] = edge.stage
    return data


def _check_choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> None:
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
        extra = sorted(set(node) - NODE_FIELDS)
        if extra:
            raise GraphError(f"nodes[{i}]: unknown field(s) {', '.join(extra)}; "
                             f"allowed: {', '.join(sorted(NODE_FIELDS))}")
        weights = node.get("weights")
        if weights is not None and not isinstance(weights, dict):
            raise GraphError(f"nodes[{i}].weights: expected an object, got {weights!r}")
        nodes.append(NodeSpec(model, options, weights, _flag(node, "frozen", f"nodes[{i}]."),
                              _flag(node, "bagging", f"nodes[{i}].")))

    label_gates = require(data, "label_gates", list, "")
    edges = []
    for i, edge in enumerate(data.get("edges", [])):
        if not isinstance(edge, dict):
            raise GraphError(f"edges[{i}]: expected an object with source, target, loss, gate")
        extra = sorted(set(edge) - EDGE_FIELDS)
        if extra:
            raise GraphError(f"edges[{i}]: unknown field(s) {', '.join(extra)}; "
                             f"allowed: {', '.join(sorted(EDGE_FIELDS))}")
        temperature = edge.get("temperature")
        if temperature is not None and (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)):
            raise GraphError(f"edges[{i}].temperature: expected a positive number, got {temperature!r}")
        stage = edge.get("stage")
        if stage is not None and not isinstance(stage, str):
            raise GraphError(f"edges[{i}].stage: expected a stage name such as \"layer2\", got {stage!r}")
        edges.append(EdgeSpec(
            source=require(edge, "source", (int, str), f"edges[{i}]."),
            target=require(edge, "target", int, f"edges[{i}]."),
            loss=require(edge, "loss", str, f"edges[{i}]."),
            gate=require(edge, "gate", str, f"edges[{i}]."),
            temperature=None if temperature is None else float(temperature),
            stage=stage,
        ))
    ensemble = data.get("ensemble", {})
    if not isinstance(ensemble, dict) or set(ensemble) - {"as_source", "members"}:
        raise GraphError(f"ensemble: expected {{\"as_source\": true|false, \"members\": [i, …]}}, got {ensemble!r}")
    as_source = _flag(ensemble, "as_source", "ensemble.")
    members = ensemble.get("members")
    if members is not None and not isinstance(members, list):
        raise GraphError(f"ensemble.members: expected a list of node indices, got {members!r}")
    temperature = data.get("temperature", DEFAULT_TEMPERATURE)
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise GraphError(f"temperature: expected a positive number, got {temperature!r}")
    crop_sizes = data.get("crop_sizes", list(DEFAULT_CROP_SIZES))
    if not isinstance(crop_sizes, list):
        raise GraphError(f"crop_sizes: expected a list of positive integers, got {crop_sizes!r}")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise GraphError(f"name: expected a string or null, got {name!r}")

    return GraphSpec(tuple(nodes), tuple(label_gates), tuple(edges), float(temperature), tuple(crop_sizes),
                     as_source, name, None if members is None else tuple(members))


def _flag(mapping: dict, key: str, path: str) -> bool:
    value = mapping.get(key, False)
    if not isinstance(value, bool):
        raise GraphError(f"{path}{key}: expected true or false, got {value!r}")
    return value


# -- named graphs -------------------------------------------------------------------------------------

def default_model(image_size: int) -> str:
    """CIFAR-style ABN for small images, ImageNet-style ABN-ResNet-18 for large ones."""
    return "abn_resnet20" if image_size <= 64 else "abn_resnet18"


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
#: Network nodes of a named graph, and of a searched one, when the caller gives no number (the papers' three).
DEFAULT_NODES = 3


#: How the command line gives each choice of a node for every node, named in :meth:`GraphSpec.with_given`'s errors.
GIVEN_FLAGS = {"model": "--model", "base_width": "--width", "pretrained": "--pretrained",
               "attention_residual": "--no-attention-residual"}


def resolve_graph(name_or_path: str, num_nodes: int | None = None, model: str | None = None,
                  options: dict[str, Any] | None = None) -> GraphSpec:
    """A named graph (built for ``num_nodes`` nodes) or a graph file, with ``model`` and model ``options`` given
    for every node (:meth:`GraphSpec.with_given`: a node of the file that sets another value is an error).

    With a file, ``num_nodes`` must agree with it when given.
    """
    if name_or_path in NAMED_GRAPHS:
        n = DEFAULT_NODES if num_nodes is None else num_nodes
        fewest = 1 if name_or_path == "independent" else 2  # one independent node is a plain ABN (a teacher)
        if n < fewest:
            raise GraphError(f"the named graph {name_or_path!r} needs --nodes ≥ {fewest}, got {n}")
        return NAMED_GRAPHS[name_or_path](n).with_given(model, options)
    path = Path(name_or_path)
    if not path.exists():
        raise GraphError(f"--graph {name_or_path!r} is neither a named graph ({', '.join(NAMED_GRAPHS)}) "
                         f"nor an existing file")
    spec = GraphSpec.load(path)
    if num_nodes is not None and num_nodes != spec.num_nodes:
        raise GraphError(f"graph file {path} has {spec.num_nodes} nodes but --nodes {num_nodes} was given; "
                         f"drop --nodes or use another graph")
    try:
        return spec.with_given(model, options)
    except GraphError as error:
        raise GraphError(f"graph file {path}: {error}") from None
