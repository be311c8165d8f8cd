"""The loss designs (docs/method.md#loss-designs) against values worked out by hand, and every registered design
against what its record says it reads."""

import math

import pytest
import torch

from ktg.errors import KTGError
from ktg.losses import attention_crops, edge_loss
from ktg.registry import LOSS_DESIGNS, design_names

LN3 = math.log(3.0)


def probs(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_prob_kl_matches_hand_value():
    # p_s = (1/2, 1/2), p_t = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    loss = edge_loss("prob_kl", probs([0.0, 0.0]), probs([LN3, 0.0]), None, None)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_prob_kl_temperature_scales_logits_and_multiplies_by_t_squared():
    # T = 2: p_t = softmax((ln 3 / 2, 0)) = (√3, 1) / (√3 + 1)
    q = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * (0.5 * math.log(0.5 / q) + 0.5 * math.log(0.5 / (1 - q)))
    loss = edge_loss("prob_kl", probs([0.0, 0.0]), probs([LN3, 0.0]), None, None, temperature=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_prob_kl_is_zero_for_equal_distributions_and_stable_for_huge_logits():
    z = probs([1000.0, -1000.0, 0.0])
    assert edge_loss("prob_kl", z, z.clone(), None, None).item() == pytest.approx(0.0, abs=1e-6)
    far = edge_loss("prob_kl", probs([1000.0, 0.0]), probs([0.0, 1000.0]), None, None)
    assert far.item() == pytest.approx(1000.0, rel=1e-5)


def test_prob_cos_matches_hand_value():
    # (1/2, 1/2) · (3/4, 1/4) / (‖·‖‖·‖) = 0.5 / (√0.5 √0.625)
    loss = edge_loss("prob_cos", probs([0.0, 0.0]), probs([LN3, 0.0]), None, None)
    assert loss.item() == pytest.approx(0.5 / (math.sqrt(0.5) * math.sqrt(0.625)), rel=1e-6)


def test_dark_cos_compares_only_the_wrong_classes():
    # True class 0. The wrong classes (1, 2) get (3/4, 1/4) from the source and (1/4, 3/4) from the target:
    # cos = (3/16 + 3/16) / (10/16) = 0.6, however the two nodes score the true class.
    labels = torch.tensor([0, 0])
    source = probs([5.0, LN3, 0.0], [-5.0, LN3, 0.0])
    target = torch.tensor([[-2.0, 0.0, LN3], [9.0, 0.0, LN3]], requires_grad=True)
    loss = edge_loss("dark_cos", source, target, None, None, labels=labels)
    assert loss.tolist() == pytest.approx([0.6, 0.6], rel=1e-6)
    loss.sum().backward()
    assert target.grad[:, 0].abs().max() == 0 and target.grad[:, 1:].abs().min() > 0


def test_joint_ce_is_the_source_s_cross_entropy_and_hands_its_gradient_to_the_target():
    # Source (ensemble) probabilities (3/4, 1/4) over two classes: the loss is its cross-entropy, whatever the
    # target scores, and the target's logits get p_s - y: (3/4 - 1, 1/4) where class 0 is true.
    labels = torch.tensor([0, 1])
    source = probs([LN3, 0.0], [LN3, 0.0])
    target = torch.tensor([[5.0, -5.0], [0.3, 0.1]], requires_grad=True)
    loss = edge_loss("joint_ce", source, target, None, None, labels=labels)
    assert loss.tolist() == pytest.approx([math.log(4 / 3), math.log(4)], rel=1e-6)
    loss.sum().backward()
    assert target.grad.tolist() == [pytest.approx([-0.25, 0.25]), pytest.approx([0.75, -0.75])]


def peaked_map(size, peak, peak_value=5.0):
    m = torch.full((1, 1, size, size), 1.0)
    m[0, 0, peak[0], peak[1]] = peak_value
    return m


@pytest.mark.parametrize(
    "peak, k, rows, cols",
    [
        ((0, 0), 3, (0, 3), (0, 3)),  # top-left corner: window shifted right and down
        ((6, 6), 3, (4, 7), (4, 7)),  # bottom-right corner
        ((0, 3), 3, (0, 3), (2, 5)),  # top edge, centred horizontally
        ((3, 6), 5, (1, 6), (2, 7)),  # right edge, larger window
        ((3, 3), 7, (0, 7), (0, 7)),  # window as large as the map
        ((2, 4), 1, (2, 3), (4, 5)),  # a single pixel
    ],
)
def test_attention_crops_follow_the_source_peak_and_stay_inside(peak, k, rows, cols):
    source = peaked_map(7, peak)
    target = torch.arange(49, dtype=torch.float32).reshape(1, 1, 7, 7) + 1
    q_s, q_t = attention_crops(source, target, k)
    expected_t = target[0, 0, rows[0]:rows[1], cols[0]:cols[1]].flatten()
    expected_s = source[0, 0, rows[0]:rows[1], cols[0]:cols[1]].flatten()
    assert torch.allclose(q_t[0], expected_t / expected_t.norm())
    assert torch.allclose(q_s[0], expected_s / expected_s.norm())
    assert torch.allclose(q_s.norm(dim=1), torch.ones(1))


def test_crops_are_per_sample_in_one_batch():
    source = torch.cat([peaked_map(7, (0, 0)), peaked_map(7, (6, 6)), peaked_map(7, (3, 3))])
    target = torch.rand(3, 1, 7, 7)
    q_s, q_t = attention_crops(source, target, 3)
    for b, (r, c) in enumerate([(0, 0), (4, 4), (2, 2)]):
        window = target[b, 0, r:r + 3, c:c + 3].flatten()
        assert torch.allclose(q_t[b], window / window.norm())


def test_crops_use_the_source_peak_not_the_target_peak():
    source, target = peaked_map(7, (0, 0)), peaked_map(7, (6, 6), peak_value=100.0)
    _, q_t = attention_crops(source, target, 3)
    assert torch.allclose(q_t[0], torch.full((9,), 1 / 3))  # the target's peak is outside the source's window


def test_att_mse_and_att_cos_hand_values():
    k = 3
    source = peaked_map(7, (0, 0))
    # inside the window the target is a multiple of the source: identical after normalisation
    scaled = source * 2.0
    assert edge_loss("att_mse", source, source, source, scaled, crop_sizes=(k,)).item() == pytest.approx(0.0, abs=1e-7)
    assert edge_loss("att_cos", source, source, source, scaled, crop_sizes=(k,)).item() == pytest.approx(1.0, rel=1e-6)
    # orthogonal windows: the source is one hot at the corner, the target zero there
    one_hot = torch.zeros(1, 1, 7, 7)
    one_hot[0, 0, 0, 0] = 1.0
    other = torch.zeros(1, 1, 7, 7)
    other[0, 0, 1, 1] = 1.0
    # q̂_s = e_0, q̂_t = e_4: mse = (1 + 1) / 9, cosine 0
    assert edge_loss("att_mse", one_hot, one_hot, one_hot, other, crop_sizes=(k,)).item() == pytest.approx(2 / 9)
    assert edge_loss("att_cos", one_hot, one_hot, one_hot, other, crop_sizes=(k,)).item() == pytest.approx(0.0)


def test_attention_losses_average_over_crop_sizes():
    one_hot = torch.zeros(1, 1, 7, 7)
    one_hot[0, 0, 0, 0] = 1.0
    other = torch.zeros(1, 1, 7, 7)
    other[0, 0, 1, 1] = 1.0
    # k = 3: q̂_s = e_0, q̂_t = e_4 → 2/9; k = 5: the same two pixels among 25 → 2/25
    loss = edge_loss("att_mse", one_hot, one_hot, one_hot, other, crop_sizes=(3, 5))
    assert loss.item() == pytest.approx((2 / 9 + 2 / 25) / 2)


@pytest.mark.parametrize("combined", [name for name, record in LOSS_DESIGNS.items() if record.parts])
def test_combined_designs_are_sums(combined):
    torch.manual_seed(0)
    z_s, z_t = torch.randn(4, 5), torch.randn(4, 5)
    m_s, m_t = torch.rand(4, 1, 7, 7), torch.rand(4, 1, 7, 7)
    args = (z_s, z_t, m_s, m_t)
    total = edge_loss(combined, *args, crop_sizes=(3, 5))
    assert torch.allclose(total, sum(edge_loss(p, *args, crop_sizes=(3, 5)) for p in LOSS_DESIGNS[combined].parts))


@pytest.mark.parametrize("design", design_names())
def test_every_design_returns_one_value_per_sample_and_gradients_reach_the_target_only(design):
    torch.manual_seed(0)
    z_s, z_t = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5, requires_grad=True)
    m_s, m_t = torch.rand(4, 1, 7, 7, requires_grad=True), torch.rand(4, 1, 7, 7, requires_grad=True)
    h_s, h_t = torch.randn(4, 3, 2, 2, requires_grad=True), torch.randn(4, 3, 2, 2, requires_grad=True)
    loss = edge_loss(design, z_s.detach(), z_t, m_s.detach(), m_t, crop_sizes=(3,), source_features=h_s.detach(),
                     target_features=h_t, labels=torch.tensor([0, 1, 2, 4]))
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert z_s.grad is None and m_s.grad is None and h_s.grad is None
    reached = [g is not None and g.abs().sum() > 0 for g in (z_t.grad, m_t.grad, h_t.grad)]
    assert reached == [knowledge in LOSS_DESIGNS[design].reads for knowledge in ("logits", "attention", "features")]


@pytest.mark.parametrize("design", [name for name, record in LOSS_DESIGNS.items() if record.reads != {"logits"}])
def test_a_design_refuses_a_call_without_the_knowledge_it_reads(design):
    missing = "needs the samples' labels" if LOSS_DESIGNS[design].needs_labels else "needs both"
    with pytest.raises(ValueError, match=missing):
        edge_loss(design, torch.zeros(2, 3), torch.zeros(2, 3), None, None)


def test_unknown_design_lists_the_valid_ones():
    with pytest.raises(ValueError, match="prob_kl, prob_cos, att_mse, att_cos"):
        edge_loss("prob_l2", torch.zeros(1, 2), torch.zeros(1, 2), None, None)


def test_crop_larger_than_map_is_a_clear_error():
    with pytest.raises(KTGError, match="does not fit a 7×7"):
        edge_loss("att_mse", torch.zeros(1, 2), torch.zeros(1, 2), torch.rand(1, 1, 7, 7), torch.rand(1, 1, 7, 7),
                  crop_sizes=(11,))


def test_hint_designs_compare_stage_features():
    source = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # 1×2×1×2
    target = torch.zeros_like(source)
    z = torch.zeros(1, 3)
    # mean of squares (1 + 4 + 9 + 16) / 4
    mse = edge_loss("hint_mse", z, z, None, None, source_features=source, target_features=target)
    assert mse.item() == pytest.approx(7.5)
    cos = edge_loss("hint_cos", z, z, None, None, source_features=source, target_features=2 * source)
    assert cos.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="stage features"):
        edge_loss("hint_mse", z, z, None, None)
