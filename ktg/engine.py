"""The engine: runs every node once, forms the ensemble node, and turns the graph's edges into named losses.

It knows graphs and models, nothing of datasets, optimisers or search. One training step is
``outputs = graph(images)``, ``terms = graph.losses(outputs, labels, k, K)``, ``sum(terms.values()).backward()``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ktg.gates import gate_weights
from ktg.graph import ENSEMBLE, GraphSpec
from ktg.losses import Knowledge, edge_loss
from ktg.models import ABNOutput, create_model


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
    """

    def __init__(self, spec: GraphSpec, nodes: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(nodes) != spec.num_nodes:
            raise ValueError(f"graph has {spec.num_nodes} nodes but {len(nodes)} modules were given")
        self.spec = spec
        self.nodes = nn.ModuleList(nodes)
        self._edges = spec.active_edges
        self._label_gates = [(t, g) for t, g in enumerate(spec.label_gates) if g != "cutoff"]

    def forward(self, images: torch.Tensor) -> list[ABNOutput]:
        """Run every node once on the same batch (B×3×H×W)."""
        return [node(images) for node in self.nodes]

    def losses(
        self, outputs: Sequence[ABNOutput], labels: torch.Tensor, iteration: int, total_iterations: int
    ) -> StepLosses:
        """Gated losses of all label edges and active network edges (cut-off edges are never computed).

        Sources are detached, so an edge only ever trains its target.
        """
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, torch.Tensor] = {}
        for target, gate_name in self._label_gates:
            out = outputs[target]
            per_sample = F.cross_entropy(out.att_logits.float(), labels, reduction="none") + F.cross_entropy(
                out.logits.float(), labels, reduction="none"
            )
            name = label_edge_name(target, gate_name)
            w = gate_weights(gate_name, per_sample, None, labels, iteration, total_iterations)
            terms[name], weights[name] = (w * per_sample).mean(), w.mean()
        if self._edges:
            sources = self._sources(outputs)
            for edge in self._edges:
                source = sources[edge.source]
                target = outputs[edge.target]
                per_sample = edge_loss(
                    edge.loss, source.logits, target.logits, source.attention, target.attention,
                    self.spec.temperature, self.spec.crop_sizes,
                )
                w = gate_weights(edge.gate, per_sample, source.logits, labels, iteration, total_iterations)
                terms[edge.label], weights[edge.label] = (w * per_sample).mean(), w.mean()
        return StepLosses(terms, weights)

    def _sources(self, outputs: Sequence[ABNOutput]) -> dict:
        sources = {i: Knowledge(out.logits.detach(), out.attention.detach()) for i, out in enumerate(outputs)}
        if any(edge.source == ENSEMBLE for edge in self._edges):
            sources[ENSEMBLE] = Knowledge(
                ensemble_logits(torch.stack([out.logits for out in outputs])).detach(),
                torch.stack([out.attention for out in outputs]).mean(dim=0).detach(),
            )
        return sources


def build_graph(spec: GraphSpec, num_classes: int) -> KnowledgeTransferGraph:
    """Create every node's model from the registry (``spec`` must name a model for every node)."""
    missing = [i for i, node in enumerate(spec.nodes) if node.model is None]
    if missing:
        raise ValueError(f"nodes {missing} have no model; resolve the graph's models before building it")
    nodes = [create_model(node.model, num_classes, **node.options) for node in spec.nodes]
    return KnowledgeTransferGraph(spec, nodes)
