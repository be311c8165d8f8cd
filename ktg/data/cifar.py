"""CIFAR-10 and CIFAR-100 from torchvision's unpacked layout (the python pickles); nothing is downloaded.

The pickles already hold uint8 32×32 pixels, so no cache is needed; they are read by an unpickler that admits
only plain data and numpy arrays, so a batch file cannot run code. Training batches get the usual
4-pixel padded random crop and horizontal flip; evaluation batches are the images as they are.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ktg.data.images import Dataset, ImageSet
from ktg.data.metadata import check_file, checked_labels, locate, missing, require_every_class
from ktg.data.preprocess import Preprocessing
from ktg.data.transforms import BatchTransform, Identity, Normalize, RandomTranslate
from ktg.errors import KTGError

# Per-channel statistics of the training images, as commonly used (option normalize=True).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


# The only callables a CIFAR batch file names: numpy's array, dtype and scalar rebuilders, under the module
# name of the numpy that wrote the file (numpy.core before 2.0, numpy._core since). Anything else a pickle names
# could run code as it loads, so it is refused before it is looked up.
_REBUILD_ARRAY, _REBUILD_SCALAR = np.zeros(0).__reduce__()[0], np.float32(0).__reduce__()[0]
_ADMITTED = {
    **{(f"{package}.multiarray", name): rebuilder for package in ("numpy.core", "numpy._core")
       for name, rebuilder in [("_reconstruct", _REBUILD_ARRAY), ("scalar", _REBUILD_SCALAR)]},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, strings, bytes, numbers) and numpy arrays, scalars and dtypes, and
    nothing that could run code."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ADMITTED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds; "
                                         "unpickling it could run code, so it was not loaded") from None


def _read_pickle(path: Path, dataset: str, layout: str) -> dict:
    check_file(path, dataset, layout)
    try:
        with open(path, "rb") as file:
            content = _BatchUnpickler(file, encoding="latin1").load()
    except Exception as error:  # unpickling a damaged file can raise almost anything
        raise KTGError(f"{dataset}: cannot read {path}: {error}") from error
    if not isinstance(content, dict):
        raise KTGError(f"{dataset}: {path} should hold a dict, as CIFAR batches do, not a {type(content).__name__}")
    return content


def _split(dataset: str, folder: Path, files: list[str], label_key: str, classes: list[str], layout: str,
           split: str) -> ImageSet:
    """The images and labels of the pickled batches ``files`` (each ``data`` N×3072 uint8, R then G then B planes)."""
    pixels, labels = [], []
    for file in files:
        batch = _read_pickle(folder / file, dataset, layout)
        if "data" not in batch or label_key not in batch:
            raise KTGError(f"{dataset}: {folder / file} has no {'data' if 'data' not in batch else label_key!r} entry")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise KTGError(f"{dataset}: {folder / file} should hold N×3072 uint8 pixels, got {data.shape} {data.dtype}")
        batch_labels = checked_labels(dataset, batch[label_key], len(classes), str(folder / file), base=0)
        if len(batch_labels) != len(data):
            raise KTGError(f"{dataset}: {folder / file} holds {len(data)} images but {len(batch_labels)} labels")
        pixels.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return ImageSet(torch.from_numpy(np.concatenate(pixels)), torch.from_numpy(np.concatenate(labels)), classes,
                    f"{dataset}/{split}")


def _load_cifar(
    dataset: str, root: Path | None, image_size: int | None, *, folder_name: str, train_files: list[str],
    test_files: list[str], meta_file: str, names_key: str, label_key: str, normalize: bool,
    mean: tuple[float, ...], std: tuple[float, ...],
) -> Dataset:
    files = ", ".join(train_files + test_files + [meta_file])
    layout = f"<root>/{folder_name}/{{{files}}} (the python version's archive)"
    if image_size not in (None, 32):
        raise KTGError(f"{dataset}: images are 32×32; leave out --image-size or give 32, not {image_size}")
    found = locate(root, dataset, [meta_file], [folder_name])
    if found is None:
        raise missing(dataset, root / folder_name / meta_file, layout)
    folder = found[0]
    meta = _read_pickle(folder / meta_file, dataset, layout)
    if names_key not in meta:
        raise KTGError(f"{dataset}: {folder / meta_file} has no {names_key!r} entry")
    classes = [str(name) for name in meta[names_key]]
    train = _split(dataset, folder, train_files, label_key, classes, layout, "train")
    test = _split(dataset, folder, test_files, label_key, classes, layout, "test")
    require_every_class(dataset, train.labels, classes, f"the training batches in {folder}")
    train_transform: BatchTransform = RandomTranslate(pad=4, flip=True)
    if normalize:
        train_transform = Normalize(train_transform, mean, std)
    eval_transform = _cifar_preprocessing(normalize, mean, std).transform
    return Dataset(dataset, train, test, train_transform, eval_transform,
                   info={"root": str(folder), "train_images": len(train), "test_images": len(test)})


def _cifar_preprocessing(normalize: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocessing:
    """32×32 images as they are, normalised by ``mean`` and ``std`` if ``normalize``."""
    return Preprocessing(32, Normalize(Identity(), mean, std) if normalize else Identity())


def cifar10_preprocessing(image_size: int | None, *, normalize: bool = False, **options) -> Preprocessing:
    return _cifar_preprocessing(normalize, CIFAR10_MEAN, CIFAR10_STD)


def cifar100_preprocessing(image_size: int | None, *, normalize: bool = False, **options) -> Preprocessing:
    return _cifar_preprocessing(normalize, CIFAR100_MEAN, CIFAR100_STD)


def load_cifar10(
    root: Path | None, image_size: int | None, *, normalize: bool = False, cache_dir: str | Path | None = None
) -> Dataset:
    """CIFAR-10 (10 classes, 50,000 train / 10,000 test) from ``cifar-10-batches-py/``.

    ``cache_dir`` is accepted, like every photo dataset's, and unused: the pickles are read directly."""
    return _load_cifar(
        "cifar10", root, image_size, folder_name="cifar-10-batches-py",
        train_files=[f"data_batch_{i}" for i in range(1, 6)], test_files=["test_batch"], meta_file="batches.meta",
        names_key="label_names", label_key="labels", normalize=normalize, mean=CIFAR10_MEAN, std=CIFAR10_STD,
    )


def load_cifar100(
    root: Path | None, image_size: int | None, *, normalize: bool = False, cache_dir: str | Path | None = None
) -> Dataset:
    """CIFAR-100 (100 fine classes, 50,000 train / 10,000 test) from ``cifar-100-python/``; ``cache_dir`` as
    for CIFAR-10."""
    return _load_cifar(
        "cifar100", root, image_size, folder_name="cifar-100-python", train_files=["train"], test_files=["test"],
        meta_file="meta", names_key="fine_label_names", label_key="fine_labels", normalize=normalize,
        mean=CIFAR100_MEAN, std=CIFAR100_STD,
    )
