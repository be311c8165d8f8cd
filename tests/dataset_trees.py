"""Tiny copies of each dataset in its authors' exact format, for the data tests (nothing is downloaded).

Every writer returns the folder to pass as ``--data-root`` and puts ``per_class`` train and ``per_class_test``
test images of ``num_classes`` classes there: small JPEGs of varied sizes and aspect ratios whose colour
depends on the class, so that a model can learn something in an epoch.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def write_jpeg(path: Path, label: int, index: int) -> tuple[int, int]:
    """A class-coloured JPEG of a size that varies with ``index``; returns its (height, width)."""
    rng = np.random.default_rng(1000 * label + index)
    height, width = 40 + 7 * (index % 5), 48 + 11 * ((index + label) % 4)
    base = np.array([(label * 67) % 256, (label * 131 + 80) % 256, (label * 29 + 160) % 256], dtype=np.float64)
    pixels = base + rng.normal(0, 30, (height, width, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return height, width


def cell(strings: list[str], shape: tuple[int, int]) -> np.ndarray:
    """A MATLAB cell array of strings (an object array; savemat would turn a list into a char matrix)."""
    array = np.empty(len(strings), dtype=object)
    array[:] = strings
    return array.reshape(shape)


def struct_array(records: list[dict]) -> np.ndarray:
    """A 1×N MATLAB struct array with the records' fields."""
    fields = list(records[0])
    array = np.zeros((1, len(records)), dtype=[(field, object) for field in fields])
    for i, record in enumerate(records):
        array[0, i] = tuple(record[field] for field in fields)
    return array


def splits(num_classes: int, per_class: int, per_class_test: int) -> list[tuple[int, int, bool]]:
    """(label, index within class, is_train) of every image, classes interleaved as in the real lists."""
    return [(label, i, i < per_class) for label in range(num_classes) for i in range(per_class + per_class_test)]


def dog_folder(label: int) -> str:
    return f"n020{label:05d}-Breed_{label}"


def write_dogs(root: Path, num_classes: int = 3, per_class: int = 3, per_class_test: int = 2) -> Path:
    """Stanford Dogs: ``Images/<wnid>-<breed>/<wnid>_<n>.jpg`` and ``lists/{train,test}_list.mat`` (MATLAB v5:
    cells ``file_list`` and ``annotation_list``, ``labels`` uint8 1-based, all N×1)."""
    lists: dict[bool, list[tuple[str, int]]] = {True: [], False: []}
    for label, i, is_train in splits(num_classes, per_class, per_class_test):
        folder = dog_folder(label)
        file = f"{folder}/{folder.split('-')[0]}_{i}.jpg"
        write_jpeg(root / "Images" / file, label, i)
        lists[is_train].append((file, label + 1))
    (root / "lists").mkdir(parents=True, exist_ok=True)
    for is_train, entries in lists.items():
        write_dogs_list(root / "lists" / f"{'train' if is_train else 'test'}_list.mat", entries)
    return root


def write_dogs_list(path: Path, entries: list[tuple[str, int]]) -> None:
    """One Dogs list from (file under Images/, 1-based label) pairs."""
    files = [file for file, _ in entries]
    scipy.io.savemat(path, {
        "file_list": cell(files, (len(files), 1)),
        "annotation_list": cell([file.removesuffix(".jpg") for file in files], (len(files), 1)),
        "labels": np.array([[label] for _, label in entries], dtype=np.uint8),
    })


