"""Ensemble rules on hand-made logits chosen so that the rules disagree: a wrong rule picks a wrong class."""

import pytest
import torch

from ktg.ensemble import ENSEMBLE_RULES, majority_vote, mean_logits, mean_probabilities, power_mean
from ktg.errors import KTGError


def logits_from_probabilities(*nodes):
    return torch.tensor(nodes, dtype=torch.float64).log()


# Three nodes, three images, two classes; each node's probability of class 0 on each image:
#   image 0: 0.6, 0.6, 0.1    (the seed's example) two votes for class 0, but class 1 is more probable on average
#   image 1: 0.8, 0.8, 0.001  a majority for class 0 that the third node all but rules out
#   image 2: 0.9, 0.2, 0.2    a majority for class 1 against one confident node
P0 = torch.tensor([[0.6, 0.8, 0.9], [0.6, 0.8, 0.2], [0.1, 0.001, 0.2]], dtype=torch.float64)  # node × image
PROBABILITIES = torch.stack([P0, 1 - P0], dim=2)
LOGITS = PROBABILITIES.log()

# What each rule predicts, worked out by hand:
#   mean logits compares the mean log-odds log(p0/p1): image 0: (2·0.405 − 2.197)/3 < 0, image 1: (2·1.386 − 6.906)/3
#     < 0, image 2: (2.197 − 2·1.386)/3 < 0 → class 1 every time;
#   soft voting compares the mean p0 with 1/2: 0.433, 0.534, 0.433 → 1, 0, 1;
#   hard voting counts the votes for class 0: 2, 2, 1 of 3 → 0, 0, 1;
#   the power mean with u = 8 follows the most confident node: image 0: 2·0.6⁸ ≈ 0.03 < 0.9⁸ ≈ 0.43, image 1:
#     2·0.8⁸ ≈ 0.34 < 0.999⁸ ≈ 0.99, image 2: 0.9⁸ ≈ 0.43 > 2·0.8⁸ ≈ 0.34 → 1, 1, 0;
#   the power mean with u → 0 is the geometric mean, as mean logits: 1, 1, 1.
EXPECTED = {"mean_logits": [1, 1, 1], "mean_probabilities": [1, 0, 1], "majority_vote": [0, 0, 1]}


@pytest.mark.parametrize("rule", EXPECTED)
def test_each_rule_predicts_its_own_classes(rule):
    assert ENSEMBLE_RULES[rule](LOGITS, 1.0).argmax(dim=1).tolist() == EXPECTED[rule]


def test_power_mean_follows_its_exponent():
    assert power_mean(LOGITS, 1.0).argmax(dim=1).tolist() == [1, 0, 1]  # soft voting
    assert power_mean(LOGITS, 8.0).argmax(dim=1).tolist() == [1, 1, 0]  # the most confident node
    assert power_mean(LOGITS, 0.01).argmax(dim=1).tolist() == [1, 1, 1]  # the agreement of all, as mean logits
    with pytest.raises(KTGError, match="the power-mean exponent must be positive, got 0"):
        power_mean(LOGITS, 0.0)


def test_scores_are_the_rules_formulas():
    mean_p = PROBABILITIES.mean(dim=0).float()
    assert torch.allclose(mean_probabilities(LOGITS, 1.0), mean_p)
    assert torch.allclose(power_mean(LOGITS, 1.0), mean_p)
    cubes = PROBABILITIES.pow(3).mean(dim=0)
    assert torch.allclose(power_mean(LOGITS, 3.0), (cubes / cubes.sum(dim=1, keepdim=True)).float())
    geometric = PROBABILITIES.prod(dim=0).pow(1 / 3)
    assert torch.allclose(mean_logits(LOGITS, 1.0), (geometric / geometric.sum(dim=1, keepdim=True)).float())
    votes = torch.tensor([[2.0, 1.0], [2.0, 1.0], [1.0, 2.0]])
    assert torch.allclose(majority_vote(LOGITS, 1.0), (votes + 0.5 * mean_p) / 3.5)


def test_mean_logits_averages_logits_not_probabilities():
    z = torch.tensor([[[6.0, 0.0]], [[0.0, 2.0]], [[0.0, 2.0]]])  # mean logits (2, 4/3); mean p0 (1 + 2·0.12)/3 < 1/2
    assert torch.allclose(mean_logits(z, 1.0), torch.tensor([[2.0, 4 / 3]]).softmax(dim=1))
    assert mean_logits(z, 1.0).argmax(dim=1).tolist() == [0]
    assert mean_probabilities(z, 1.0).argmax(dim=1).tolist() == [1]


def test_a_tied_vote_goes_to_the_more_probable_class_whichever_node_casts_it():
    unsure, confident = [[0.45, 0.55]], [[0.9, 0.1]]  # one vote each; class 0 has the larger mean probability
    for nodes in ((unsure, confident), (confident, unsure)):
        assert majority_vote(logits_from_probabilities(*nodes), 1.0).argmax(dim=1).tolist() == [0]


def test_a_whole_vote_outweighs_any_probability():
    # two nodes barely for class 0, one all but certain of class 1: the votes decide, not the probabilities
    logits = logits_from_probabilities([[0.51, 0.49]], [[0.51, 0.49]], [[0.0001, 0.9999]])
    assert majority_vote(logits, 1.0).argmax(dim=1).tolist() == [0]
    assert mean_probabilities(logits, 1.0).argmax(dim=1).tolist() == [1]


@pytest.mark.parametrize("rule", ENSEMBLE_RULES.values(), ids=ENSEMBLE_RULES.keys())
def test_every_rule_scores_a_distribution_over_the_classes(rule):
    logits = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    scores = rule(logits, 0.5)
    assert scores.shape == (5, 4) and bool((scores >= 0).all())
    assert torch.allclose(scores.sum(dim=1), torch.ones(5))
