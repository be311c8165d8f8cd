"""Methods of the source documents beyond the two papers, expressed as graphs: each one's defining property."""

import pytest
import torch

from ktg.engine import build_graph
from ktg.gates import MERIT_STEP, gate_weights
from ktg.graph import EdgeSpec, GraphError, GraphSpec, NodeSpec
from ktg.models import create_model

TINY = {"base_width": 4}


def batch(n=8):
    torch.manual_seed(1)
    return torch.rand(n, 3, 16, 16), torch.randint(0, 5, (n,))


def sgd_steps(graph, steps=3, **loss_kwargs):
    optimizer = torch.optim.SGD([p for p in graph.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    graph.train()
    for _ in range(steps):
        images, labels = batch()
        losses = graph.losses(graph(images), labels, 1, 1, **loss_kwargs)
        optimizer.zero_grad()
        losses.total.backward()
        optimizer.step()
    return losses


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(7)
    teacher = create_model("abn_resnet32", 5, **TINY)
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    return path, teacher.state_dict()


def test_a_frozen_heterogeneous_teacher_never_changes(teacher_file):
    path, original = teacher_file
    spec = GraphSpec(
        (NodeSpec("abn_resnet32", TINY, weights={"file": str(path)}, frozen=True), NodeSpec("abn_resnet20", TINY)),
        ("cutoff", "through"), (EdgeSpec(0, 1, "prob_kl+att_mse", "through", temperature=4.0),), crop_sizes=(3,))
    graph = build_graph(spec, 5)
    losses = sgd_steps(graph)
    assert set(losses.terms) == {"label→1 abn_ce/through", "edge 0→1 prob_kl+att_mse/through"}
    for key, value in graph.nodes[0].state_dict().items():
        assert torch.equal(value, original[key]), key  # weights and BatchNorm statistics alike
    assert not graph.nodes[0].training and graph.nodes[1].training


def test_frozen_nodes_cannot_learn_and_need_weights(teacher_file):
    path, _ = teacher_file
    frozen = NodeSpec("abn_resnet32", TINY, weights={"file": str(path)}, frozen=True)
    with pytest.raises(GraphError, match="frozen and cannot learn"):
        GraphSpec((frozen, NodeSpec()), ("cutoff", "through"), (EdgeSpec(1, 0, "prob_kl", "through"),))
    with pytest.raises(GraphError, match="label gate must be 'cutoff'"):
        GraphSpec((frozen, NodeSpec()), ("through", "through"))
    with pytest.raises(GraphError, match="a frozen node needs weights"):
        GraphSpec((NodeSpec(frozen=True), NodeSpec()), ("cutoff", "through"))


def test_weights_that_do_not_fit_name_the_node(teacher_file):
    path, _ = teacher_file
    spec = GraphSpec((NodeSpec("abn_resnet20", TINY, weights={"file": str(path)}),), ("through",))
    with pytest.raises(Exception, match="node 0: the weights of .* do not fit model 'abn_resnet20'"):
        build_graph(spec, 5)


def test_edge_temperature_overrides_the_graph_temperature():
    spec = GraphSpec((NodeSpec("abn_resnet20", TINY),) * 2, ("cutoff", "cutoff"),
                     (EdgeSpec(0, 1, "prob_kl", "through", temperature=3.0),), temperature=1.0)
    torch.manual_seed(0)
    graph = build_graph(spec, 5)
    images, labels = batch()
    outputs = graph(images)
    from ktg.losses import edge_loss
    expected = edge_loss("prob_kl", outputs[0].logits.detach(), outputs[1].logits, None, None, 3.0).mean()
    assert torch.allclose(graph.losses(outputs, labels, 1, 1).terms["edge 0→1 prob_kl/through"], expected)


def test_merit_gates_weight_distillation_up_where_the_teacher_is_right_and_labels_where_it_is_wrong():
    loss = torch.ones(4)
    teacher = torch.tensor([[5.0, 0], [0, 5.0], [5.0, 0], [0, 5.0]])
    labels = torch.tensor([0, 1, 1, 0])  # teacher right, right, wrong, wrong
    distill = gate_weights("merit", loss, teacher, labels)
    label_side = gate_weights("merit_label", loss, teacher, labels)
    d = MERIT_STEP
    assert torch.allclose(distill, torch.tensor([1 + d, 1 + d, 1 - d, 1 - d]))
    assert torch.allclose(label_side, torch.tensor([1 - d, 1 - d, 1 + d, 1 + d]))

    spec = GraphSpec((NodeSpec("abn_resnet20", TINY),) * 2, ("through", "merit_label"),
                     (EdgeSpec(0, 1, "prob_kl", "merit"),))
    graph = build_graph(spec, 5)
    images, labels = batch()
    outputs = graph(images)
    losses = graph.losses(outputs, labels, 1, 1)
    right = (outputs[0].logits.argmax(1) == labels).float()
    expected = (1 - d * (2 * right - 1)).mean().item()
    assert losses.gate_weights["label→1 abn_ce/merit_label"].item() == pytest.approx(expected)
    with pytest.raises(GraphError, match="'merit_label' needs exactly one 'merit' edge"):
        GraphSpec((NodeSpec(),) * 2, ("through", "merit_label"))
    with pytest.raises(GraphError, match="'merit' is not allowed"):
        GraphSpec((NodeSpec(),) * 2, ("merit", "through"))


def test_a_hint_adapter_gets_gradient_and_only_the_target_learns():
    spec = GraphSpec((NodeSpec("abn_resnet20", {"base_width": 8}), NodeSpec("abn_resnet20", TINY)),
                     ("cutoff", "cutoff"), (EdgeSpec(0, 1, "hint_mse", "through", stage="layer2"),))
    graph = build_graph(spec, 5, image_size=16)
    assert list(graph.adapters) == ["0_to_1_layer2"]
    assert graph.adapters["0_to_1_layer2"].weight.shape == (16, 8, 1, 1)  # target 8 channels → source 16
    images, labels = batch()
    graph.losses(graph(images), labels, 1, 1).total.backward()
    assert all(p.grad is None for p in graph.nodes[0].parameters())
    assert graph.adapters["0_to_1_layer2"].weight.grad.abs().sum() > 0
    assert graph.nodes[1].layer1[0].conv1.weight.grad.abs().sum() > 0
    assert graph.nodes[1].layer3[0].conv1.weight.grad is None  # after the hinted stage: no gradient from a hint
    with pytest.raises(GraphError, match="hint designs .* need the name of a model stage"):
        GraphSpec((NodeSpec(),) * 2, ("through",) * 2, (EdgeSpec(0, 1, "hint_mse", "through"),))
    with pytest.raises(GraphError, match="hint stage 'layer9' is not a module of node 0"):
        build_graph(GraphSpec((NodeSpec("abn_resnet20", TINY),) * 2, ("through",) * 2,
                              (EdgeSpec(0, 1, "hint_cos", "through", stage="layer9"),)), 5, image_size=16)


def test_bagging_weights_scale_each_sample_of_the_node():
    spec = GraphSpec((NodeSpec("abn_resnet20", TINY, bagging=True),), ("through",))
    graph = build_graph(spec, 5)
    images, labels = batch(4)
    outputs = graph(images)
    plain = graph.losses(outputs, labels, 1, 1).terms["label→0 abn_ce/through"]
    counts = torch.tensor([0.0, 0.0, 0.0, 0.0])
    assert graph.losses(outputs, labels, 1, 1, sample_weights={0: counts}).terms["label→0 abn_ce/through"] == 0
    doubled = graph.losses(outputs, labels, 1, 1, sample_weights={0: torch.full((4,), 2.0)})
    assert torch.allclose(doubled.terms["label→0 abn_ce/through"], 2 * plain)


def test_the_ensemble_of_chosen_members_teaches_a_student(teacher_file):
    path, _ = teacher_file
    teacher = NodeSpec("abn_resnet32", TINY, weights={"file": str(path)}, frozen=True)
    spec = GraphSpec((teacher, teacher, NodeSpec("abn_resnet20", TINY)), ("cutoff", "cutoff", "through"),
                     (EdgeSpec("ensemble", 2, "prob_kl", "through"),), ensemble_as_source=True, ensemble_members=(0, 1))
    assert GraphSpec.from_dict(spec.to_dict()) == spec
    graph = build_graph(spec, 5)
    images, labels = batch()
    outputs = graph(images)
    losses = graph.losses(outputs, labels, 1, 1)
    from ktg.losses import edge_loss
    teachers_mean = (outputs[0].logits + outputs[1].logits) / 2
    expected = edge_loss("prob_kl", teachers_mean, outputs[2].logits, None, None).mean()
    assert torch.allclose(losses.terms["edge ensemble→2 prob_kl/through"], expected)
