"""Ways to combine the nodes' predictions that users compare: the ensemble node and its rivals
(``docs/method.md#ensemble-node``).

Each rule maps N×B×C logits (N nodes, B images, C classes) to B×C scores: a distribution over the classes
whose argmax is the rule's prediction, so ``ktg eval`` takes the argmax and ``ktg predict`` also shows the
top classes with their scores. The rules use tensor methods only: this module imports no torch, so the
command line reads :data:`ENSEMBLE_RULES`' names without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ktg.errors import KTGError

if TYPE_CHECKING:
    import torch


def mean_logits(logits: torch.Tensor, power: float) -> torch.Tensor:
    """The ensemble node of the graph: the softmax of the mean logits."""
    from ktg.engine import ensemble_logits  # the one definition of the ensemble node; torch is loaded by now

    return ensemble_logits(logits.float()).softmax(dim=1)


def mean_probabilities(logits: torch.Tensor, power: float) -> torch.Tensor:
    """Soft voting: the mean of the nodes' softmax probabilities."""
    return logits.float().softmax(dim=2).mean(dim=0)


def majority_vote(logits: torch.Tensor, power: float) -> torch.Tensor:
    """Hard voting: the share of the nodes that predict each class; ties go to the tied class with the larger
    mean probability (half a vote spread by the mean probabilities, which never outweighs a whole vote)."""
    n, b, c = logits.shape
    probabilities = logits.float().softmax(dim=2)
    votes = probabilities.new_zeros(b, c).scatter_add_(1, logits.argmax(dim=2).T, probabilities.new_ones(b, n))
    return (votes + 0.5 * probabilities.mean(dim=0)) / (n + 0.5)


def power_mean(logits: torch.Tensor, power: float) -> torch.Tensor:
    """The mean of p^u over nodes, normalised (u = ``power``; u = 1 is soft voting, small u favours agreement)."""
    check_power(power)
    scores = logits.float().softmax(dim=2).pow(power).mean(dim=0)
    return scores / scores.sum(dim=1, keepdim=True)


def check_power(power: float) -> None:
    """Raise :class:`~ktg.errors.KTGError` unless ``power`` can be a power-mean exponent (it must be positive):
    callers check a user's exponents with it before any work, :func:`power_mean` checks it again."""
    if not power > 0:
        raise KTGError(f"the power-mean exponent must be positive, got {power:g}")


#: Rule name → rule; ``power`` is read by ``power_mean`` only.
ENSEMBLE_RULES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "mean_logits": mean_logits,
    "mean_probabilities": mean_probabilities,
    "majority_vote": majority_vote,
    "power_mean": power_mean,
}
