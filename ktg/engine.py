"""The engine: runs every node once, forms the ensemble node, and turns the graph's edges into named losses.

It knows graphs and models, nothing of datasets, optimisers or search. One training step is
``outputs = graph(images)``, ``losses = graph.losses(outputs, labels, k, K)``, ``losses.total.backward()``
(``losses.terms``: every edge's gated loss by name).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ktg.errors import KTGError
from ktg.gates import gate_weights
from ktg.graph import ENSEMBLE, EdgeSpec, GraphError, GraphSpec, NodeSpec
from ktg.losses import Knowledge, edge_loss
from ktg.models import create_model
from ktg.models.abn_resnet import ABNOutput
from ktg.models.pretrained import read_pretrained
from ktg.registry import GATES, LOSS_DESIGNS
from ktg.run_folder import RunFolder


class StepLosses(NamedTuple):
    """The gated loss of every active edge (scalars, keyed by edge name) and each gate's mean weight.

    Both are empty for a graph whose edges are all cut off: it has nothing to learn.
    """

    terms: dict[str, torch.Tensor]
    gate_weights: dict[str, torch.Tensor]

    @property
    def total(self) -> torch.Tensor:
        """The sum of the terms, to train on; only for a graph that has at least one term."""
        return torch.stack(list(self.terms.values())).sum()

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The terms and the mean gate weights as two detached vectors in the order of :attr:`terms`
        (empty, on the CPU, when there are no terms)."""
        if not self.terms:
            return torch.zeros(0), torch.zeros(0)
        return (torch.stack(list(self.terms.values())).detach(),
                torch.stack(list(self.gate_weights.values())).detach())


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

    def __init__(self, spec: GraphSpec, nodes: Sequence[nn.Module],
                 adapters: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        if len(nodes) != spec.num_nodes:
            raise ValueError(f"graph has {spec.num_nodes} nodes but {len(nodes)} modules were given")
        self.spec = spec
        self.nodes = nn.ModuleList(nodes)
        self.adapters = nn.ModuleDict(adapters or {})
        self._edges = spec.active_edges
        self._label_groups = _label_groups(spec)
        self._edge_groups = _edge_groups(spec)
        self._term_names = [label_edge_name(t, g) for t, g in enumerate(spec.label_gates) if GATES[g].computed]
        self._term_names += [edge.label for edge in self._edges]
        self._label_teacher = {t: spec.label_teacher(t) for t in range(spec.num_nodes)}
        self._frozen = [i for i, node in enumerate(spec.nodes) if node.frozen]
        for i in self._frozen:
            self.nodes[i].requires_grad_(False)
        self._features: dict[tuple[int, str], torch.Tensor] = {}
        hint_edges = [e for e in self._edges if LOSS_DESIGNS[e.loss].needs_features]
        for node_index, stage in sorted({(e.source, e.stage) for e in hint_edges}
                                        | {(e.target, e.stage) for e in hint_edges}):
            self._stage_module(node_index, stage).register_forward_hook(self._keep_features(node_index, stage))

    def _stage_module(self, node_index: int, stage: str) -> nn.Module:
        try:
            return self.nodes[node_index].get_submodule(stage)
        except AttributeError:
            names = ", ".join(name for name, _ in self.nodes[node_index].named_children())
            raise GraphError(f"hint stage {stage!r} is not a module of node {node_index}; "
                             f"its stages: {names}") from None

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

        Edges that share a loss design and temperature are computed as one batch of E×B samples, and the
        edges of one gate within it are gated together: every design and gate is per-sample, so this gives
        each edge exactly its own loss while the kernels per step stay nearly flat in the number of edges.
        """
        context = _GateContext(labels, iteration, total_iterations, sample_weights or {})
        sources = self._sources(outputs) if self._edges else {}
        for gate_name, targets in self._label_groups:
            att_logits = _join([outputs[t].att_logits for t in targets]).float()
            logits = _join([outputs[t].logits for t in targets]).float()
            repeated = context.repeated_labels(len(targets))
            per_sample = (F.cross_entropy(att_logits, repeated, reduction="none")
                          + F.cross_entropy(logits, repeated, reduction="none"))
            teachers = (_join([sources[self._label_teacher[t]].logits for t in targets])
                        if GATES[gate_name].teacher_gate is not None else None)
            context.add([label_edge_name(t, gate_name) for t in targets], targets, gate_name, per_sample, teachers)
        for design, temperature, edges in self._edge_groups:
            source, target = self._group_knowledge(edges, outputs, sources)
            labels_of_group = context.repeated_labels(len(edges)) if LOSS_DESIGNS[design].needs_labels else None
            per_sample = edge_loss(design, source.logits, target.logits, source.attention, target.attention,
                                   temperature, self.spec.crop_sizes, source.features, target.features,
                                   labels_of_group)
            start = 0
            for gate_name, gated in itertools.groupby(edges, key=lambda edge: edge.gate):
                gated = list(gated)
                if len(gated) == len(edges):  # slicing would cost a kernel in the backward for nothing
                    part, part_logits = per_sample, source.logits
                else:
                    rows = slice(start * len(labels), (start + len(gated)) * len(labels))
                    part, part_logits = per_sample[rows], source.logits[rows]
                context.add([e.label for e in gated], [e.target for e in gated], gate_name, part, part_logits)
                start += len(gated)
        self._features.clear()  # the step's stage outputs are not needed beyond its losses
        return StepLosses({name: context.terms[name] for name in self._term_names},
                          {name: context.weights[name] for name in self._term_names})

    def _group_knowledge(self, edges: list[EdgeSpec], outputs: Sequence[ABNOutput],
                         sources: dict) -> tuple[Knowledge, Knowledge]:
        """The sources' and targets' knowledge of a group of edges, stacked along the batch (edge-major)."""
        design = LOSS_DESIGNS[edges[0].loss]
        if design.needs_features:  # a group of its own: the stage and the adapter belong to this edge
            (edge,) = edges
            source_features = self._features[(edge.source, edge.stage)].detach()
            target_features = self._adapt(edge, self._features[(edge.target, edge.stage)], source_features)
            source, target = sources[edge.source], outputs[edge.target]
            return (Knowledge(source.logits, source.attention, source_features),
                    Knowledge(target.logits, target.attention, target_features))
        with_attention = design.needs_attention
        source = Knowledge(_join([sources[e.source].logits for e in edges]),
                           _join([sources[e.source].attention for e in edges]) if with_attention else None)
        target = Knowledge(_join([outputs[e.target].logits for e in edges]),
                           _join([outputs[e.target].attention for e in edges]) if with_attention else None)
        return source, target

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


class GraphOutputs(NamedTuple):
    """Everything a trained graph says about a batch of B images (N nodes, C classes), in float32.

    Attributes:
        logits: B×C, the ensemble node's logits (mean of the member nodes' ``node_logits``).
        node_logits: N×B×C, every node's perception-branch logits.
        attention: N×B×H×W, every node's attention map in [0, 1] at its own resolution (the trunk's output:
            S/2 for CIFAR-style models, S/16 for ImageNet-style ones, S the input side).
    """

    logits: torch.Tensor
    node_logits: torch.Tensor
    attention: torch.Tensor


def graph_outputs(graph: KnowledgeTransferGraph, inputs: torch.Tensor, *, channels_last: bool = False) -> GraphOutputs:
    """What ``graph`` says about a float B×3×S×S batch of model inputs, as every evaluation in ktg computes it.

    This is the one evaluation path (``docs/method.md#evaluation-precision``): the trainer's evaluation after
    an epoch, ``ktg eval``, ``ktg predict``, ``ktg.load_run(...)(inputs)``, the attention figures and
    ``ktg export`` all come here. The graph is put in evaluation mode (BatchNorm running statistics) and
    computes in float32, whatever precision it trained in and even inside a caller's autocast: a bf16-trained
    run is scored in the papers' precision, and the same weights give the same answers on every device.
    ``channels_last`` gives the nodes channels-last inputs, for a graph whose weights are channels-last (the
    trainer's on CUDA); it changes the memory layout, not the precision. Gradients are the caller's choice
    (evaluation loops run under ``torch.no_grad``).
    """
    graph.eval()
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.autocast(inputs.device.type, enabled=False):
        outputs = graph(inputs.float())
    node_logits = torch.stack([out.logits.float() for out in outputs])
    attention = torch.cat([out.attention.float() for out in outputs], dim=1).transpose(0, 1)
    return GraphOutputs(ensemble_logits(node_logits[list(graph.spec.members)]), node_logits, attention)


def _join(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _label_groups(spec: GraphSpec) -> list[tuple[str, list[int]]]:
    """The targets of the non-cut-off label edges, grouped by gate."""
    groups: dict[str, list[int]] = {}
    for target, gate_name in enumerate(spec.label_gates):
        if GATES[gate_name].computed:
            groups.setdefault(gate_name, []).append(target)
    return list(groups.items())


def _edge_groups(spec: GraphSpec) -> list[tuple[str, float, list[EdgeSpec]]]:
    """The active network edges grouped by (design, temperature), each group ordered by gate; a hint edge
    forms a group of its own."""
    groups: dict[tuple, list[EdgeSpec]] = {}
    for edge in spec.active_edges:
        temperature = edge.temperature or spec.temperature
        hint = LOSS_DESIGNS[edge.loss].needs_features
        key = (edge.loss, temperature) + ((edge.source, edge.target, edge.stage) if hint else ())
        groups.setdefault(key, []).append(edge)
    return [(key[0], key[1], sorted(edges, key=lambda edge: edge.gate)) for key, edges in groups.items()]


@dataclass
class _GateContext:
    """What gating needs in one step, and the named terms and mean gate weights it collects."""

    labels: torch.Tensor
    iteration: int
    total_iterations: int
    sample_weights: dict[int, torch.Tensor]
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    def repeated_labels(self, copies: int) -> torch.Tensor:
        return self.labels if copies == 1 else self.labels.repeat(copies)

    def add(self, names: list[str], targets: list[int], gate_name: str, per_sample: torch.Tensor,
            source_logits: torch.Tensor | None) -> None:
        """Gate the per-sample losses of len(names) edges (edge-major, B each) with one gate; store each
        edge's gated mean and mean weight."""
        if any(t in self.sample_weights for t in targets):
            ones = torch.ones_like(per_sample[: len(self.labels)])
            per_sample = per_sample * _join([self.sample_weights.get(t, ones) for t in targets])
        labels = self.repeated_labels(len(names)) if source_logits is not None else self.labels
        w = gate_weights(gate_name, per_sample, source_logits, labels, self.iteration, self.total_iterations)
        if len(names) == 1:
            self.terms[names[0]], self.weights[names[0]] = (w * per_sample).mean(), w.mean()
            return
        by_edge = (len(names), len(self.labels))
        self.terms.update(zip(names, (w * per_sample).view(by_edge).mean(dim=1).unbind()))
        self.weights.update(zip(names, w.view(by_edge).mean(dim=1).unbind()))


def adapter_key(edge: EdgeSpec) -> str:
    """The name of a hint edge's adapter (module names may not contain dots)."""
    return f"{edge.source}_to_{edge.target}_{edge.stage.replace('.', '_')}"


def build_graph(
    spec: GraphSpec, num_classes: int, image_size: int | None = None, *, initial_weights: bool = True
) -> KnowledgeTransferGraph:
    """Create every node's model from the registry, load node weights, and size the hint adapters.

    ``spec`` must name a model for every node. ``image_size`` is needed only when the graph has hint edges:
    one probe forward at that size measures the stage outputs the adapters connect. ``initial_weights=False``
    leaves out the nodes' pretrained and ``weights`` files: for a graph whose trained weights are loaded next
    (a run's checkpoint), which then runs where those files are not.
    """
    missing = [i for i, node in enumerate(spec.nodes) if node.model is None]
    if missing:
        raise ValueError(f"nodes {missing} have no model; resolve the graph's models before building it")
    nodes = [create_model(node.model, num_classes, **{key: value for key, value in node.options.items()
                                                      if initial_weights or key != "pretrained"})
             for node in spec.nodes]
    for i, (node, module) in enumerate(zip(spec.nodes, nodes)):
        if node.weights is not None and initial_weights:
            load_node_weights(module, node, i)
    graph = KnowledgeTransferGraph(spec, nodes)
    hint_edges = [e for e in spec.active_edges if LOSS_DESIGNS[e.loss].needs_features]
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
        run, source_node = RunFolder(node.weights["run"]), node.weights["node"]
        if not run.holds_run():
            raise KTGError(f"node {index}: weights from run {run.path}, but {run.checkpoint_file} does not exist")
        state = run.node_weights(source_node)
        if not state:
            raise KTGError(f"node {index}: run {run.path} has no node {source_node}")
        origin = f"node {source_node} of run {run.path}"
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise KTGError(f"node {index}: the weights of {origin} do not fit model {node.model!r}: "
                       f"{str(error).splitlines()[0]}") from None
