"""Batch transforms that run on the device holding the batch: uint8 B×C×H×W in, float B×C×S×S out.

Random parameters are drawn on the CPU from the caller's ``torch.Generator`` (a handful of numbers per
sample), so a seeded epoch gives the same batches on any device and after a resume; the pixels are then
moved by one gather or one resampling kernel per batch.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch


class BatchTransform(Protocol):
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Transform uint8 B×C×H×W ``images`` into float B×C×S×S, drawing randomness from ``generator``."""
        ...


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [0, 1]."""
    return images.float().div_(255.0)


class Normalize:
    """Apply ``transform``, then subtract ``mean`` and divide by ``std`` per channel."""

    def __init__(self, transform: BatchTransform, mean: Sequence[float], std: Sequence[float]) -> None:
        self.transform = transform
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = self.transform(images, generator)
        return (out - self.mean.to(out.device)) / self.std.to(out.device)


class Identity:
    """No geometric change: only uint8 → float in [0, 1]."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return to_float(images)


class RandomTranslate:
    """Zero-pad by ``pad`` pixels and cut a random window of the original size (CIFAR's padded random crop),
    optionally flipping each image horizontally with probability 1/2."""

    def __init__(self, pad: int, flip: bool) -> None:
        self.pad = pad
        self.flip = flip

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, h, w = images.shape
        offsets = torch.randint(0, 2 * self.pad + 1, (2, b), generator=generator)
        flips = torch.rand(b, generator=generator) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
        offsets, flips = offsets.to(images.device, non_blocking=True), flips.to(images.device, non_blocking=True)
        padded = torch.nn.functional.pad(images, (self.pad,) * 4).permute(0, 2, 3, 1)  # B×H'×W'×C
        steps_y = torch.arange(h, device=images.device)
        steps_x = torch.arange(w, device=images.device)
        rows = offsets[0, :, None] + steps_y
        cols = offsets[1, :, None] + torch.where(flips[:, None], w - 1 - steps_x, steps_x)
        batch = torch.arange(b, device=images.device)[:, None, None]
        window = padded[batch, rows[:, :, None], cols[:, None, :]]  # B×H×W×C
        return to_float(window.permute(0, 3, 1, 2).contiguous())
