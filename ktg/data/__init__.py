"""Datasets as in-memory uint8 image tensors, a registry of loaders, splits and a device-side batch loader.

Every dataset is decoded once into an :class:`ImageSet` (N×C×H×W uint8, or photos of their own sizes
packed in a memory-mapped cache, plus labels); batches are cut, augmented and normalised on the training
device (see :mod:`ktg.data.transforms`), so a run never decodes an image twice and the GPU is never waiting
for Python workers.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ktg.config import TrainConfig
from ktg.data.packed import PackedImages
from ktg.data.transforms import BatchTransform
from ktg.errors import KTGError

if TYPE_CHECKING:
    from ktg.data.preprocess import Preprocessing


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
    """

    images: torch.Tensor | PackedImages
    labels: torch.Tensor
    classes: list[str]
    name: str
    original_sizes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, PackedImages) and (self.images.dtype != torch.uint8 or self.images.dim() != 4):
            raise ValueError(f"{self.name}: images must be N×C×H×W uint8, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        if self.labels.shape != (len(self),):
            raise ValueError(f"{self.name}: {len(self)} images but labels of shape {tuple(self.labels.shape)}")
        if self.original_sizes is not None and self.original_sizes.shape != (len(self), 2):
            raise ValueError(f"{self.name}: {len(self)} images but original sizes of shape "
                             f"{tuple(self.original_sizes.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: torch.Tensor, name: str) -> "ImageSet":
        """The images at ``indices`` (a 1-D int64 tensor), as a new set called ``name``."""
        sizes = None if self.original_sizes is None else self.original_sizes[indices]
        return ImageSet(self.images[indices], self.labels[indices], self.classes, name, sizes)


@dataclass(frozen=True)
class DataSource:
    """How to load a dataset (again): what a run's config.json holds under ``"data"``.

    Attributes:
        name: a registered dataset (:func:`list_datasets`).
        root: the folder the user unpacked it into (None for built-in data).
        image_size: the side of the model's square input images; None takes the dataset's default.
        options: further keyword options of the dataset's loader (e.g. ``train_size`` of synthetic data).
    """

    name: str
    root: str | None = None
    image_size: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Dataset:
        """The dataset, with this source attached (:attr:`Dataset.source`)."""
        return load_dataset(self.name, self.root, self.image_size, **self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "root": self.root, "image_size": self.image_size, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSource:
        """The source a :meth:`to_dict` dict describes (``root``, ``image_size`` and ``options`` optional)."""
        return cls(data["name"], data.get("root"), data.get("image_size"), dict(data.get("options", {})))

    def preprocessing(self) -> Preprocessing:
        """How a new image becomes a model input as this dataset's test images do, without loading the dataset
        (see :mod:`ktg.data.preprocess`)."""
        from ktg.data.preprocess import preprocessing_for

        return preprocessing_for(self)

    @property
    def defaults(self) -> DatasetDefaults:
        """What the dataset suggests where the user gives no value (see :class:`DatasetDefaults`)."""
        return dataset_defaults(self.name)


@dataclass(frozen=True)
class DatasetDefaults:
    """What a dataset suggests where the user gives no value; applied by the caller (the command line), so the
    trainer sees only final values and a run's files say exactly what was trained.

    Attributes:
        node_options: model options of every node that sets none itself (e.g. ``base_width`` for data that
            narrow models learn).
        train: :class:`~ktg.config.TrainConfig` fields (e.g. ``batch_size``, ``lr``, ``epochs``).
    """

    node_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.train) - {f.name for f in dataclasses.fields(TrainConfig)})
        if unknown:
            raise ValueError(f"dataset defaults name training options TrainConfig does not have: {unknown}")

    def with_node_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` node options over the suggested ones."""
        return {**self.node_options, **given}

    def with_train(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` TrainConfig fields over the suggested ones."""
        return {**self.train, **given}


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


DatasetLoader = Callable[..., Dataset]
_DATASETS: dict[str, tuple[DatasetLoader, DatasetDefaults]] = {}


def register_dataset(name: str, *, defaults: DatasetDefaults | None = None) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader ``fn(root: Path | None, image_size: int | None, **options) -> Dataset`` by name, with
    the values it suggests where the user gives none (:class:`DatasetDefaults`; none by default)."""

    def decorator(fn: DatasetLoader) -> DatasetLoader:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _DATASETS[name] = (fn, defaults or DatasetDefaults())
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_DATASETS)


def _registered(name: str) -> tuple[DatasetLoader, DatasetDefaults]:
    if name not in _DATASETS:
        raise KTGError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    return _DATASETS[name]


def dataset_defaults(name: str) -> DatasetDefaults:
    """What dataset ``name`` suggests where the user gives no value."""
    return _registered(name)[1]


def load_dataset(name: str, root: str | Path | None = None, image_size: int | None = None, **options) -> Dataset:
    """Load dataset ``name`` from ``root`` (the folder the user unpacked; unused by built-in data).

    ``image_size`` is the side of the square images the model sees; ``None`` takes the dataset's default.
    The dataset's :attr:`~Dataset.source` records these arguments.
    """
    loader = _registered(name)[0]
    parameters = inspect.signature(loader).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        accepted = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise KTGError(f"dataset {name!r} has no option {unknown[0]!r}; its options are: "
                           f"{', '.join(accepted) or 'none'}")
    dataset = loader(Path(root) if root is not None else None, image_size, **options)
    dataset.source = DataSource(name, None if root is None else str(root), image_size, dict(options))
    return dataset


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


# Built-in datasets register themselves on import.
from ktg.data import cifar, digits, finegrained, synthetic  # noqa: E402,F401
