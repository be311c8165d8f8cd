"""The gates (docs/method.md#gates) against hand-computed values, and every registered gate against its record."""

import pytest
import torch

from ktg.gates import gate, gate_weights
from ktg.registry import GATES

LOSS = torch.tensor([1.0, 2.0, 3.0, 6.0])
LABELS = torch.tensor([0, 1, 2, 0])
# argmax per row: 0, 1, 0, 1 → samples 0 and 1 are classified correctly
SOURCE = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 5.0, 0]])


def test_through_is_the_batch_mean():
    assert gate("through", LOSS).item() == pytest.approx(3.0)


def test_cutoff_is_zero():
    assert gate("cutoff", LOSS).item() == 0.0


@pytest.mark.parametrize("k, total, expected", [(1, 4, 0.75), (2, 4, 1.5), (4, 4, 3.0)])
def test_linear_grows_with_the_iteration(k, total, expected):
    assert gate("linear", LOSS, iteration=k, total_iterations=total).item() == pytest.approx(expected)


def test_correct_keeps_samples_the_source_gets_right_and_divides_by_the_batch():
    # (1 + 2) / 4, not (1 + 2) / 2
    assert gate("correct", LOSS, SOURCE, LABELS).item() == pytest.approx(0.75)
    assert gate_weights("correct", LOSS, SOURCE, LABELS).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_correct_on_a_label_edge_equals_through():
    assert gate("correct", LOSS, None, LABELS).item() == gate("through", LOSS).item()


def test_gates_keep_the_gradient_of_the_loss():
    loss = LOSS.clone().requires_grad_()
    gate("linear", loss, iteration=1, total_iterations=2).backward()
    assert torch.allclose(loss.grad, torch.full((4,), 0.5 / 4))


def test_unknown_gate_lists_the_valid_ones():
    with pytest.raises(ValueError, match="through, cutoff, linear, correct"):
        gate("always", LOSS)


def test_iteration_outside_the_run_is_rejected():
    with pytest.raises(ValueError, match="iteration"):
        gate("linear", LOSS, iteration=5, total_iterations=4)


@pytest.mark.parametrize("name", list(GATES))
def test_every_gate_gives_one_finite_weight_per_sample_and_nothing_when_never_computed(name):
    weights = gate_weights(name, LOSS, SOURCE, LABELS, iteration=2, total_iterations=4)
    assert weights.shape == LOSS.shape and torch.isfinite(weights).all() and (weights >= 0).all()
    assert weights.any() == GATES[name].computed
