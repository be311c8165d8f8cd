"""Batches cut from an :class:`~ktg.data.ImageSet`, shuffled and augmented per seeded epoch.

Dense image sets (digits, CIFAR, synthetic) are moved to the device once; photos stay in the shared host
cache (:class:`~ktg.data.packed.PackedImages`) and each batch copies the pixels under its crops there.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ktg.data.images import ImageSet
from ktg.data.packed import PackedImages
from ktg.data.transforms import BatchTransform


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of one epoch: order and augmentation depend on (seed, epoch) only, so a resumed run
    sees exactly the batches an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class BatchLoader:
    """Iterate over ``images`` in batches on ``device``, transformed there: dense uint8 pixels live on the device
    once; packed photos stay in host memory and go to the device batch by batch (see the module docstring).

    Args:
        images: the split to iterate over.
        batch_size: images per batch.
        transform: uint8 batch → float batch (see :mod:`ktg.data.transforms`).
        device: where pixels, labels and batches live.
        shuffle: a new seeded order every epoch (training) or the stored order (evaluation).
        drop_last: skip the last, smaller batch (training, as in the reference recipe).
        seed: with the epoch number, fixes order and augmentation.
    """

    def __init__(
        self,
        images: ImageSet,
        batch_size: int,
        transform: BatchTransform,
        device: torch.device,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.name = images.name
        self.pixels = images.images.to(device)
        self.labels = images.labels.to(device)
        # Crop boxes are drawn on the CPU, so the original sizes stay there.
        self.original_sizes = images.original_sizes
        self.batch_size = batch_size
        self.transform = transform
        self.device = device
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed

    def __len__(self) -> int:
        n = len(self.pixels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        """Images seen per epoch (after dropping the last partial batch, if asked)."""
        return len(self) * self.batch_size if self.drop_last else len(self.pixels)

    def epoch(self, epoch: int, *, with_index: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield (images B×C×S×S float, labels B int64) for one epoch, and with ``with_index`` the B positions
        of the batch's images in the split (for per-sample data such as bootstrap counts)."""
        generator = epoch_generator(self.seed, epoch)
        n = len(self.pixels)
        order_cpu = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        order = order_cpu.to(self.device, non_blocking=True)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = start + self.batch_size
            index, index_cpu = order[start:stop], order_cpu[start:stop]
            sizes = None if self.original_sizes is None else self.original_sizes[index_cpu]
            pixels = self.pixels[index_cpu if isinstance(self.pixels, PackedImages) else index]
            batch = self.transform(pixels, generator, original_sizes=sizes), self.labels[index]
            yield (*batch, index) if with_index else batch
