"""Ensemble rules of ktg eval on hand-made logits."""

import math

import pytest
import torch

from ktg.ensemble import ENSEMBLE_RULES, majority_vote, mean_logits, mean_probabilities, power_mean
from ktg.errors import KTGError


def logits_from_probabilities(*nodes):
    return torch.tensor(nodes).log()


# Three nodes, one sample, two classes: the seed's example (0.6, 0.4), (0.6, 0.4), (0.1, 0.9):
# soft voting picks class 1 (mean 0.43 vs 0.57), hard voting class 0 (two votes to one).
SEED_EXAMPLE = logits_from_probabilities([[0.6, 0.4]], [[0.6, 0.4]], [[0.1, 0.9]])


def test_soft_and_hard_voting_disagree_as_in_the_seed_example():
    assert mean_probabilities(SEED_EXAMPLE, 1.0).argmax(dim=1).tolist() == [1]
    assert majority_vote(SEED_EXAMPLE, 1.0).argmax(dim=1).tolist() == [0]


def test_power_mean_with_u_one_is_soft_voting_and_small_u_follows_agreement():
    assert power_mean(SEED_EXAMPLE, 1.0).argmax(dim=1).tolist() == [1]
    # u → 0 compares Σ log p: 2 ln 0.6 + ln 0.1 < 2 ln 0.4 + ln 0.9 → class 1
    assert (2 * math.log(0.6) + math.log(0.1)) < (2 * math.log(0.4) + math.log(0.9))
    assert power_mean(SEED_EXAMPLE, 0.01).argmax(dim=1).tolist() == [1]
    with pytest.raises(KTGError, match="the power-mean exponent must be positive, got 0"):
        power_mean(SEED_EXAMPLE, 0.0)


def test_vote_ties_go_to_the_more_probable_class():
    tie = logits_from_probabilities([[0.9, 0.1]], [[0.4, 0.6]])
    assert majority_vote(tie, 1.0).argmax(dim=1).tolist() == [0]


def test_mean_logits_is_the_ensemble_node():
    z = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]]])
    assert mean_logits(z, 1.0).argmax(dim=1).tolist() == [0]


@pytest.mark.parametrize("rule", ENSEMBLE_RULES.values(), ids=ENSEMBLE_RULES.keys())
def test_every_rule_scores_a_distribution_over_the_classes(rule):
    logits = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    scores = rule(logits, 0.5)
    assert scores.shape == (5, 4) and bool((scores >= 0).all())
    assert torch.allclose(scores.sum(dim=1), torch.ones(5))


def test_majority_vote_scores_are_vote_shares_up_to_the_tie_break():
    logits = logits_from_probabilities([[0.6, 0.4]], [[0.6, 0.4]], [[0.1, 0.9]])
    # two votes of three for class 0; the tie-break adds at most half a vote
    assert majority_vote(logits, 1.0)[0, 0] > 2 / 3.5
    assert majority_vote(logits, 1.0)[0, 1] < 1.5 / 3.5
