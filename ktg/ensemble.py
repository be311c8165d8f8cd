"""Ways to combine the nodes' predictions that users compare (seed 000): the ensemble node and its rivals.

Each rule maps N×B×C logits to B predicted classes.
"""

from __future__ import annotations

from typing import Callable

import torch

from ktg.engine import ensemble_logits


def mean_logits(logits: torch.Tensor, power: float) -> torch.Tensor:
    """The ensemble node of the graph (eq. 5): argmax of the mean logits."""
    return ensemble_logits(logits.float()).argmax(dim=1)


def mean_probabilities(logits: torch.Tensor, power: float) -> torch.Tensor:
    """Soft voting: argmax of the mean softmax probabilities."""
    return logits.float().softmax(dim=2).mean(dim=0).argmax(dim=1)


def majority_vote(logits: torch.Tensor, power: float) -> torch.Tensor:
    """Hard voting: the class most nodes predict; ties go to the tied class with the larger mean probability."""
    n, b, c = logits.shape
    votes = torch.zeros(b, c, device=logits.device)
    votes.scatter_add_(1, logits.argmax(dim=2).T, torch.ones(b, n, device=logits.device))
    # Mean probabilities lie in [0, 1], so adding them below one vote only breaks ties.
    return (votes + 0.5 * logits.float().softmax(dim=2).mean(dim=0)).argmax(dim=1)


def power_mean(logits: torch.Tensor, power: float) -> torch.Tensor:
    """argmax of the mean of p^u over nodes (u = ``power``; u = 1 is soft voting, small u favours agreement)."""
    if power <= 0:
        raise ValueError(f"the power-mean exponent must be positive, got {power}")
    return logits.float().softmax(dim=2).pow(power).mean(dim=0).argmax(dim=1)


ENSEMBLE_RULES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "mean_logits": mean_logits,
    "mean_probabilities": mean_probabilities,
    "majority_vote": majority_vote,
    "power_mean": power_mean,
}
