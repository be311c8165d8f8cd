"""The engine: one forward per node, detached sources, cut-off edges never computed, the ensemble node."""

import pytest
import torch

import ktg.engine
from ktg.engine import build_graph, ensemble_logits
from ktg.graph import EdgeSpec, GraphSpec, NodeSpec

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


@pytest.mark.parametrize("design", ["prob_kl", "prob_cos", "att_mse", "att_cos", "prob_kl+att_mse", "prob_cos+att_cos"])
def test_an_edge_trains_its_target_and_never_its_source(design):
    graph = graph_of([EdgeSpec(0, 1, design, "through")], label_gates=["cutoff", "cutoff"])
    images, labels = batch()
    losses = graph.losses(graph(images), labels, 1, 1)
    assert list(losses.terms) == [f"edge 0→1 {design}/through"]
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
