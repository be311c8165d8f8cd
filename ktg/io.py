"""Atomic file writes: a crash never leaves a half-written result or checkpoint behind.

Torch-free, so the command line can use it before any command has asked for torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ktg.errors import KTGError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On an exception the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:  # where the user asked to write: a read-only folder, a file in the way
        raise KTGError(f"cannot write {path}: {unwritable_reason(path, error)}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes owner-only files; results are meant to be shared like any file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Raise KTGError if ``folder`` could not be created or written in, without creating it; ``what`` names it in
    the message ("the search folder --out")."""
    folder = Path(folder)
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    if not existing.is_dir():
        raise KTGError(f"cannot write {what} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise KTGError(f"cannot write {what} {folder}: {existing} is not writable")


def unwritable_reason(path: Path, error: OSError) -> str:
    """Why ``path`` cannot be written, for a message: a file standing where one of its folders should be is named
    (mkdir then says "File exists" or "Not a directory", which points at nothing), else the system's reason."""
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return f"{blocking} is a file, not a folder"
    return error.strerror or str(error)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike, what: str, error: type[Exception] = KTGError) -> Any:
    """The JSON value in ``path``; a missing file or bad JSON raises ``error`` naming ``what`` (e.g. "graph
    file"), the path, and the line and column of the mistake.

    Every JSON file a user hands ktg is read here, so no file can end in a traceback: UTF-8, UTF-16 and UTF-32
    (with or without a byte-order mark) are read as JSON allows; other bytes, values nested deeper than Python's
    recursion allows, and a file too large for memory are each one error naming the file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as reason:
        raise error(f"cannot read {what} {path}: {reason.strerror or reason}") from None
    except MemoryError:
        raise error(f"cannot read {what} {path}: it does not fit in memory") from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as reason:
        raise error(f"{what} {path} is not valid JSON: {reason.msg} at line {reason.lineno}, "
                    f"column {reason.colno}") from None
    except UnicodeDecodeError as reason:
        raise error(f"{what} {path} is not text in UTF-8, UTF-16 or UTF-32 (byte {reason.start} cannot be "
                    f"decoded); save it as UTF-8") from None
    except RecursionError:
        raise error(f"{what} {path} nests its lists and objects too deeply to be read") from None


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")

