"""Decode-once cache: every photo of a split decoded once, kept at (nearly) its own resolution, in one file.

A split is cached as ``<cache>/<dataset>/<split>-<side>px-<root hash>.npy``, a flat uint8 array of every
image H×W×3 one after another (memory-mapped when read, see :class:`~ktg.data.packed.PackedImages`), with
a JSON sidecar of the same stem holding the class names, labels, each image's original and stored
(height, width), the file list and a fingerprint. The fingerprint covers the format version, dataset,
split, side, classes, and every file's relative path, byte size, modification time and label, so an
edited list, a replaced image or a new label makes the cache stale; it is then rebuilt.

A photo is stored as it is when its shorter side is at most ``side`` pixels, and reduced (aspect kept) to
``side`` on the shorter side otherwise; it is never enlarged. The default ``side`` is the transforms'
:func:`~ktg.data.transforms.detail_side` (903 for the reference recipe at 224): from there even the
smallest random crop spans 224 stored pixels, so the crops keep the detail torchvision's crops of the
original file have. Keeping the original sizes lets the crop transforms (:mod:`ktg.data.transforms`) choose
boxes in original pixels, as torchvision does.

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
from typing import Callable, TypeVar

import numpy as np
import torch
from PIL import Image

from ktg.data.images import ImageSet
from ktg.data.packed import PackedImages
from ktg.errors import KTGError
from ktg.io import atomic_path, write_json
from ktg.progress import Progress

T = TypeVar("T")
FORMAT_VERSION = 3  # 3: 16-bit images scaled, not clipped; 2: photos at their own size, packed (1 squashed them)


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


#: Largest level of the integer and float modes (``I;16``, ``I;16B``, …, ``I``, ``F``): Pillow reads 16-bit PNG and
#: TIFF files into them, and RGB conversion would clip their levels at 255 (a 16-bit image turns white).
DEEP_MAX = 65535


def _rgb(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` as 8-bit RGB; a JPEG not yet loaded is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that
    still covers width×height, which is several times faster for large photos.

    Every Pillow mode is converted without clipping: grey, CMYK, YCbCr, LAB, HSV and palette images as Pillow
    converts them; 16-bit, 32-bit integer and float grey (``I;16…``, ``I``, ``F``) scaled from 0 … 65535 to
    0 … 255 (levels outside that range clipped, NaN black); an alpha channel, straight or premultiplied (``La``,
    ``RGBa``), is dropped, and a palette's transparent colour with it."""
    image.draft("RGB", (width, height))
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        levels = np.clip(np.nan_to_num(np.asarray(image), nan=0.0, posinf=DEEP_MAX, neginf=0.0), 0, DEEP_MAX)
        image = Image.fromarray(np.round(levels.astype(np.float64) * (255 / DEEP_MAX)).astype(np.uint8))
    elif image.mode == "La":  # Pillow converts premultiplied grey to nothing; its grey band is the colour on black
        image = image.getchannel("L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # the same colours; PIL warns when a palette's transparency goes in one step
    return image.convert("RGB")


def decode_image(image: Image.Image, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` as RGB squashed to size×size (PIL's bilinear resize): (uint8 3×size×size, original (h, w)).
    How the in-memory datasets store a new image; photos keep their shape (:func:`decode_photo`)."""
    original = (image.height, image.width)
    rgb = _rgb(image, size, size).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1), original


def decode_resized(path: str | os.PathLike, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image` of the image file at ``path``; raises one of :data:`DECODE_ERRORS` if PIL cannot."""
    with Image.open(path) as image:
        return decode_image(image, size)


def stored_size(original: tuple[int, int], side: int) -> tuple[int, int]:
    """(height, width) at which a photo of ``original`` (height, width) is stored: as it is if its shorter side
    is at most ``side``, else reduced to ``side`` on the shorter side, aspect ratio kept."""
    height, width = original
    scale = min(1.0, side / min(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def decode_photo(image: Image.Image, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``image`` as RGB at its :func:`stored_size`: (uint8 H×W×3, original (h, w)), as the cache stores photos.

    Where the photo is reduced, PIL's Lanczos filter does it. The crops resample once more, so the sharpest
    of PIL's filters here keeps the pair as sharp as torchvision's one bilinear pass on the original (on a
    1411-pixel photo, detail 0.99 of torchvision's against 0.96 with bilinear).
    """
    original = (image.height, image.width)
    height, width = stored_size(original, side)
    rgb = _rgb(image, width, height)
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(rgb), original


def decode_photo_file(path: str | os.PathLike, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_photo` of the image file at ``path``; raises one of :data:`DECODE_ERRORS` if PIL cannot."""
    with Image.open(path) as image:
        return decode_photo(image, side)


def cached_image_set(
    dataset: str, split: str, images: ImageList, side: int, cache_dir: str | os.PathLike | None = None
) -> ImageSet:
    """The split ``images`` of ``dataset`` stored at most ``side`` pixels on the shorter side (see
    :func:`stored_size`), from the cache (built first if needed), as :class:`~ktg.data.packed.PackedImages`.

    Raises :class:`KTGError` naming the file when an image is missing or cannot be decoded; nothing is
    left in the cache then.
    """
    if not images.files:
        raise KTGError(f"{dataset}: {images.source} lists no images for the {split} split")
    fingerprint = _fingerprint(dataset, split, images, side)
    root_key = hashlib.sha256(str(images.root.resolve()).encode()).hexdigest()[:8]
    stem = default_cache_dir(cache_dir) / dataset / f"{split}-{side}px-{root_key}"
    array_path, sidecar_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    cached = _read(array_path, sidecar_path, fingerprint)
    if cached is None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        with open(stem.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent builder finishes first; then its cache is reused
            cached = _read(array_path, sidecar_path, fingerprint)
            if cached is None:
                _build(dataset, split, images, side, fingerprint, array_path, sidecar_path)
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
        files=tuple(images.files),
    )


def _fingerprint(dataset: str, split: str, images: ImageList, side: int) -> str:
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
    key = [FORMAT_VERSION, dataset, split, side, images.classes, images.files, images.labels, file_stats]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def _read(array_path: Path, sidecar_path: Path, fingerprint: str) -> tuple[PackedImages, torch.Tensor] | None:
    """(the packed images, memory-mapped; original sizes N×2) if a complete cache with this fingerprint
    exists, else ``None`` (missing, stale, truncated or unreadable)."""
    try:
        meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
        if meta["fingerprint"] != fingerprint:
            return None
        # A read-only mapping: the pages are the operating system's page cache, shared by every process that
        # maps the file. A truncated file fails here, as its header promises more bytes than it has.
        pixels = np.load(array_path, mmap_mode="r", allow_pickle=False)
        original_sizes = torch.tensor(meta["original_sizes"], dtype=torch.int64).view(-1, 2)
        packed = PackedImages(pixels, torch.tensor(meta["stored_sizes"], dtype=torch.int64).view(-1, 2))
        complete = len(packed) == len(original_sizes) and packed.nbytes == len(pixels)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):  # missing, unreadable or not ours
        return None
    return (packed, original_sizes) if complete else None


def _build(
    dataset: str, split: str, images: ImageList, side: int, fingerprint: str, array_path: Path, sidecar_path: Path
) -> None:
    """Read every image's size, decode every image into a new array file, then write the sidecar that marks it
    complete."""
    sidecar_path.unlink(missing_ok=True)  # the array is about to change: until the new sidecar, no cache
    for leftover in array_path.parent.glob(f".{array_path.name}.*.tmp"):
        leftover.unlink()  # from a builder that was killed; we hold the lock, so nobody is writing it

    def undecodable(path: Path, error: Exception) -> KTGError:
        return KTGError(f"{dataset}: cannot decode {path} ({split} split, listed in {images.source}): {error}; "
                        "replace the file with a good copy")

    def original_size(index: int) -> tuple[int, int]:
        path = images.root / images.files[index]
        try:
            with Image.open(path) as image:  # reads the header only
                return image.height, image.width
        except DECODE_ERRORS as error:
            raise undecodable(path, error) from error

    count = len(images.files)
    original_sizes = _parallel_map(original_size, count)
    stored_sizes = [stored_size(original, side) for original in original_sizes]
    lengths = [3 * height * width for height, width in stored_sizes]
    offsets = np.cumsum([0, *lengths[:-1]]).tolist()
    with atomic_path(array_path) as tmp:
        pixels = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(sum(lengths),))

        def decode(index: int) -> None:
            path = images.root / images.files[index]
            try:
                image, _ = decode_photo_file(path, side)
            except DECODE_ERRORS as error:
                raise undecodable(path, error) from error
            if image.shape[:2] != stored_sizes[index]:  # the file was replaced between the two reads
                raise undecodable(path, ValueError(f"its size changed to {image.shape[:2]} while caching"))
            pixels[offsets[index]: offsets[index] + lengths[index]] = image.reshape(-1)

        what = f"caching {dataset}/{split} at ≤{side}px"
        with Progress(count, desc=what, unit="img") as progress:
            progress.announce(f"{what}: {count} images")
            _parallel_map(decode, count, progress.advance)
        pixels.flush()
    write_json(sidecar_path, {
        "format": FORMAT_VERSION,
        "dataset": dataset,
        "split": split,
        "side": side,
        "fingerprint": fingerprint,
        "root": str(images.root),
        "classes": images.classes,
        "labels": images.labels,
        "original_sizes": [list(size) for size in original_sizes],
        "stored_sizes": [list(size) for size in stored_sizes],
        "files": images.files,
    })


def _parallel_map(function: Callable[[int], T], count: int, done: Callable[[], object] | None = None) -> list[T]:
    """[function(0), …, function(count - 1)] computed by a thread per core, calling ``done`` after each."""
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
    results = []
    try:
        for result in pool.map(function, range(count)):
            results.append(result)
            if done is not None:
                done()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, no thread may write after the file is gone
    return results
