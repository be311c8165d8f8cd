"""Decode-once cache: every image of a split decoded, squashed to size×size and stored as one uint8 array.

A split is cached as ``<cache>/<dataset>/<split>-<size>px-<root hash>.npy`` (N×3×S×S uint8, memory-mapped
when read) with a JSON sidecar of the same stem holding the class names, labels, each image's original
(height, width), the file list and a fingerprint. The fingerprint covers the format version, dataset,
split, size, classes, and every file's relative path, byte size, modification time and label, so an edited
list, a replaced image or a new label makes the cache stale; it is then rebuilt. Keeping the original sizes
lets the crop transforms (:mod:`ktg.data.transforms`) choose boxes in original pixels, as torchvision does.
Squashing keeps S samples along both sides: along the shorter one that is what torchvision's Resize(S)
keeps, along the longer one it is fewer (by the aspect ratio, typically 4:3). At S = 256, Stanford Dogs
takes 2.4 GB (train) + 1.7 GB (test) of uint8, which the batch loader holds on the GPU.

Building is parallel (threads: PIL releases the GIL while decoding and resizing) and atomic: the array is
written to a temporary file and renamed, and the sidecar, written last, marks the cache complete. A lock
file serialises builders, so a second process that starts at the same time waits and then reuses the
first one's cache. A truncated array or a sidecar that disagrees with the files is detected and rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ktg.data import ImageSet
from ktg.errors import KTGError
from ktg.io import atomic_path, write_json

FORMAT_VERSION = 1


@dataclass
class ImageList:
    """The images of one split as a dataset's metadata lists them.

    Attributes:
        root: the folder the dataset was found in; ``files`` are relative to it.
        files: relative POSIX paths of the images.
        labels: 0-based class index of each file.
        classes: class names, index = label.
        source: the metadata file(s) the list comes from, named in error messages.
    """

    root: Path
    files: list[str]
    labels: list[int]
    classes: list[str]
    source: str


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$KTG_CACHE_DIR``, else ``~/.cache/ktg``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("KTG_CACHE_DIR") or Path.home() / ".cache" / "ktg").expanduser()


#: What PIL raises for a file it cannot decode: not an image (``UnidentifiedImageError`` is an ``OSError``),
#: truncated, damaged, or past its decompression-bomb limit.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def decode_image(image: Image.Image, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` as RGB squashed to size×size: (uint8 3×size×size, original (h, w)).

    A JPEG not yet loaded is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still covers size×size,
    which is several times faster for large photos; PIL's bilinear resize then antialiases the rest of the
    way. Grey, CMYK, RGBA and palette images are converted to RGB (an alpha channel is dropped).
    """
    original = (image.height, image.width)
    image.draft("RGB", (size, size))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the same colours; PIL warns when a palette's transparency goes in one step
    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1), original


def decode_resized(path: str | os.PathLike, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image` of the image file at ``path``; raises one of :data:`DECODE_ERRORS` if PIL cannot."""
    with Image.open(path) as image:
        return decode_image(image, size)


def cached_image_set(
    dataset: str, split: str, images: ImageList, size: int, cache_dir: str | os.PathLike | None = None
) -> ImageSet:
    """The split ``images`` of ``dataset`` squashed to size×size, from the cache (built first if needed).

    Raises :class:`KTGError` naming the file when an image is missing or cannot be decoded; nothing is
    left in the cache then.
    """
    if not images.files:
        raise KTGError(f"{dataset}: {images.source} lists no images for the {split} split")
    fingerprint = _fingerprint(dataset, split, images, size)
    root_key = hashlib.sha256(str(images.root.resolve()).encode()).hexdigest()[:8]
    stem = default_cache_dir(cache_dir) / dataset / f"{split}-{size}px-{root_key}"
    array_path, sidecar_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    cached = _read(array_path, sidecar_path, fingerprint)
    if cached is None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        with open(stem.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent builder finishes first; then its cache is reused
            cached = _read(array_path, sidecar_path, fingerprint)
            if cached is None:
                _build(dataset, split, images, size, fingerprint, array_path, sidecar_path)
                cached = _read(array_path, sidecar_path, fingerprint)
    if cached is None:
        raise RuntimeError(f"the cache {array_path} was written but does not read back")
    pixels, original_sizes = cached
    return ImageSet(
        images=pixels,
        labels=torch.tensor(images.labels, dtype=torch.int64),
        classes=images.classes,
        name=f"{dataset}/{split}",
        original_sizes=original_sizes,
    )


def _fingerprint(dataset: str, split: str, images: ImageList, size: int) -> str:
    """A hash of everything the cache's content depends on; stats every file, so a missing one is reported."""
    file_stats, missing = [], []
    for name in images.files:
        try:
            stat = (images.root / name).stat()
            file_stats.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            missing.append(name)
    if missing:
        raise KTGError(
            f"{dataset}: {len(missing)} image(s) listed in {images.source} are missing under {images.root}, "
            f"e.g. {images.root / missing[0]}; the list and the image folder must come from the same copy"
        )
    key = [FORMAT_VERSION, dataset, split, size, images.classes, images.files, images.labels, file_stats]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def _read(array_path: Path, sidecar_path: Path, fingerprint: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(pixels N×3×S×S uint8, memory-mapped; original sizes N×2) if a complete cache with this fingerprint
    exists, else ``None`` (missing, stale, truncated or unreadable)."""
    try:
        meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
        if meta["fingerprint"] != fingerprint:
            return None
        # Copy-on-write mapping: pages are shared between processes, and torch gets a writable array. A
        # truncated file fails here, as its header promises more bytes than it has.
        pixels = np.load(array_path, mmap_mode="c", allow_pickle=False)
        original_sizes = torch.tensor(meta["original_sizes"], dtype=torch.int64).view(-1, 2)
        complete = pixels.dtype == np.uint8 and list(pixels.shape) == meta["shape"] == [len(original_sizes), *pixels.shape[1:]]
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):  # missing, unreadable or not ours
        return None
    return (torch.from_numpy(pixels), original_sizes) if complete else None


def _build(
    dataset: str, split: str, images: ImageList, size: int, fingerprint: str, array_path: Path, sidecar_path: Path
) -> None:
    """Decode every image into a new array file, then write the sidecar that marks it complete."""
    sidecar_path.unlink(missing_ok=True)  # the array is about to change: until the new sidecar, no cache
    for leftover in array_path.parent.glob(f".{array_path.name}.*.tmp"):
        leftover.unlink()  # from a builder that was killed; we hold the lock, so nobody is writing it
    shape = (len(images.files), 3, size, size)
    original_sizes = np.zeros((shape[0], 2), dtype=np.int64)
    with atomic_path(array_path) as tmp:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)

        def decode(index: int) -> None:
            path = images.root / images.files[index]
            try:
                pixels[index], original_sizes[index] = decode_resized(path, size)
            except DECODE_ERRORS as error:
                raise KTGError(
                    f"{dataset}: cannot decode {path} ({split} split, listed in {images.source}): {error}; "
                    "replace the file with a good copy"
                ) from error

        pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        try:
            progress = tqdm(total=shape[0], desc=f"caching {dataset}/{split} at {size}px", unit="img", mininterval=1)
            with progress:
                for _ in pool.map(decode, range(shape[0])):
                    progress.update()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on an error, no thread may write after the file is gone
        pixels.flush()
        del pixels
    write_json(sidecar_path, {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "split": split,
        "size": size,
        "fingerprint": fingerprint,
        "shape": list(shape),
        "root": str(images.root),
        "classes": images.classes,
        "labels": images.labels,
        "original_sizes": original_sizes.tolist(),
        "files": images.files,
    })
