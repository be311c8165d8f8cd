"""Packed photos: images of their own sizes in one flat array, indexed without copying, cut into batch regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ktg.data.packed import PackedImages


def test_regions_are_the_rectangles_of_each_image() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(5, 7), (9, 4), (6, 6)]]
    packed = PackedImages.pack(images)
    assert len(packed) == 3 and packed.nbytes == 3 * (35 + 36 + 36) == len(packed.pixels)
    assert torch.equal(packed.image(1), torch.from_numpy(images[1]).permute(2, 0, 1))
    picked = packed[torch.tensor([2, 0])]  # shares the array: only sizes and offsets are indexed
    assert picked.pixels is packed.pixels and picked.sizes.tolist() == [[6, 6], [5, 7]]
    top, left, height, width = (torch.tensor(v) for v in ([1, 0], [2, 3], [4, 5], [3, 4]))
    regions = picked.regions(top, left, height, width)
    assert regions.shape == (2, 5, 4, 3) and regions.dtype == torch.uint8 and regions.is_contiguous()
    assert torch.equal(regions[0, :4, :3], torch.from_numpy(images[2][1:5, 2:5]))
    assert torch.equal(regions[1, :5, :4], torch.from_numpy(images[0][0:5, 3:7]))
    assert packed.to("cpu").device == torch.device("cpu") and packed[1:].sizes.tolist() == [[9, 4], [6, 6]]


def test_images_must_fit_the_array() -> None:
    with pytest.raises(ValueError, match="2 images do not fit in 14 bytes"):
        PackedImages(np.zeros(14, dtype=np.uint8), torch.tensor([[2, 2], [1, 1]]))
    with pytest.raises(ValueError, match="flat uint8 array and N×2 sizes"):
        PackedImages(np.zeros((4, 5), dtype=np.uint8), torch.tensor([[1, 1]]))
