"""The embedded demo data: handwritten digits (UCI "Optical Recognition of Handwritten Digits", test part).

1,797 grey 8×8 images with values 0..16 in 10 classes, as scikit-learn ships them (CC BY 4.0, E. Alpaydin
and C. Kaynak). They are upscaled once to ``image_size`` (default 32, the CIFAR-style input) and repeated over
three channels, so every model of ktg takes them unchanged. The set has no official test split: a fixed
stratified quarter (seed 0) is the test split, so numbers are comparable across runs. Runs on it default to
narrow nodes, batch 4, learning rate 0.01 and five epochs (the digits record in :mod:`ktg.data` says why), so
short runs learn and the demo and searches finish in minutes on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ktg.data import COMMON_OPTIONS
from ktg.data.images import Dataset, ImageSet, stratified_split
from ktg.data.preprocess import Preprocessing
from ktg.data.transforms import Identity, RandomTranslate
from ktg.errors import KTGError

_FILE = Path(__file__).with_name("digits.npz")
TEST_FRACTION = 0.25
SPLIT_SEED = 0


def digits_preprocessing(image_size: int | None, **options) -> Preprocessing:
    """Squares of ``image_size`` (default 32) as they are; ``options`` are the loader's (none)."""
    return Preprocessing(image_size or 32, Identity())


def load_digits(root: Path | None, image_size: int | None, **options) -> Dataset:
    """The embedded digits; ``root`` is ignored. Training batches are shifted by up to 1/8 of the side."""
    if options:
        raise KTGError(f"dataset 'digits' has no option {sorted(options)[0]!r}; its options are: "
                       f"{', '.join(COMMON_OPTIONS)}")
    preprocessing = digits_preprocessing(image_size)
    size = preprocessing.stored_size
    if size < 8:
        raise KTGError(f"digits are 8×8; --image-size must be at least 8, got {size}")
    with np.load(_FILE, allow_pickle=False) as archive:
        pixels = torch.from_numpy(archive["images"]).float()
        labels = torch.from_numpy(archive["labels"]).long()
    scaled = F.interpolate(pixels[:, None] / 16.0, size=(size, size), mode="bilinear", align_corners=False)
    images = (scaled.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    everything = ImageSet(images, labels, [str(d) for d in range(10)], "digits/all")
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return Dataset(
        name="digits",
        train=everything.subset(train_idx, "digits/train"),
        test=everything.subset(test_idx, "digits/test"),
        train_transform=RandomTranslate(pad=max(1, size // 8), flip=False),
        eval_transform=preprocessing.transform,
    )
