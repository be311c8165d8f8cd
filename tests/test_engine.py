"""The engine: one forward per node, detached sources, cut-off edges never computed, the ensemble node, edges
computed together as if alone."""

import pytest
import torch

import ktg.engine
from ktg.engine import KnowledgeTransferGraph, build_graph, ensemble_logits, label_edge_name
from ktg.gates import gate
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec
from ktg.losses import edge_loss
from ktg.models import ABNOutput
from ktg.profiling import CountOperators
from ktg.registry import LOSS_DESIGNS, design_names

TINY = NodeSpec("abn_resnet20", {"base_width": 4})


def graph_of(edges, label_gates=None, n=2, **kwargs):
    spec = GraphSpec((TINY,) * n, tuple(label_gates or ["through"] * n), tuple(edges), crop_sizes=(3,), **kwargs)
    torch.manual_seed(0)
    return build_graph(spec, num_classes=5)


def batch():
    torch.manual_seed(1)
    return torch.rand(4, 3, 16, 16), torch.randint(0, 5, (4,))


def grads_of(module):
    return [p.grad for p in module.parameters()]


@pytest.mark.parametrize("design", design_names())
def test_an_edge_trains_its_target_and_never_its_source(design):
    stage = "layer2" if LOSS_DESIGNS[design].needs_features else None
    spec = GraphSpec((TINY,) * 2, ("cutoff", "cutoff"), (EdgeSpec(0, 1, design, "through", stage=stage),),
                     crop_sizes=(3,))
    torch.manual_seed(0)
    graph = build_graph(spec, num_classes=5, image_size=16)
    images, labels = batch()
    losses = graph.losses(graph(images), labels, 1, 1)
    assert list(losses.terms) == [spec.edges[0].label]
    losses.total.backward()
    assert all(g is None for g in grads_of(graph.nodes[0]))
    assert any(g is not None and g.abs().sum() > 0 for g in grads_of(graph.nodes[1]))


def test_cutoff_edges_are_never_computed(monkeypatch):
    calls = []
    real = ktg.engine.edge_loss
    monkeypatch.setattr(ktg.engine, "edge_loss", lambda design, *a, **k: calls.append(design) or real(design, *a, **k))
    graph = graph_of([EdgeSpec(0, 1, "att_mse", "cutoff"), EdgeSpec(1, 0, "prob_kl", "through")])
    images, labels = batch()
    losses = graph.losses(graph(images), labels, 1, 1)
    assert calls == ["prob_kl"]
    assert set(losses.terms) == {"label→0 abn_ce/through", "label→1 abn_ce/through", "edge 1→0 prob_kl/through"}


def test_label_edge_is_the_abn_loss_and_its_gate_applies():
    graph = graph_of([], label_gates=["through", "linear"])
    images, labels = batch()
    outputs = graph(images)
    losses = graph.losses(outputs, labels, 1, 4)
    ce = torch.nn.functional.cross_entropy
    for target, factor in [(0, 1.0), (1, 0.25)]:
        expected = factor * (ce(outputs[target].att_logits, labels) + ce(outputs[target].logits, labels))
        name = f"label→{target} abn_ce/{'through' if target == 0 else 'linear'}"
        assert torch.allclose(losses.terms[name], expected)
        assert losses.gate_weights[name].item() == pytest.approx(factor)


def test_ensemble_node_is_the_mean_of_the_logits_and_can_teach_when_allowed():
    logits = torch.tensor([[[1.0, 3.0]], [[3.0, 5.0]]])
    assert torch.equal(ensemble_logits(logits), torch.tensor([[2.0, 4.0]]))
    graph = graph_of([EdgeSpec("ensemble", 1, "prob_kl+att_mse", "correct")], label_gates=["cutoff", "cutoff"],
                     ensemble_as_source=True)
    images, labels = batch()
    losses = graph.losses(graph(images), labels, 1, 1)
    assert list(losses.terms) == ["edge ensemble→1 prob_kl+att_mse/correct"]
    losses.total.backward()
    # The ensemble is a detached source: the node it averages in (node 0) gets no gradient from it.
    assert all(g is None for g in grads_of(graph.nodes[0]))


def test_every_node_runs_once_per_step():
    graph = graph_of([EdgeSpec(0, 1, "prob_kl", "through"), EdgeSpec(1, 0, "att_cos", "through")])
    counts = [0, 0]
    for i, node in enumerate(graph.nodes):
        node.register_forward_hook(lambda *args, i=i: counts.__setitem__(i, counts[i] + 1))
    images, labels = batch()
    graph.losses(graph(images), labels, 1, 1).total.backward()
    assert counts == [1, 1]


