"""Synthetic data for tests and benchmarks: each class is a fixed random colour pattern plus noise.

The classes are learnable (a small network separates them within a few epochs), the size, class count and
resolution are free, and nothing is read from disk.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ktg.data.images import Dataset, ImageSet
from ktg.data.preprocess import Preprocessing
from ktg.data.transforms import Identity, RandomTranslate
from ktg.errors import KTGError


def make_images(num_images: int, num_classes: int, size: int, seed: int,
                noise: float = 0.35) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_images`` uint8 N×3×size×size images and their labels, classes drawn uniformly.

    Every class owns a smooth random pattern (a 4×4 colour grid upsampled); images are that pattern plus
    Gaussian noise of standard deviation ``noise`` (in units of the [0, 1] pixel range).
    """
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.rand(num_classes, 3, 4, 4, generator=generator)
    patterns = torch.nn.functional.interpolate(patterns, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.randint(0, num_classes, (num_images,), generator=generator)
    pixels = patterns[labels] + noise * torch.randn(num_images, 3, size, size, generator=generator)
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8), labels


def synthetic_preprocessing(image_size: int | None, **options) -> Preprocessing:
    """Squares of ``image_size`` (default 32) as they are; the loader's ``options`` only shape the data."""
    return Preprocessing(image_size or 32, Identity())


def load_synthetic(
    root: Path | None,
    image_size: int | None,
    *,
    train_size: int = 512,
    test_size: int = 256,
    num_classes: int = 10,
    seed: int = 0,
) -> Dataset:
    """Synthetic train and test splits drawn from the same class patterns; ``root`` is ignored."""
    if num_classes < 2 or train_size < num_classes or test_size < 1:
        raise KTGError(
            f"synthetic data needs num_classes ≥ 2, train_size ≥ num_classes and test_size ≥ 1; "
            f"got num_classes={num_classes}, train_size={train_size}, test_size={test_size}"
        )
    preprocessing = synthetic_preprocessing(image_size)
    size = preprocessing.stored_size
    images, labels = make_images(train_size + test_size, num_classes, size, seed)
    classes = [f"class_{c}" for c in range(num_classes)]
    return Dataset(
        name="synthetic",
        train=ImageSet(images[:train_size], labels[:train_size], classes, "synthetic/train"),
        test=ImageSet(images[train_size:], labels[train_size:], classes, "synthetic/test"),
        train_transform=RandomTranslate(pad=max(1, size // 8), flip=True),
        eval_transform=preprocessing.transform,
        info={"train_size": train_size, "test_size": test_size, "seed": seed},
    )