def write_cub(root: Path, num_classes: int = 3, per_class: int = 3, per_class_test: int = 2) -> Path:
    """CUB-200-2011: ``CUB_200_2011/`` with its five text lists and ``images/<id>.<name>/*.jpg``; returns ``root``
    (the folder that contains ``CUB_200_2011``)."""
    folder = root / "CUB_200_2011"
    images, labels, split, boxes = [], [], [], []
    for image_id, (label, i, is_train) in enumerate(splits(num_classes, per_class, per_class_test), 1):
        file = f"{label + 1:03d}.Bird_{label}/Bird_{label}_{i:04d}_{image_id}.jpg"
        height, width = write_jpeg(folder / "images" / file, label, i)
        images.append(f"{image_id} {file}")
        labels.append(f"{image_id} {label + 1}")
        split.append(f"{image_id} {int(is_train)}")
        boxes.append(f"{image_id} 1.0 2.0 {width - 3}.0 {height - 4}.0")
    classes = [f"{label + 1} {label + 1:03d}.Bird_{label}" for label in range(num_classes)]
    for name, lines in [("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("classes.txt", classes), ("bounding_boxes.txt", boxes)]:
        (folder / name).write_text("\n".join(lines) + "\n")
    return root


def car_class_names(num_classes: int) -> np.ndarray:
    return cell([f"Maker Model {label} 2012" for label in range(num_classes)], (1, num_classes))


def car_record(name_field: str, name: str, label: int, size: tuple[int, int], **extra: int) -> dict:
    height, width = size
    return {"bbox_x1": np.uint16(1), "bbox_y1": np.uint16(2), "bbox_x2": np.uint16(width - 1),
            "bbox_y2": np.uint16(height - 1), "class": np.uint8(label + 1), name_field: name, **extra}


def write_cars_torchvision(root: Path, num_classes: int = 3, per_class: int = 3, per_class_test: int = 2) -> Path:
    """Stanford Cars in torchvision's layout: ``stanford_cars/{cars_train, cars_test, devkit/cars_meta.mat,
    devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat}``; returns ``root``."""
    folder = root / "stanford_cars"
    annotations: dict[bool, list[dict]] = {True: [], False: []}
    for label, i, is_train in splits(num_classes, per_class, per_class_test):
        fname = f"{len(annotations[is_train]) + 1:05d}.jpg"
        size = write_jpeg(folder / ("cars_train" if is_train else "cars_test") / fname, label, i)
        annotations[is_train].append(car_record("fname", fname, label, size))
    (folder / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": car_class_names(num_classes)})
    scipy.io.savemat(folder / "devkit" / "cars_train_annos.mat", {"annotations": struct_array(annotations[True])})
    scipy.io.savemat(folder / "cars_test_annos_withlabels.mat", {"annotations": struct_array(annotations[False])})
    return root


def write_cars_all_in_one(root: Path, num_classes: int = 3, per_class: int = 3, per_class_test: int = 2) -> Path:
    """Stanford Cars all-in-one: ``car_ims/<n>.jpg`` and ``cars_annos.mat`` (``annotations`` with
    ``relative_im_path``, boxes, ``class``, ``test``; ``class_names``)."""
    records = []
    for n, (label, i, is_train) in enumerate(splits(num_classes, per_class, per_class_test), 1):
        path = f"car_ims/{n:06d}.jpg"
        size = write_jpeg(root / path, label, i)
        records.append(car_record("relative_im_path", path, label, size, test=np.uint8(not is_train)))
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": struct_array(records),
                                               "class_names": car_class_names(num_classes)})
    return root


class Python2Pickler(pickle._Pickler):
    """Pickles as Python 2 with numpy 1 did for the CIFAR archives: protocol 2, strings and array bytes as
    Python 2 ``str`` (BINSTRING), numpy's rebuilders under ``numpy.core.multiarray``."""

    REBUILDERS = (np.zeros(0).__reduce__()[0], np.float32(0).__reduce__()[0])

    def __init__(self, file) -> None:
        super().__init__(file, protocol=2)

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save_bytes(obj.encode("latin1"))

    def save_global(self, obj, name=None) -> None:
        if obj in self.REBUILDERS:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n" + obj.__name__.encode() + b"\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}


def write_cifar(root: Path, classes: int = 10, per_class: int = 4, per_class_test: int = 2) -> Path:
    """CIFAR-10 (``classes=10``: ``cifar-10-batches-py``) or CIFAR-100 (``classes=100``: ``cifar-100-python``)
    pickles as the python version of the archive has them (Python 2's, see ``Python2Pickler``); returns ``root``."""
    rng = np.random.default_rng(classes)

    def batch(count: int) -> tuple[np.ndarray, list[int]]:
        labels = [label for label in range(classes) for _ in range(count)]
        return rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), labels

    def dump(path: Path, content: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as file:
            Python2Pickler(file).dump(content)

    names = [f"thing_{label}" for label in range(classes)]
    if classes == 10:
        folder = root / "cifar-10-batches-py"
        dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 10000, "num_vis": 3072})
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data, labels = batch(per_class_test if name == "test_batch" else per_class)
            dump(folder / name, {"batch_label": name, "labels": labels, "data": data, "filenames": []})
    else:
        folder = root / "cifar-100-python"
        dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": names[:20]})
        for name, count in [("train", per_class), ("test", per_class_test)]:
            data, labels = batch(count)
            dump(folder / name, {"filenames": [], "batch_label": name, "fine_labels": labels,
                                 "coarse_labels": [label // 5 for label in labels], "data": data})
    return root


def write_imagefolder(root: Path, num_classes: int = 3, per_class: int = 3, per_class_test: int = 2) -> Path:
    """``train/<class>/*.jpg`` and ``test/<class>/*.jpg``; returns ``root``."""
    for label, i, is_train in splits(num_classes, per_class, per_class_test):
        write_jpeg(root / ("train" if is_train else "test") / f"class_{label}" / f"{i}.jpg", label, i)
    return root


WRITERS = {
    "stanford_dogs": write_dogs,
    "cub200": write_cub,
    "stanford_cars": write_cars_torchvision,
    "imagefolder": write_imagefolder,
}
