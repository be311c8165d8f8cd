"""Per-sample knowledge-transfer losses of a network edge (``docs/method.md#loss-designs``).

Each loss design is a pure function ``(source, target, temperature, crop_sizes) -> Tensor[B]`` with one record
in :data:`ktg.registry.LOSS_DESIGNS` saying what it reads, whether it pulls or pushes and how figures label it;
adding a design is one function here and one record there. Sources are passed already detached by the caller:
only the target learns.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ktg.errors import KTGError
from ktg.registry import DEFAULT_CROP_SIZES, DEFAULT_TEMPERATURE, LOSS_DESIGNS


class Knowledge(NamedTuple):
    """What one node offers to an edge: perception logits (B×C), attention map (B×1×H×W), for hint edges
    the B×C'×H'×W' output of a chosen stage (on the target side already passed through its adapter) and, for
    designs that read them, the B labels of the samples."""

    logits: torch.Tensor
    attention: torch.Tensor | None
    features: torch.Tensor | None = None
    labels: torch.Tensor | None = None


def prob_kl(source: Knowledge, target: Knowledge, temperature: float, crop_sizes: Sequence[int]) -> torch.Tensor:
    """KL(p_s ‖ p_t) per sample with p = softmax(z / T), scaled by T² (Hinton) so gradients keep their size."""
    log_p_s = F.log_softmax(source.logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(target.logits.float() / temperature, dim=1)
    return (log_p_s.exp() * (log_p_s - log_p_t)).sum(dim=1) * temperature**2


def prob_cos(source: Knowledge, target: Knowledge, temperature: float, crop_sizes: Sequence[int]) -> torch.Tensor:
    """Cosine similarity of the two probability vectors per sample; minimising it pushes them apart."""
    p_s = F.softmax(source.logits.float() / temperature, dim=1)
    p_t = F.softmax(target.logits.float() / temperature, dim=1)
    return F.cosine_similarity(p_s, p_t, dim=1)


def dark_cos(source: Knowledge, target: Knowledge, temperature: float, crop_sizes: Sequence[int]) -> torch.Tensor:
    """Cosine similarity of the two distributions over the wrong classes per sample (p̃ = softmax(z / T) with
    the true class left out); minimising it makes the nodes err differently while leaving the true class alone.

    Pushing whole probability vectors apart (``prob_cos``) also pushes the target off the class both nodes
    rightly agree on; an ensemble gains instead from members whose wrong answers differ (diversity of the
    non-maximal predictions, as in Pang et al.'s adaptive diversity promoting), so this push reads only those.
    """
    true_class = F.one_hot(target.labels, source.logits.shape[1]).bool()
    p_s = F.softmax((source.logits.float() / temperature).masked_fill(true_class, float("-inf")), dim=1)
    p_t = F.softmax((target.logits.float() / temperature).masked_fill(true_class, float("-inf")), dim=1)
    return F.cosine_similarity(p_s, p_t, dim=1)


def joint_ce(source: Knowledge, target: Knowledge, temperature: float, crop_sizes: Sequence[int]) -> torch.Tensor:
    """Cross-entropy of the source's probabilities, learned by the target alone: its value is the source's loss on
    the true class (times T²), its gradient reaches the target's logits as ``T · (p_s − y)``.

    With the ensemble node as source this is the target's share of training the ensemble as one model (each node
    also fixes what the others get wrong, as boosting does), beside its own label edge; it fades where the ensemble
    is right, which the target helps make so. Early on it adds about as much label gradient as the target's own
    edge: independent training at twice the learning rate gains as much in the measured low-data regime
    (docs/results.md).
    """
    target_logits = target.logits.float()
    logits = source.logits.float() + target_logits - target_logits.detach()
    return F.cross_entropy(logits / temperature, target.labels, reduction="none") * temperature**2


def attention_windows(
    source_attention: torch.Tensor, target_attention: torch.Tensor, crop_sizes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k×k windows of both maps around the argmax of the **source** map, for every k at once,
    flattened and L2-normalised.

    Each window is centred on the source's peak and shifted (never padded) to stay inside the map, so a
    peak at a corner gives the corner window. One argmax and one gather per map serve the whole batch and
    every crop size: window k's k² values come first in its row, zeros pad it to the largest k².

    Args:
        source_attention, target_attention: B×1×H×W maps.
        crop_sizes: the K sizes k, each at most min(H, W).

    Returns:
        (q̂_s, q̂_t), each B×K×max(k)², every row with unit L2 norm over its window.
    """
    b, _, h, w = source_attention.shape
    if not crop_sizes:
        raise KTGError("attention losses need at least one crop size")
    bad = [str(k) for k in crop_sizes if not 1 <= k <= min(h, w)]
    if bad:
        raise KTGError(f"attention crop size {', '.join(bad)} does not fit a {h}×{w} attention map; "
                       f"use sizes ≤ {min(h, w)}")
    layout = _window_layout(tuple(crop_sizes), h, w, source_attention.device)
    peak = attention_peaks(source_attention)[:, None, None]
    top = (peak // w - layout.half).clamp(min=0).minimum(layout.last_top)  # B×K×1
    left = (peak % w - layout.half).clamp(min=0).minimum(layout.last_left)
    flat_index = ((top + layout.rows) * w + left + layout.cols).reshape(b, -1)
    windows = [attention.reshape(b, h * w).gather(1, flat_index).view(b, len(crop_sizes), -1).float() * layout.mask
               for attention in (source_attention, target_attention)]
    return F.normalize(windows[0], dim=2), F.normalize(windows[1], dim=2)


def attention_peaks(attention: torch.Tensor) -> torch.Tensor:
    """Where each B×1×H×W map peaks, as the flat index row · W + column (B, int64): the crops' centres.

    Ties go to the first position in row-major order, so the map must be float32 (the ABN models compute it
    so under autocast): bf16 would round a plateau of near-1 values to one value and move the centre.
    """
    return attention.flatten(1).argmax(dim=1)


class _WindowLayout(NamedTuple):
    half: torch.Tensor  # K×1: k // 2
    last_top: torch.Tensor  # K×1: H − k, the lowest top row that keeps a window inside
    last_left: torch.Tensor  # K×1: W − k
    rows: torch.Tensor  # K×P: each window position's row offset (0 in the padding)
    cols: torch.Tensor  # K×P: its column offset
    mask: torch.Tensor  # K×P: 1 inside the window, 0 in the padding
    area: torch.Tensor  # K: k²


@functools.lru_cache(maxsize=64)
def _window_layout(crop_sizes: tuple[int, ...], h: int, w: int, device: torch.device) -> _WindowLayout:
    # Built once per shape and device, so a training step copies nothing from the host.
    positions = max(crop_sizes) ** 2
    j = torch.arange(positions)
    inside = torch.stack([j < k * k for k in crop_sizes])
    sizes = torch.tensor(crop_sizes)[:, None]
    rows = torch.where(inside, j // sizes, 0)
    cols = torch.where(inside, j % sizes, 0)
    layout = _WindowLayout(sizes // 2, h - sizes, w - sizes, rows, cols, inside.float(), (sizes[:, 0] ** 2).float())
    return _WindowLayout(*(tensor.to(device) for tensor in layout))


def attention_crops(
    source_attention: torch.Tensor, target_attention: torch.Tensor, crop_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k×k windows of both maps around the argmax of the source map (see :func:`attention_windows`).

    Returns:
        (q̂_s, q̂_t), each B×k² with unit L2 norm per row.
    """
    q_s, q_t = attention_windows(source_attention, target_attention, (crop_size,))
    return q_s[:, 0], q_t[:, 0]


def att_mse(source: Knowledge, target: Knowledge, temperature: float, crop_sizes: Sequence[int]) -> torch.Tensor:
    """Mean squared difference of the normalised crops, averaged over crop sizes (eq. 3); pulls maps together."""
    q_s, q_t = attention_windows(source.attention, target.attention, crop_sizes)
    area = _window_layout(tuple(crop_sizes), *source.attention.shape[-2:], source.attention.device).area
    return (((q_s - q_t) ** 2).sum(dim=2) / area).mean(dim=1)


def att_cos(source: Knowledge, target: Knowledge, temperature: float, crop_sizes: Sequence[int]) -> torch.Tensor:
    """Cosine similarity of the normalised crops, averaged over crop sizes (eq. 4); minimising pushes maps apart."""
    q_s, q_t = attention_windows(source.attention, target.attention, crop_sizes)
    return (q_s * q_t).sum(dim=2).mean(dim=1)


def hint_mse(source: Knowledge, target: Knowledge, temperature: float, crop_sizes: Sequence[int]) -> torch.Tensor:
    """FitNets hint: mean squared difference of the stage outputs per sample; pulls features together."""
    return ((source.features.float() - target.features.float()) ** 2).flatten(1).mean(dim=1)


def hint_cos(source: Knowledge, target: Knowledge, temperature: float, crop_sizes: Sequence[int]) -> torch.Tensor:
    """Cosine similarity of the flattened stage outputs per sample; minimising it pushes features apart."""
    return F.cosine_similarity(source.features.float().flatten(1), target.features.float().flatten(1), dim=1)


def check_design(design: str) -> None:
    """Raise ValueError naming the valid designs if ``design`` is not one of them."""
    if design not in LOSS_DESIGNS:
        raise ValueError(f"unknown loss design {design!r}; valid designs: {', '.join(LOSS_DESIGNS)}")


def edge_loss(
    design: str,
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    source_attention: torch.Tensor | None,
    target_attention: torch.Tensor | None,
    temperature: float = DEFAULT_TEMPERATURE,
    crop_sizes: Sequence[int] = DEFAULT_CROP_SIZES,
    source_features: torch.Tensor | None = None,
    target_features: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample loss ℓ ∈ R^B of one network edge (``docs/method.md#loss-designs``).

    Args:
        design: a registered design (:data:`ktg.registry.LOSS_DESIGNS`: ``prob_kl``, ``prob_cos``, ``att_mse``,
            ``att_cos``, ``prob_kl+att_mse``, ``prob_cos+att_cos``, …).
        source_logits, target_logits: B×C perception logits; the caller detaches the source.
        source_attention, target_attention: B×1×H×W maps in [0, 1]; may be None for designs that do not read
            attention.
        temperature: T of p = softmax(z/T); KL terms are multiplied by T².
        crop_sizes: the k of the k×k attention crops.
        source_features, target_features: B×C×H×W stage outputs for the hint designs (``hint_mse``,
            ``hint_cos``), the target's already mapped to the source's shape by its adapter.
        labels: the B class indices of the samples, for the designs that read them (``dark_cos``).

    Returns:
        float32 tensor of shape B: the loss of each sample, before the gate.
    """
    check_design(design)
    record = LOSS_DESIGNS[design]
    if record.needs_attention and (source_attention is None or target_attention is None):
        raise ValueError(f"loss design {design!r} needs both attention maps")
    if record.needs_features and (source_features is None or target_features is None):
        raise ValueError(f"loss design {design!r} needs both nodes' stage features")
    if record.needs_labels and labels is None:
        raise ValueError(f"loss design {design!r} needs the samples' labels")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return record.load()(
        Knowledge(source_logits, source_attention, source_features, labels),
        Knowledge(target_logits, target_attention, target_features, labels),
        temperature,
        crop_sizes,
    )
