"""The engine: runs every node once, forms the ensemble node, and turns the graph's edges into named losses.

It knows graphs and models, nothing of datasets, optimisers or search. One training step is
``outputs = graph(images)``, ``terms = graph.losses(outputs, labels, k, K)``, ``sum(terms.values()).backward()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ktg.errors import KTGError
from ktg.gates import gate_weights
from ktg.graph import ENSEMBLE, EdgeSpec, GraphError, GraphSpec, NodeSpec
from ktg.losses import HINT_DESIGNS, Knowledge, edge_loss
from ktg.models import ABNOutput, create_model, read_pretrained


class StepLosses(NamedTuple):
    """The gated loss of every active edge (scalars, keyed by edge name) and each gate's mean weight."""

    terms: dict[str, torch.Tensor]
    gate_weights: dict[str, torch.Tensor]

    @property
    def total(self) -> torch.Tensor:
        return torch.stack(list(self.terms.values())).sum()


def label_edge_name(target: int, gate_name: str) -> str:
    return f"label→{target} abn_ce/{gate_name}"


def ensemble_logits(node_logits: torch.Tensor) -> torch.Tensor:
    """The ensemble node (eq. 5): the mean of the N network nodes' perception logits, N×B×C → B×C."""
    return node_logits.mean(dim=0)


class KnowledgeTransferGraph(nn.Module):
    """The network nodes of a :class:`GraphSpec` and the losses its edges define.

    Args:
        spec: the graph; every node's ``model`` must be set (see :func:`build_graph`).
        nodes: one module per network node, returning :class:`ABNOutput`.
        adapters: for hint edges whose target's stage output differs in channels from the source's, a learned
            module mapping the target's features to the source's, keyed by :func:`adapter_key`.
    """

    def __init__(self, spec: GraphSpec, nodes: Sequence[nn.Module], adapters: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        if len(nodes) != spec.num_nodes:
            raise ValueError(f"graph has {spec.num_nodes} nodes but {len(nodes)} modules were given")
        self.spec = spec
        self.nodes = nn.ModuleList(nodes)
        self.adapters = nn.ModuleDict(adapters or {})
        self._edges = spec.active_edges
        self._label_gates = [(t, g) for t, g in enumerate(spec.label_gates) if g != "cutoff"]
        self._merit_teacher = {e.target: e.source for e in self._edges if e.gate == "merit"}
        self._frozen = [i for i, node in enumerate(spec.nodes) if node.frozen]
        for i in self._frozen:
            self.nodes[i].requires_grad_(False)
        self._features: dict[tuple[int, str], torch.Tensor] = {}
        for node_index, stage in sorted({(e.source, e.stage) for e in self._edges if e.loss in HINT_DESIGNS}
                                        | {(e.target, e.stage) for e in self._edges if e.loss in HINT_DESIGNS}):
            self._stage_module(node_index, stage).register_forward_hook(self._keep_features(node_index, stage))

    def _stage_module(self, node_index: int, stage: str) -> nn.Module:
        try:
            return self.nodes[node_index].get_submodule(stage)
        except AttributeError:
            names = ", ".join(name for name, _ in self.nodes[node_index].named_children())
            raise GraphError(f"hint stage {stage!r} is not a module of node {node_index}; its stages: {names}") from None

    def _keep_features(self, node_index: int, stage: str):
        def hook(module, inputs, output):
            self._features[(node_index, stage)] = output

        return hook

    def train(self, mode: bool = True) -> "KnowledgeTransferGraph":
        """Switch training mode; frozen teachers always stay in evaluation mode (fixed BatchNorm statistics)."""
        super().train(mode)
        for i in self._frozen:
            self.nodes[i].eval()
        return self

    def forward(self, images: torch.Tensor) -> list[ABNOutput]:
        """Run every node once on the same batch (B×3×H×W); frozen teachers without building a graph."""
        outputs = []
        for i, node in enumerate(self.nodes):
            if i in self._frozen:
                with torch.no_grad():
                    outputs.append(node(images))
            else:
                outputs.append(node(images))
        return outputs

    def losses(
        self,
        outputs: Sequence[ABNOutput],
        labels: torch.Tensor,
        iteration: int,
        total_iterations: int,
        sample_weights: dict[int, torch.Tensor] | None = None,
    ) -> StepLosses:
        """Gated losses of all label edges and active network edges (cut-off edges are never computed).

        Sources are detached, so an edge only ever trains its target. ``sample_weights`` maps a bagging
        node to the B per-sample counts of its bootstrap replicate; every loss into that node is weighted by them.
        """
        sample_weights = sample_weights or {}
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, torch.Tensor] = {}

        def add(name: str, target: int, per_sample: torch.Tensor, gate_name: str, source_logits) -> None:
            if target in sample_weights:
                per_sample = per_sample * sample_weights[target]
            w = gate_weights(gate_name, per_sample, source_logits, labels, iteration, total_iterations)
            terms[name], weights[name] = (w * per_sample).mean(), w.mean()

        sources = self._sources(outputs) if self._edges else {}
        for target, gate_name in self._label_gates:
            out = outputs[target]
            per_sample = F.cross_entropy(out.att_logits.float(), labels, reduction="none") + F.cross_entropy(
                out.logits.float(), labels, reduction="none"
            )
            teacher = sources[self._merit_teacher[target]].logits if gate_name == "merit_label" else None
            add(label_edge_name(target, gate_name), target, per_sample, gate_name, teacher)
        for edge in self._edges:
            source, target = sources[edge.source], outputs[edge.target]
            target_features = None
            if edge.loss in HINT_DESIGNS:
                source = source._replace(features=self._features[(edge.source, edge.stage)].detach())
                target_features = self._adapt(edge, self._features[(edge.target, edge.stage)], source.features)
            per_sample = edge_loss(
                edge.loss, source.logits, target.logits, source.attention, target.attention,
                edge.temperature or self.spec.temperature, self.spec.crop_sizes, source.features, target_features,
            )
            add(edge.label, edge.target, per_sample, edge.gate, source.logits)
        self._features.clear()  # the step's stage outputs are not needed beyond its losses
        return StepLosses(terms, weights)

    def _adapt(self, edge: EdgeSpec, target_features: torch.Tensor, source_features: torch.Tensor) -> torch.Tensor:
        key = adapter_key(edge)
        if key in self.adapters:
            target_features = self.adapters[key](target_features)
        if target_features.shape[-2:] != source_features.shape[-2:]:
            target_features = F.interpolate(target_features, size=source_features.shape[-2:], mode="bilinear",
                                            align_corners=False)
        return target_features

    def _sources(self, outputs: Sequence[ABNOutput]) -> dict:
        sources = {i: Knowledge(out.logits.detach(), out.attention.detach()) for i, out in enumerate(outputs)}
        if any(edge.source == ENSEMBLE for edge in self._edges):
            members = [outputs[i] for i in self.spec.members]
            sources[ENSEMBLE] = Knowledge(
                ensemble_logits(torch.stack([out.logits for out in members])).detach(),
                torch.stack([out.attention for out in members]).mean(dim=0).detach(),
            )
        return sources


