"""Gates (``docs/method.md#gates``): how much of an edge's per-sample loss reaches the total loss, and when.

A gate is a pure function returning per-sample weights w ∈ R^B; the gated loss is (1/B) Σ_b w_b ℓ_b. Its record
in :data:`ktg.registry.GATES` says where it may sit, its colour in figures and whether the search uses it;
adding a gate is one function here and one record there.
"""

from __future__ import annotations

import torch

from ktg.registry import GATES


def through(loss: torch.Tensor, source_logits, labels, iteration: int, total_iterations: int) -> torch.Tensor:
    """Every sample counts fully."""
    return torch.ones_like(loss)


def cutoff(loss: torch.Tensor, source_logits, labels, iteration: int, total_iterations: int) -> torch.Tensor:
    """Nothing counts; the engine does not even compute a cut-off edge."""
    return torch.zeros_like(loss)


def linear(loss: torch.Tensor, source_logits, labels, iteration: int, total_iterations: int) -> torch.Tensor:
    """Weight k/K, growing from 1/K at the first iteration to 1 at the last (k is 1-based)."""
    return torch.full_like(loss, iteration / total_iterations)


def correct(loss: torch.Tensor, source_logits, labels, iteration: int, total_iterations: int) -> torch.Tensor:
    """Only samples the source classifies correctly; without source logits (a label edge) every sample."""
    if source_logits is None:
        return torch.ones_like(loss)
    if labels is None:
        raise ValueError("the 'correct' gate needs labels when the source is a network")
    return (source_logits.argmax(dim=1) == labels).to(loss.dtype)


#: The small step of merit-based distillation: weights move by ±MERIT_STEP around 1.
MERIT_STEP = 0.1


def merit(loss: torch.Tensor, source_logits, labels, iteration: int, total_iterations: int) -> torch.Tensor:
    """Merit-based distillation, distillation side: 1 + δ where the source (teacher) is right, 1 − δ where it
    is wrong (δ = :data:`MERIT_STEP`), so the teacher's meritorious answers are transferred more strongly."""
    right = correct(loss, source_logits, labels, iteration, total_iterations)
    return 1.0 + MERIT_STEP * (2.0 * right - 1.0)


def merit_label(loss: torch.Tensor, source_logits, labels, iteration: int, total_iterations: int) -> torch.Tensor:
    """Merit-based distillation, label side: 1 − δ where the teacher is right, 1 + δ where it is wrong.

    Used on the label edge of a node that has one ``merit`` edge; the engine passes that edge's source
    logits, so the two weights of a sample always sum to 2.
    """
    if source_logits is None:
        raise ValueError("the 'merit_label' gate needs the logits of the node's merit teacher")
    return 2.0 - merit(loss, source_logits, labels, iteration, total_iterations)


def check_gate(name: str) -> None:
    """Raise ValueError naming the valid gates if ``name`` is not one of them."""
    if name not in GATES:
        raise ValueError(f"unknown gate {name!r}; valid gates: {', '.join(GATES)}")


def gate_weights(
    name: str,
    per_sample_loss: torch.Tensor,
    source_logits: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    iteration: int = 1,
    total_iterations: int = 1,
) -> torch.Tensor:
    """The per-sample weights w ∈ R^B of gate ``name`` (see :func:`gate`)."""
    check_gate(name)
    if not 1 <= iteration <= total_iterations:
        raise ValueError(f"iteration must lie in [1, total_iterations={total_iterations}], got {iteration}")
    return GATES[name].load()(per_sample_loss, source_logits, labels, iteration, total_iterations)


def gate(
    name: str,
    per_sample_loss: torch.Tensor,
    source_logits: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    iteration: int = 1,
    total_iterations: int = 1,
) -> torch.Tensor:
    """Gated edge loss: a scalar (1/B) Σ_b w_b ℓ_b (``docs/method.md#gates``).

    Args:
        name: a registered gate (:data:`ktg.registry.GATES`: ``through``, ``cutoff``, ``linear``, ``correct``, …).
        per_sample_loss: ℓ, shape B.
        source_logits: B×C logits of the edge's source (``correct`` keeps samples it classifies right);
            None for a label edge, where ``correct`` equals ``through``.
        labels: B ground-truth class indices.
        iteration: current training iteration k, 1-based.
        total_iterations: K, the iterations of the whole training run.

    Returns:
        0-dim tensor. The denominator is always B, also for ``correct``.
    """
    weights = gate_weights(name, per_sample_loss, source_logits, labels, iteration, total_iterations)
    return (weights * per_sample_loss).mean()
