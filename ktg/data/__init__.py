"""Datasets: a registry of what each dataset is, the typed source of a run's data, and loading by name.

A dataset is one :class:`DatasetRecord`: its loader and its preprocessing for new images, named as
``"module:function"`` and imported when a dataset is loaded, and the values it suggests where the user gives
none (:class:`DatasetDefaults`). This module imports no framework, so the command line can list the datasets,
check a name and apply a dataset's suggestions before it loads torch (the pattern of :mod:`ktg.registry`).
A new dataset registers its loader with :func:`register_dataset`.

The images themselves live in :mod:`ktg.data.images` (:class:`ImageSet`, :class:`Dataset`,
:func:`stratified_split`, which import torch); they are importable from here too, imported on first use.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ktg.config import TrainConfig
from ktg.errors import KTGError
from ktg.registry import FunctionRef, add_record, lazy_attributes, resolve

if TYPE_CHECKING:
    from ktg.data.images import Dataset, ImageSet, stratified_split  # noqa: F401
    from ktg.data.preprocess import Preprocessing

#: Public names defined in :mod:`ktg.data.images`, imported from there when first used.
__getattr__, __dir__ = lazy_attributes(__name__, dict.fromkeys(("ImageSet", "Dataset", "stratified_split"),
                                                               "ktg.data.images"))


@dataclass(frozen=True)
class DatasetDefaults:
    """What a dataset suggests where the user gives no value; applied by the caller (the command line), so the
    trainer sees only final values and a run's files say exactly what was trained.

    Attributes:
        node_options: model options of every node that sets none itself (e.g. ``base_width`` for data that
            narrow models learn).
        train: :class:`~ktg.config.TrainConfig` fields (e.g. ``batch_size``, ``lr``, ``epochs``).
        search_holdout: the fraction of the training split a search holds out to score its graphs when the user
            gives no ``--holdout`` (the public code's splits, ``docs/method.md#search``).
    """

    node_options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    search_holdout: float = 0.5

    def __post_init__(self) -> None:
        unknown = sorted(set(self.train) - {f.name for f in dataclasses.fields(TrainConfig)})
        if unknown:
            raise ValueError(f"dataset defaults name training options TrainConfig does not have: {unknown}")
        if not 0 < self.search_holdout < 1:
            raise ValueError(f"a dataset's search_holdout must lie strictly between 0 and 1, got {self.search_holdout}")

    def with_node_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` node options over the suggested ones."""
        return {**self.node_options, **given}

    def with_train(self, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` TrainConfig fields over the suggested ones."""
        return {**self.train, **given}


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset ktg can load.

    Attributes:
        name: the name ``--dataset`` and config.json use.
        loader: ``fn(root: Path | None, image_size: int | None, **options) -> Dataset``, as ``"module:function"``
            or a callable; its keyword-only parameters are the dataset's options.
        defaults: what the dataset suggests where the user gives no value.
        preprocessing: ``fn(image_size: int | None, **options) -> Preprocessing``, the evaluation pipeline of new
            images from the options saved with a run (it reads those that shape the pipeline and ignores where
            the data lie or how many there are), as ``"module:function"`` or a callable; None if the dataset has
            none (see :mod:`ktg.data.preprocess`).
        reads_root: whether the loader reads ``root``; a root given to a dataset that reads none (built-in data)
            is an error, not a folder recorded with a run that never looked at it.
    """

    name: str
    loader: FunctionRef
    defaults: DatasetDefaults = field(default_factory=DatasetDefaults)
    preprocessing: FunctionRef | None = None
    reads_root: bool = True


_DATASETS: dict[str, DatasetRecord] = {}


def _register(record: DatasetRecord) -> DatasetRecord:
    return add_record(_DATASETS, record, "dataset")


DatasetLoader = Callable[..., "Dataset"]


def register_dataset(
    name: str, *, defaults: DatasetDefaults | None = None, preprocessing: Callable[..., Preprocessing] | None = None
) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader ``fn(root: Path | None, image_size: int | None, **options) -> Dataset`` by name, with
    the values it suggests where the user gives none (:class:`DatasetDefaults`; none by default) and its
    preprocessing of new images (see :class:`DatasetRecord`; without one, ``ktg predict`` cannot use its runs)."""

    def decorator(fn: DatasetLoader) -> DatasetLoader:
        _register(DatasetRecord(name, fn, defaults or DatasetDefaults(), preprocessing))
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(_DATASETS)


def dataset_record(name: str) -> DatasetRecord:
    """The record of dataset ``name``; KTGError naming the registered ones if there is none."""
    if name not in _DATASETS:
        raise KTGError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}")
    return _DATASETS[name]


def dataset_defaults(name: str) -> DatasetDefaults:
    """What dataset ``name`` suggests where the user gives no value."""
    return dataset_record(name).defaults


#: Options every dataset takes, applied by :func:`load_dataset` after its loader: ``train_subset`` trains on a
#: stratified part of the official training split, a fraction in (0, 1) or a number of images (rounded per
#: class), drawn with ``train_subset_seed`` (default 0); the test split is untouched. A small training set is
#: where ensembles and knowledge transfer are not at the ceiling (``experiments/miniature.py``).
COMMON_OPTIONS = ("train_subset", "train_subset_seed")


_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def _of_kind(value: Any, kind: type) -> bool:
    """Whether ``value`` is of ``kind`` as a JSON value would be: bool only for bool, an int also for float."""
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def load_dataset(name: str, root: str | Path | None = None, image_size: int | None = None, **options) -> Dataset:
    """Load dataset ``name`` from ``root`` (the folder the user unpacked; unused by built-in data).

    ``image_size`` is the side of the square images the model sees; ``None`` takes the dataset's default.
    ``options`` are the loader's keyword options and the :data:`COMMON_OPTIONS`. The dataset's
    :attr:`~Dataset.source` records these arguments.
    """
    loader = resolve(dataset_record(name).loader)
    own = {key: value for key, value in options.items() if key not in COMMON_OPTIONS}
    parameters = inspect.signature(loader).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        accepted = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
        unknown = sorted(set(own) - set(accepted))
        if unknown:
            raise KTGError(f"dataset {name!r} has no option {unknown[0]!r}; its options are: "
                           f"{', '.join([*accepted, *COMMON_OPTIONS])}")
    for parameter in parameters:  # an option's type is its default's: seed=x must not reach torch.manual_seed
        kind = type(parameter.default)
        if parameter.name in own and kind in (bool, int, float, str) and not _of_kind(own[parameter.name], kind):
            raise KTGError(f"the dataset option {parameter.name} of {name!r} must be {_KIND_NAMES[kind]}, got "
                           f"{own[parameter.name]!r}")
    dataset = loader(Path(root) if root is not None else None, image_size, **own)
    if "train_subset" in options:
        from ktg.data.images import training_subset

        dataset.train = training_subset(dataset.train, options["train_subset"], options.get("train_subset_seed", 0))
    elif "train_subset_seed" in options:
        raise KTGError("the dataset option train_subset_seed needs train_subset (the part of the training split "
                       "to keep)")
    if len(dataset.train.classes) < 2:
        raise KTGError(f"dataset {name!r}{'' if root is None else f' in {root}'} has {len(dataset.train.classes)} "
                       f"class(es) ({', '.join(dataset.train.classes) or 'none'}); a classifier needs at least two, "
                       "or every answer is right")
    dataset.source = DataSource(name, None if root is None else str(root), image_size, dict(options))
    return dataset


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

    def __post_init__(self) -> None:
        size = self.image_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise KTGError(f"--image-size must be at least 1, got {size!r}")

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
        factory = dataset_record(self.name).preprocessing
        if factory is None:
            known = sorted(name for name, record in _DATASETS.items() if record.preprocessing is not None)
            raise KTGError(f"dataset {self.name!r} has no preprocessing for new images; known: {', '.join(known)}")
        own = {key: value for key, value in self.options.items() if key not in COMMON_OPTIONS}
        return resolve(factory)(self.image_size, **own)

    @property
    def defaults(self) -> DatasetDefaults:
        """What the dataset suggests where the user gives no value (see :class:`DatasetDefaults`)."""
        return dataset_defaults(self.name)


# -- the built-in datasets ------------------------------------------------------------------------------------

for _name in ("cifar10", "cifar100"):
    _register(DatasetRecord(_name, f"ktg.data.cifar:load_{_name}", DatasetDefaults(search_holdout=0.2),
                            preprocessing=f"ktg.data.cifar:{_name}_preprocessing"))
# Digits: short runs that learn on two CPU cores. Nodes of base width 8 (a quarter of ResNet-20's compute;
# --width 16 restores the standard CIFAR width). Batch 4 at learning rate 0.01: an epoch is 336 small steps, so a
# node learns within its first epoch and BatchNorm's running statistics (an average over the last ~10 batches)
# keep up with the weights; at batch 64 and 0.1 an epoch was 21 large steps, and runs of a few epochs, or search
# trials after their first, scored near chance. With these values `ktg train --graph dml --dataset digits --epochs 3`
# reached 98.2 % ensemble accuracy on the test split on two CPU threads, 99.1 % on one (71.1 % and 57.6 % after
# the first epoch); five epochs take about a minute and a half of one CPU core.
_register(DatasetRecord("digits", "ktg.data.digits:load_digits",
                        DatasetDefaults(node_options={"base_width": 8},
                                        train={"batch_size": 4, "lr": 0.01, "epochs": 5}),
                        preprocessing="ktg.data.digits:digits_preprocessing", reads_root=False))
_register(DatasetRecord("synthetic", "ktg.data.synthetic:load_synthetic",
                        preprocessing="ktg.data.synthetic:synthetic_preprocessing", reads_root=False))
for _name in ("stanford_dogs", "cub200", "stanford_cars", "imagefolder"):
    _register(DatasetRecord(_name, f"ktg.data.finegrained:load_{_name}",
                            preprocessing=f"ktg.data.finegrained:{_name}_preprocessing"))