def adapter_key(edge: EdgeSpec) -> str:
    """The name of a hint edge's adapter (module names may not contain dots)."""
    return f"{edge.source}_to_{edge.target}_{edge.stage.replace('.', '_')}"


def build_graph(spec: GraphSpec, num_classes: int, image_size: int | None = None) -> KnowledgeTransferGraph:
    """Create every node's model from the registry, load node weights, and size the hint adapters.

    ``spec`` must name a model for every node. ``image_size`` is needed only when the graph has hint edges:
    one probe forward at that size measures the stage outputs the adapters connect.
    """
    missing = [i for i, node in enumerate(spec.nodes) if node.model is None]
    if missing:
        raise ValueError(f"nodes {missing} have no model; resolve the graph's models before building it")
    nodes = [create_model(node.model, num_classes, **node.options) for node in spec.nodes]
    for i, (node, module) in enumerate(zip(spec.nodes, nodes)):
        if node.weights is not None:
            load_node_weights(module, node, i)
    graph = KnowledgeTransferGraph(spec, nodes)
    hint_edges = [e for e in spec.active_edges if e.loss in HINT_DESIGNS]
    if hint_edges:
        if image_size is None:
            raise ValueError("a graph with hint edges needs image_size to size its adapters")
        graph.adapters.update(_hint_adapters(graph, hint_edges, image_size))
    return graph


def _hint_adapters(graph: KnowledgeTransferGraph, edges: list[EdgeSpec], image_size: int) -> dict[str, nn.Module]:
    was_training = graph.training
    graph.eval()  # the probe must not move BatchNorm statistics
    with torch.no_grad():
        graph(torch.zeros(1, 3, image_size, image_size))
    graph.train(was_training)
    adapters = {}
    for edge in edges:
        source_channels = graph._features[(edge.source, edge.stage)].shape[1]
        target_channels = graph._features[(edge.target, edge.stage)].shape[1]
        if source_channels != target_channels:
            adapters[adapter_key(edge)] = nn.Conv2d(target_channels, source_channels, kernel_size=1, bias=False)
    graph._features.clear()
    return adapters


def load_node_weights(module: nn.Module, node: NodeSpec, index: int) -> None:
    """Load a node's ``weights`` (a state-dict file, or node i of a finished ktg run) strictly into ``module``."""
    if "file" in node.weights:
        state = read_pretrained(node.weights["file"], None)
        origin = node.weights["file"]
    else:
        run, source_node = Path(node.weights["run"]), node.weights["node"]
        checkpoint = run / "checkpoint.pt"
        if not checkpoint.exists():
            raise KTGError(f"node {index}: weights from run {run}, but {checkpoint} does not exist")
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
        prefix = f"nodes.{source_node}."
        state = {key[len(prefix):]: value for key, value in saved.items() if key.startswith(prefix)}
        if not state:
            raise KTGError(f"node {index}: run {run} has no node {source_node}")
        origin = f"node {source_node} of run {run}"
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise KTGError(f"node {index}: the weights of {origin} do not fit model {node.model!r}: "
                       f"{str(error).splitlines()[0]}") from None
