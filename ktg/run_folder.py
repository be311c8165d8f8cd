"""A run folder: the files of one training run, and the only code that knows their names.

=========================  ===========================================================================
``graph.json``             the graph as trained, models resolved
``config.json``            training options, how to reload the data, classes, image size
``split.json``             the held-out split (``--holdout`` runs only)
``bagging.json``           bagging nodes' bootstrap counts (graphs with bagging nodes only)
``metrics.jsonl``          one line per finished epoch
``metrics.json``           the final metrics (present once the run has ended)
``checkpoint.pt``          weights, optimiser and schedule state after the last finished epoch
``checkpoint.previous.pt`` the same one epoch earlier, so a damaged latest checkpoint is not the end of a run
``tensorboard/``           the TensorBoard log
``eval_<split>.json``      ``ktg eval`` reports
``attention_<split>.png``  ``ktg attention``'s figure, by default
``error.txt``              the traceback of a search trial that failed with a programming error
``run.lock``               held by the process writing the run (pid and host inside)
=========================  ===========================================================================

One process writes a run at a time: :meth:`RunFolder.writing` holds an OS lock (``flock``) on ``run.lock``
that the kernel releases when the process ends, however it ends, so a killed run never leaves a stale lock
and a second writer is refused at once with the holder's pid and host. Readers (``ktg eval``, figures, the
search) take no lock. Checkpoints are written atomically; the one they replace is kept as the previous one.
Only the checkpoints need torch, imported when one is read or written: checking a folder is instant, so the
command line does it before it loads a framework.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ktg.errors import KTGError
from ktg.graph import GraphSpec
from ktg.io import atomic_path, read_json, write_json, write_text

if TYPE_CHECKING:
    import torch

CHECKPOINT_FORMAT = "ktg.checkpoint"
#: The splits a run can be evaluated on (``val``: the held-out part of a ``--holdout`` run's training split).
SPLITS = ("test", "val", "train")

_GRAPH = "graph.json"
_CONFIG = "config.json"
_SPLIT = "split.json"
_BAGGING = "bagging.json"
_METRICS_LOG = "metrics.jsonl"
_METRICS = "metrics.json"
_CHECKPOINT = "checkpoint.pt"
_PREVIOUS_CHECKPOINT = "checkpoint.previous.pt"
_TENSORBOARD = "tensorboard"
_ERROR = "error.txt"
_LOCK = "run.lock"


class RunFolder:
    """The files of the run in ``path`` (which need not exist yet).

    Reading needs nothing; every method that writes needs the folder opened with :meth:`writing`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        self._latest_unreadable = False

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- names other code may show or hand on ------------------------------------------------------------

    @property
    def graph_file(self) -> Path:
        """``graph.json``: a graph file ``ktg train --graph`` takes as it is."""
        return self.path / _GRAPH

    @property
    def checkpoint_file(self) -> Path:
        return self.path / _CHECKPOINT

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / _TENSORBOARD

    @property
    def error_file(self) -> Path:
        return self.path / _ERROR

    def eval_report_file(self, split: str) -> Path:
        return self.path / f"eval_{split}.json"

    def attention_figure_file(self, split: str) -> Path:
        return self.path / f"attention_{split}.png"

    @staticmethod
    def main_files() -> str:
        """The files a user opens first, for messages: ``metrics.json, metrics.jsonl, …``."""
        return ", ".join((_METRICS, _METRICS_LOG, _GRAPH, _CHECKPOINT, _TENSORBOARD + "/"))

    # -- what the folder holds -------------------------------------------------------------------------------

    def holds_run(self) -> bool:
        """Whether a run has finished at least one epoch here (a checkpoint, latest or previous, exists)."""
        return (self.path / _CHECKPOINT).exists() or (self.path / _PREVIOUS_CHECKPOINT).exists()

    def is_finished(self) -> bool:
        """Whether the run here has ended (its final metrics are written)."""
        return (self.path / _METRICS).exists() and self.holds_run()

    def check_is_run(self) -> None:
        """Raise :class:`KTGError` unless the folder holds a run that can be loaded (graph, config, checkpoint)."""
        if not self.path.is_dir():
            raise KTGError(f"{self.path} is not a ktg run folder: it does not exist")
        missing = [name for name in (_GRAPH, _CONFIG) if not (self.path / name).exists()]
        if not self.holds_run():
            missing.append(_CHECKPOINT)
        if missing:
            raise KTGError(f"{self.path} is not a ktg run folder: {missing[0]} is missing")

    # -- reading ------------------------------------------------------------------------------------------

    def read_graph(self) -> GraphSpec:
        return GraphSpec.load(self.path / _GRAPH)

    def read_config(self) -> dict[str, Any]:
        """config.json: ``train`` (the TrainConfig), ``data`` (a :class:`ktg.data.DataSource`'s dict),
        ``eval_split``, ``num_classes``, ``classes``, ``image_size``, ``ktg_version``."""
        return read_json(self.path / _CONFIG, "run config")

    def read_metrics(self) -> dict[str, Any]:
        """metrics.json: the final metrics of an ended run."""
        return read_json(self.path / _METRICS, "run metrics")

    def read_epochs(self) -> list[dict[str, Any]]:
        """metrics.jsonl: the record of every finished epoch, in order (none for a run that finished none)."""
        path = self.path / _METRICS_LOG
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def read_split(self) -> dict[str, Any] | None:
        """split.json (``holdout``, ``seed``, ``train_indices``, ``val_indices``), or None for a run without one."""
        path = self.path / _SPLIT
        return read_json(path, "held-out split") if path.exists() else None

    def load_checkpoint(self) -> dict[str, Any]:
        """The latest checkpoint, on the CPU: ``epoch``, ``model``, ``optimizer``, ``scheduler``, ``graph``,
        ``train`` and ``history``.

        A latest checkpoint that is missing or cannot be read (a truncated file, a disk error) is reported in
        one warning line on stderr and the previous epoch's checkpoint is returned instead.

        Raises:
            KTGError: no checkpoint, or none that can be read.
        """
        latest, previous = self.path / _CHECKPOINT, self.path / _PREVIOUS_CHECKPOINT
        if not self.holds_run():
            raise KTGError(f"{self.path} holds no checkpoint ({_CHECKPOINT})")
        try:
            state = _read_checkpoint(latest)
            self._latest_unreadable = False
            return state
        except KTGError as error:
            if not previous.exists():
                raise KTGError(f"{error}; there is no previous checkpoint to go back to. Start the run again "
                               f"with --restart") from None
            problem = str(error)
        try:
            state = _read_checkpoint(previous)
        except KTGError as error:
            raise KTGError(f"{problem}, and {error}. Start the run again with --restart") from None
        self._latest_unreadable = True
        print(f"ktg: warning: {problem}; continuing from {_PREVIOUS_CHECKPOINT} (epoch {state['epoch']})",
              file=sys.stderr)
        return state

    def node_weights(self, node: int) -> dict[str, torch.Tensor]:
        """The state dict of network node ``node`` in the latest checkpoint (empty if the run has no such node)."""
        prefix = f"nodes.{node}."
        return {key[len(prefix):]: value for key, value in self.load_checkpoint()["model"].items()
                if key.startswith(prefix)}

    # -- writing ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, *, resume: bool = False, restart: bool = False) -> Iterator[RunFolder]:
        """Open the folder for writing one run: create it, lock it, and check it for the way the run starts.

        A new run (neither flag) refuses a folder that holds a run; ``resume`` needs one; ``restart``
        deletes the files of a run in it (only those: other files in the folder are left alone). Nothing is
        created when the check fails on a folder that does not exist yet.

        Raises:
            KTGError: the folder cannot be created or written, another process writes it (named by pid and
                host), or it does not suit the way the run starts.
        """
        if resume and restart:
            raise KTGError("--resume continues a run and --restart replaces it: choose one")
        if self._lock is not None:
            raise RuntimeError(f"{self} is already open for writing")
        created = not self.path.exists()
        if created and resume:
            self._check_start(resume, restart)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise KTGError(f"cannot write the run folder {self.path}: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 200).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise KTGError(f"{self.path} is being written by {holder}; wait for it to end, or stop it and "
                           f"continue with --resume") from None
        self._lock = descriptor
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"ktg pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            self._check_start(resume, restart)  # under the lock: no one else changes the folder from here on
            if restart:
                self._delete_run()
            yield self
        except BaseException:
            if created and not any(name != _LOCK for name in os.listdir(self.path)):
                os.unlink(self.path / _LOCK)
                self.path.rmdir()
            raise
        finally:
            self._lock = None
            os.close(descriptor)  # releases the lock

    def _check_start(self, resume: bool, restart: bool) -> None:
        if resume and not self.holds_run():
            raise KTGError(f"nothing to resume: {self.path / _CHECKPOINT} does not exist")
        if not resume and not restart and self.holds_run():
            raise KTGError(f"{self.path} already holds a run ({_CHECKPOINT}); add --resume to continue it, "
                           f"--restart to replace it, or choose another --out")

    def _delete_run(self) -> None:
        names = [_GRAPH, _CONFIG, _SPLIT, _BAGGING, _METRICS_LOG, _METRICS, _CHECKPOINT, _PREVIOUS_CHECKPOINT, _ERROR]
        names += [path.name for split in SPLITS for path in (self.eval_report_file(split),
                                                             self.attention_figure_file(split))]
        for name in names:
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / _TENSORBOARD, ignore_errors=True)
        self._latest_unreadable = False

    def _check_writing(self) -> None:
        if self._lock is None:
            raise RuntimeError(f"{self} is written outside RunFolder.writing()")

    def write_graph(self, spec: GraphSpec) -> None:
        self._check_writing()
        spec.save(self.path / _GRAPH)

    def write_config(self, config: dict[str, Any]) -> None:
        """Write config.json (see :meth:`read_config`)."""
        self._check_writing()
        write_json(self.path / _CONFIG, config)

    def write_split(self, split: dict[str, Any]) -> None:
        """Write split.json (see :meth:`read_split`)."""
        self._check_writing()
        write_json(self.path / _SPLIT, split)

    def write_bagging(self, seed: int, counts: dict[int, list[int]]) -> None:
        """Write bagging.json: the seed and each bagging node's per-sample bootstrap counts."""
        self._check_writing()
        write_json(self.path / _BAGGING, {"seed": seed, "counts": {str(node): c for node, c in counts.items()}})

    def start_epochs(self, history: list[dict[str, Any]]) -> None:
        """Begin metrics.jsonl with the epochs a resumed run has already done (none for a new run)."""
        self._check_writing()
        write_text(self.path / _METRICS_LOG, "".join(json.dumps(record) + "\n" for record in history))

    def append_epoch(self, record: dict[str, Any]) -> None:
        """Add one finished epoch's metrics to metrics.jsonl."""
        self._check_writing()
        with open(self.path / _METRICS_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``state`` (see :meth:`load_checkpoint`) as the latest checkpoint, atomically; the latest one
        before it becomes the previous checkpoint (an unreadable one is replaced, never kept)."""
        import torch  # only checkpoints need it: reading a run's other files, or checking the folder, does not

        self._check_writing()
        latest = self.path / _CHECKPOINT
        with atomic_path(latest) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
            if latest.exists() and not self._latest_unreadable:
                os.replace(latest, self.path / _PREVIOUS_CHECKPOINT)
        self._latest_unreadable = False

    def write_metrics(self, final: dict[str, Any]) -> None:
        """Write metrics.json, the final metrics."""
        self._check_writing()
        write_json(self.path / _METRICS, final)

    def write_error(self, text: str) -> None:
        """Write error.txt (a failed search trial's traceback). Needs no lock: the run has ended."""
        write_text(self.path / _ERROR, text)

    def write_eval_report(self, split: str, report: dict[str, Any]) -> Path:
        """Write a ``ktg eval`` report on ``split``; returns its path. Needs no lock: a report sits beside a
        run, whoever is writing it."""
        path = self.eval_report_file(split)
        write_json(path, report)
        return path


def _read_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.exists():
        raise KTGError(f"checkpoint {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a truncated or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise KTGError(f"cannot read checkpoint {path} ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise KTGError(f"{path} is not a ktg checkpoint")
    return state
