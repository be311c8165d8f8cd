"""The images of a dataset in memory: :class:`ImageSet` (one split), :class:`Dataset` (a loaded dataset) and
:func:`stratified_split`.

Every dataset is decoded once into an :class:`ImageSet` (N×C×H×W uint8, or photos of their own sizes
packed in a memory-mapped cache, plus labels); batches are cut, augmented and normalised on the training
device (see :mod:`ktg.data.transforms`), so a run never decodes an image twice and the GPU is never waiting
for Python workers. These names are also importable from :mod:`ktg.data`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import torch

from ktg.data import DataSource
from ktg.data.packed import PackedImages
from ktg.data.transforms import BatchTransform
from ktg.errors import KTGError


@dataclass
class ImageSet:
    """Images and labels of one split.

    Attributes:
        images: N×C×H×W uint8 tensor (C = 3), or :class:`~ktg.data.packed.PackedImages` of N photos of their
            own sizes (host memory, shared between processes; only the crop transforms take them).
        labels: N int64 tensor of class indices in [0, len(classes)).
        classes: class names, index = label.
        name: a human-readable name such as ``"digits/train"``, used in messages and metrics.
        original_sizes: N×2 int64 (height, width) of each image before it was cached, or ``None`` when the
            stored images are the originals. Crop transforms choose their boxes in these coordinates.
        files: each image's file, relative to the dataset's folder, for images read from files (photos); None
            for images that come as arrays. What :func:`fingerprint` identifies them by.
    """

    images: torch.Tensor | PackedImages
    labels: torch.Tensor
    classes: list[str]
    name: str
    original_sizes: torch.Tensor | None = None
    files: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, PackedImages) and (self.images.dtype != torch.uint8 or self.images.dim() != 4):
            raise ValueError(f"{self.name}: images must be N×C×H×W uint8, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        if self.labels.shape != (len(self),):
            raise ValueError(f"{self.name}: {len(self)} images but labels of shape {tuple(self.labels.shape)}")
        if self.original_sizes is not None and self.original_sizes.shape != (len(self), 2):
            raise ValueError(f"{self.name}: {len(self)} images but original sizes of shape "
                             f"{tuple(self.original_sizes.shape)}")
        if self.files is not None and len(self.files) != len(self):
            raise ValueError(f"{self.name}: {len(self)} images but {len(self.files)} file names")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: torch.Tensor, name: str) -> "ImageSet":
        """The images at ``indices`` (a 1-D int64 tensor), as a new set called ``name``."""
        sizes = None if self.original_sizes is None else self.original_sizes[indices]
        files = None if self.files is None else tuple(self.files[i] for i in indices.tolist())
        return ImageSet(self.images[indices], self.labels[indices], self.classes, name, sizes, files)


@dataclass
class Dataset:
    """A dataset ready for training: the official train and test splits and their batch transforms.

    ``train_transform`` augments training batches; ``eval_transform`` prepares evaluation batches.
    Both turn B×C×H×W uint8 into B×C×S×S float on the device the batch is on. ``source`` says how to load it
    again (set by :func:`load_dataset`; None for a dataset built by hand).
    """

    name: str
    train: ImageSet
    test: ImageSet
    train_transform: BatchTransform
    eval_transform: BatchTransform
    info: dict = field(default_factory=dict)
    source: DataSource | None = None

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def image_size(self) -> int:
        """The side of the images the model sees (the evaluation transform's output)."""
        return int(self.eval_transform(self.test.images[:1]).shape[-1])


#: Pixels per image, evenly spaced over its stored bytes, that :func:`fingerprint` hashes for images held as arrays.
_SAMPLED_PIXELS = 16


def fingerprint(images: ImageSet) -> str:
    """A hash (hex) that identifies the images of a set, in order, with their labels and classes: what a run
    records beside indices into the set (``split.json``), so that they are never applied to other images.

    Cheap at any size, never a hash of every pixel: images read from files are identified by their relative
    paths (their pixels depend on the decoder's version; the decode cache checks the files themselves);
    images that come as arrays by their shapes and 16 evenly spaced bytes of each. Stanford Dogs' 12,000
    training photos hash as 12,000 names and labels.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps([images.classes, len(images)]).encode())
    digest.update(images.labels.to(torch.int64).cpu().numpy().tobytes())
    if images.files is not None:
        digest.update("\n".join(images.files).encode())
    elif isinstance(images.images, PackedImages):
        packed = images.images
        lengths = packed.sizes[:, 0] * packed.sizes[:, 1] * packed.channels
        positions = packed.offsets[:, None] + lengths[:, None] * torch.arange(_SAMPLED_PIXELS) // _SAMPLED_PIXELS
        digest.update(packed.sizes.numpy().tobytes())
        digest.update(np.ascontiguousarray(packed.pixels[positions.numpy()]).tobytes())
    else:
        flat = images.images.reshape(len(images), -1)
        positions = torch.arange(_SAMPLED_PIXELS) * flat.shape[1] // _SAMPLED_PIXELS
        digest.update(json.dumps(list(images.images.shape)).encode())
        digest.update(flat[:, positions].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_fingerprint(saved: str | None, images: ImageSet, what: str) -> None:
    """Raise :class:`KTGError` unless ``saved``, a fingerprint recorded by ``what`` (e.g. a run's split.json),
    is that of ``images`` as loaded now."""
    if saved is None:
        raise KTGError(f"{what} records no fingerprint of the images it indexes (an older ktg wrote it), so it "
                       f"cannot be applied to {images.name} safely; retrain the run")
    if saved != fingerprint(images):
        raise KTGError(f"{what} indexes other images than {images.name} holds now (their fingerprint differs): "
                       "the dataset changed since the run trained (files added, removed, reordered or relabelled, "
                       "another --data-root or --dataset-option); use the data the run trained on")


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (kept, held_out), holding out ``fraction`` of every class, reproducibly.

    Each class contributes round(fraction × its count) samples (at least one when it has two or more),
    so the held-out split has the training set's class balance.
    """
    if not 0.0 < fraction < 1.0:
        raise KTGError(f"a held-out fraction must lie strictly between 0 and 1, got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    kept, held_out = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_out = round(fraction * len(members))
        if len(members) >= 2:
            n_out = min(max(n_out, 1), len(members) - 1)
        held_out.append(members[:n_out])
        kept.append(members[n_out:])
    return torch.sort(torch.cat(kept)).values, torch.sort(torch.cat(held_out)).values


def training_subset(train: ImageSet, size: float | int, seed: int) -> ImageSet:
    """A stratified part of the training split ``train``: a fraction ``size`` in (0, 1), or about ``size``
    images (≥ 1; each class keeps round(size / len(train) × its count), at least one), drawn with ``seed``."""
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not (0 < size < 1 or (
            size >= 1 and float(size).is_integer())):
        raise KTGError(f"the dataset option train_subset must be a fraction in (0, 1) or a whole number of images, "
                       f"got {size!r}")
    if size >= len(train):
        raise KTGError(f"train_subset={size} keeps the whole training split of {len(train)} images; give fewer, "
                       f"or leave the option out")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise KTGError(f"the dataset option train_subset_seed must be an integer, got {seed!r}")
    fraction = size if size < 1 else size / len(train)
    _, kept = stratified_split(train.labels, fraction, seed)
    return train.subset(kept, f"{train.name}-subset")
