"""Reading datasets' own metadata: finding the unpacked folder, MATLAB and text lists, and checking labels.

Every problem a user can fix (a wrong ``--data-root``, an unreadable list, a label out of range, a class
without images, lists that contradict each other) is raised as a :class:`~ktg.errors.KTGError` that names
the dataset, the file, and how the dataset is usually laid out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.io
import torch

from ktg.data.cache import ImageList
from ktg.errors import KTGError


def require_root(root: Path | None, dataset: str) -> Path:
    """``root``, or an error asking for ``--data-root`` when it is ``None``."""
    if root is None:
        raise KTGError(f"{dataset}: give --data-root, the folder you unpacked the dataset into")
    return root


def locate(root: Path | None, dataset: str, markers: Sequence[str],
           subfolders: Sequence[str]) -> tuple[Path, str] | None:
    """(folder, marker) for the first of ``root`` and ``root/<subfolder>`` holding one of the ``markers``
    (relative file paths), trying markers in order; ``None`` if there is none."""
    root = require_root(root, dataset)
    for marker in markers:
        for folder in [root, *(root / sub for sub in subfolders)]:
            if (folder / marker).is_file():
                return folder, marker
    return None


def missing(dataset: str, expected: Path, layout: str) -> KTGError:
    """The error for a file or folder that is not where a dataset's layout puts it."""
    return KTGError(f"{dataset}: expected {expected}, which does not exist; the dataset is usually laid out as "
                    f"{layout}")


def check_file(path: Path, dataset: str, layout: str) -> Path:
    """``path`` if it is a file, else a :func:`missing` error."""
    if not path.is_file():
        raise missing(dataset, path, layout)
    return path


def load_mat(path: Path, dataset: str, layout: str, keys: Sequence[str]) -> dict[str, Any]:
    """The variables ``keys`` of the MATLAB file ``path`` (squeezed: cells of strings become arrays of str)."""
    check_file(path, dataset, layout)
    try:
        content = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as error:  # scipy raises several unrelated types for a damaged file
        raise KTGError(f"{dataset}: cannot read the MATLAB file {path}: {error}") from error
    absent = [key for key in keys if key not in content]
    if absent:
        present = ", ".join(sorted(key for key in content if not key.startswith("__")))
        raise KTGError(f"{dataset}: {path} has no variable {absent[0]!r} (it has: {present})")
    return content


def mat_field(struct: Any, field: str, path: Path, dataset: str) -> np.ndarray:
    """The values of ``field`` over a MATLAB struct array, as a 1-D object array."""
    struct = np.atleast_1d(struct)
    if struct.dtype.names is None or field not in struct.dtype.names:
        raise KTGError(f"{dataset}: the struct array in {path} has no field {field!r} (fields: {struct.dtype.names})")
    return struct[field].ravel()


def strings(values: Any) -> list[str]:
    """A MATLAB cell array of strings or char matrix as Python strings (char rows are space-padded)."""
    return [str(value).strip() for value in np.atleast_1d(values).ravel()]


def integers(values: Any, what: str, source: Path | str, dataset: str) -> np.ndarray:
    """Whole numbers from a MATLAB array or text column, as int64; anything else is an error naming ``source``."""
    try:
        numbers = np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
    except (TypeError, ValueError) as error:
        raise KTGError(f"{dataset}: {what} in {source} are not numbers: {error}") from error
    if not np.all(np.isfinite(numbers) & (numbers == np.round(numbers))):
        raise KTGError(f"{dataset}: {what} in {source} must be whole numbers")
    return numbers.astype(np.int64)


def flags(values: Any, what: str, source: Path | str, dataset: str) -> np.ndarray:
    """A column of 0/1 flags (train/test membership) as a bool array; other values are an error."""
    numbers = integers(values, what, source, dataset)
    if not np.isin(numbers, (0, 1)).all():
        raise KTGError(f"{dataset}: {what} in {source} must be 0 or 1, found {numbers[~np.isin(numbers, (0, 1))][0]}")
    return numbers == 1


def read_table(path: Path, dataset: str, layout: str) -> dict[int, str]:
    """A text list of ``<id> <value>`` lines (CUB's format) as {id: value}; duplicate ids are an error."""
    table: dict[int, str] = {}
    for number, line in enumerate(check_file(path, dataset, layout).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise KTGError(f"{dataset}: line {number} of {path} should read '<id> <value>', got {line!r}")
        key = int(parts[0])
        if key in table:
            raise KTGError(f"{dataset}: id {key} appears twice in {path} (line {number})")
        table[key] = parts[1].strip()
    return table


def checked_labels(
    dataset: str, labels: Any, num_classes: int, source: str, *, base: int, names: Sequence[str] | None = None
) -> np.ndarray:
    """``labels`` numbered from ``base`` (0 or 1) as 0-based int64, each checked to lie among ``num_classes``;
    the error names the item (``names[i]``, else its position) and the list it came from."""
    labels = integers(labels, "labels", source, dataset)
    outside = np.flatnonzero((labels < base) | (labels >= num_classes + base))
    if outside.size:
        first = outside[0]
        item = names[first] if names is not None else f"entry {first}"
        raise KTGError(
            f"{dataset}: {source} gives label {labels[first]} to {item}, outside {base}..{num_classes - 1 + base} "
            f"({num_classes} classes, numbered from {base}); {outside.size} label(s) are out of range"
        )
    return labels - base


def image_list(
    dataset: str,
    root: Path,
    files: Sequence[str],
    labels: Any,
    classes: Sequence[str],
    source: str,
    *,
    base: int,
) -> ImageList:
    """An :class:`ImageList` from ``labels`` numbered from ``base`` (0 or 1), each checked to name one of
    ``classes``."""
    if np.size(labels) != len(files):
        raise KTGError(f"{dataset}: {source} lists {len(files)} images but {np.size(labels)} labels")
    labels = checked_labels(dataset, labels, len(classes), source, base=base, names=files)
    return ImageList(root, list(files), labels.tolist(), list(classes), source)


def require_every_class(dataset: str, labels: Sequence[int] | torch.Tensor, classes: Sequence[str],
                        source: str) -> None:
    """Raise if a class has no image among ``labels`` (0-based; a training split must show every class)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise KTGError(
            f"{dataset}: class {classes[empty[0]]!r} has no images in {source} "
            f"({empty.size} of {len(classes)} classes are empty); the list and the class names disagree"
        )