def leaf_outputs(num_nodes: int, batch_size: int = 4, classes: int = 5):
    """Node outputs as leaves, so a backward stops at the losses instead of running through the nodes."""
    torch.manual_seed(2)
    return [ABNOutput(torch.randn(batch_size, classes, requires_grad=True),
                      torch.randn(batch_size, classes, requires_grad=True),
                      torch.rand(batch_size, 1, 8, 8, requires_grad=True)) for _ in range(num_nodes)]


def test_edges_computed_together_give_each_edge_its_own_gated_loss():
    """Edges of one design and temperature share a batch; each must still get exactly the loss it would alone."""
    edges = [EdgeSpec(1, 0, "prob_kl+att_mse", "through"), EdgeSpec(2, 0, "prob_kl+att_mse", "merit"),
             EdgeSpec(0, 1, "prob_kl+att_mse", "linear"), EdgeSpec(2, 1, "prob_kl+att_mse", "correct"),
             EdgeSpec(0, 2, "prob_kl+att_mse", "linear"), EdgeSpec("ensemble", 2, "prob_kl+att_mse", "through"),
             EdgeSpec(1, 2, "prob_kl+att_mse", "linear", temperature=4.0),
             EdgeSpec("ensemble", 0, "att_cos", "correct")]
    nodes = (TINY, NodeSpec("abn_resnet20", {"base_width": 4}, bagging=True), TINY)
    spec = GraphSpec(nodes, ("merit_label", "linear", "correct"), tuple(edges), crop_sizes=(3, 5),
                     ensemble_as_source=True)
    graph = KnowledgeTransferGraph(spec, [torch.nn.Identity()] * 3)
    outputs = leaf_outputs(3)
    labels = torch.tensor([0, 1, 2, 3])
    outputs[2].logits.data[:2, labels[:2]] += 10.0  # node 2 right on half of the batch, so 'correct' and 'merit' bite
    counts = torch.tensor([0.0, 2.0, 1.0, 3.0])
    losses = graph.losses(outputs, labels, 3, 10, sample_weights={1: counts})

    ensemble = (torch.stack([o.logits for o in outputs]).mean(0), torch.stack([o.attention for o in outputs]).mean(0))
    knowledge = {i: (o.logits, o.attention) for i, o in enumerate(outputs)} | {"ensemble": ensemble}
    ce = torch.nn.functional.cross_entropy
    expected = {}
    for t, gate_name in enumerate(spec.label_gates):
        per_sample = (ce(outputs[t].att_logits, labels, reduction="none")
                      + ce(outputs[t].logits, labels, reduction="none"))
        teacher = outputs[2].logits if gate_name == "merit_label" else None
        per_sample = per_sample * (counts if t == 1 else 1)
        expected[label_edge_name(t, gate_name)] = gate(gate_name, per_sample, teacher, labels, 3, 10)
    for edge in edges:
        (s_logits, s_att), (t_logits, t_att) = knowledge[edge.source], knowledge[edge.target]
        per_sample = edge_loss(edge.loss, s_logits, t_logits, s_att, t_att, edge.temperature or 1.0, (3, 5))
        per_sample = per_sample * (counts if edge.target == 1 else 1)
        expected[edge.label] = gate(edge.gate, per_sample, s_logits, labels, 3, 10)

    assert list(losses.terms) == list(expected)
    for name, value in expected.items():
        torch.testing.assert_close(losses.terms[name], value, msg=name)
    assert losses.gate_weights["edge 1→2 prob_kl+att_mse/linear"].item() == pytest.approx(0.3)
    assert losses.gate_weights["edge 2→0 prob_kl+att_mse/merit"].item() == pytest.approx(1.0)  # half right, half wrong


def loss_kernels(num_nodes: int) -> int:
    """Operators of the losses and their backward for every network edge prob_kl+att_mse (the heavy graph)."""
    edges = tuple(EdgeSpec(s, t, "prob_kl+att_mse", "through")
                  for t in range(num_nodes) for s in range(num_nodes) if s != t)
    spec = GraphSpec((TINY,) * num_nodes, ("through",) * num_nodes, edges, crop_sizes=(3, 5, 7))
    graph = KnowledgeTransferGraph(spec, [torch.nn.Identity()] * num_nodes)
    outputs, labels = leaf_outputs(num_nodes), torch.randint(0, 5, (4,))
    graph.losses(outputs, labels, 1, 2).total.backward()  # the first call also builds the crop layout
    with CountOperators() as kernels:
        graph.losses(outputs, labels, 1, 2).total.backward()
    return kernels.count


def test_the_kernels_of_the_losses_barely_grow_with_the_edges():
    # On a GPU at small batches a step costs about one launch per kernel. One edge computed alone took about
    # 160 kernels; computed together, an extra edge costs only the adds in which the backward sums the
    # gradient of a node that is the target of several edges.
    assert loss_kernels(5) - loss_kernels(3) <= 3 * (20 - 6)
