"""Photos of different sizes packed one after another in one flat uint8 array, cut into batches on request.

A photo dataset keeps each image at (nearly) its own resolution (see :mod:`ktg.data.cache`), so the images
cannot be one N×C×H×W tensor: they are stored H×W×C, row after row, image after image, and
:class:`PackedImages` knows where each one starts and how large it is.

Where the pixels live, and why there: the array is the memory-mapped cache file, read through the operating
system's page cache, and it stays in host memory; each batch copies only the pixels its crops need (the
region under each crop box) into pinned memory and from there to the device. The page cache holds one copy
of a file however many processes map it, so K search workers on one GPU (``--jobs-per-device K``) share
one copy of the dataset, on the host, instead of holding K copies on the GPU. The alternatives cost more:
the dataset on the GPU once per worker multiplies its size by K (Stanford Dogs at full detail is ~11 GB);
one process sharing its GPU copy with the others through CUDA IPC needs that process alive for as long as
any worker runs, which a search whose workers come and go (and may run on other machines) cannot promise;
decoding the JPEG files on the GPU for every batch repeats work that the cache does once and is limited to
JPEGs. The price is one host copy per batch of the pixels the batch uses (at most 0.56 MB for a 500×375
Stanford Dogs photo; about 4 ms for 16 of them on one CPU core), done while the GPU still runs the previous
step, since the training step never waits for the GPU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class PackedImages:
    """N images of their own sizes in one flat uint8 array, each stored H×W×C (C = 3) row by row.

    Args:
        pixels: the flat uint8 array (usually a read-only memory map of a cache file, shared by processes).
        sizes: N×2 int64 (height, width) of each stored image.
        offsets: N int64, where each image starts in ``pixels``; default: one after another from 0.
        device: where :meth:`regions` delivers the pixels of a batch (the array itself stays on the host).
    """

    channels = 3

    def __init__(self, pixels: np.ndarray, sizes: torch.Tensor, offsets: torch.Tensor | None = None,
                 device: torch.device | str = "cpu") -> None:
        sizes = torch.as_tensor(sizes, dtype=torch.int64)
        if pixels.dtype != np.uint8 or pixels.ndim != 1 or sizes.dim() != 2 or sizes.shape[1] != 2:
            raise ValueError(f"expected a flat uint8 array and N×2 sizes, got {pixels.dtype} {pixels.shape} and "
                             f"{tuple(sizes.shape)}")
        lengths = sizes[:, 0] * sizes[:, 1] * self.channels
        if offsets is None:
            offsets = torch.cumsum(lengths, 0) - lengths
        offsets = torch.as_tensor(offsets, dtype=torch.int64)
        if offsets.shape != (len(sizes),) or (len(sizes) and int((offsets + lengths).max()) > len(pixels)):
            raise ValueError(f"{len(sizes)} images do not fit in {len(pixels)} bytes with the given offsets")
        self.pixels = pixels
        self.sizes = sizes
        self.offsets = offsets
        self.device = torch.device(device)

    @classmethod
    def pack(cls, images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> "PackedImages":
        """Pack H×W×3 uint8 arrays (copied into one new array)."""
        sizes = torch.tensor([image.shape[:2] for image in images], dtype=torch.int64).view(-1, 2)
        flat = np.concatenate([np.ascontiguousarray(image, dtype=np.uint8).reshape(-1) for image in images])
        return cls(flat, sizes, device=device)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int]) -> "PackedImages":
        """The images at ``index`` (CPU indices), sharing this array."""
        return PackedImages(self.pixels, self.sizes[index].view(-1, 2), self.offsets[index].view(-1), self.device)

    def to(self, device: torch.device | str) -> "PackedImages":
        """The same images, delivering batches to ``device``; nothing is copied now."""
        return PackedImages(self.pixels, self.sizes, self.offsets, device)

    @property
    def nbytes(self) -> int:
        """Bytes of the pixels of these images."""
        return int((self.sizes[:, 0] * self.sizes[:, 1]).sum()) * self.channels

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` as a C×H×W uint8 tensor on the CPU (a copy)."""
        (height, width), offset = self.sizes[index].tolist(), int(self.offsets[index])
        flat = self.pixels[offset: offset + height * width * self.channels]
        return torch.from_numpy(flat.reshape(height, width, self.channels).transpose(2, 0, 1).copy())

    def regions(self, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        """The rectangle (top, left, height, width) of every image (B int64 each, CPU, in stored pixels, inside
        the image) as contiguous B×H×W×C uint8 on :attr:`device`, H and W the largest height and width asked
        for.

        Each rectangle sits at the top left of its slot; the rest of a slot is unspecified. This is the one
        host copy per batch: the rectangles are gathered into pinned memory and copied to the device without
        waiting.
        """
        slot_h, slot_w = int(height.max()), int(width.max())
        staging = torch.empty((len(self), slot_h, slot_w, self.channels), dtype=torch.uint8,
                              pin_memory=self.device.type == "cuda")
        slots = staging.numpy()
        boxes = zip(self.offsets.tolist(), self.sizes.tolist(), top.tolist(), left.tolist(), height.tolist(),
                    width.tolist())
        for slot, (offset, (stored_h, stored_w), y, x, h, w) in zip(slots, boxes):
            image = self.pixels[offset: offset + stored_h * stored_w * self.channels]
            slot[:h, :w] = image.reshape(stored_h, stored_w, self.channels)[y: y + h, x: x + w]
        return staging.to(self.device, non_blocking=True)
