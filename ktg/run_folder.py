"""A run folder: the files of one training run, and the only code that knows their names.

=========================  ===========================================================================
``graph.json``             the graph as trained, models resolved
``config.json``            training options, how to reload the data, classes, image size
``split.json``             the held-out split (``--holdout`` runs only)
``bagging.json``           bagging nodes' bootstrap counts (graphs with bagging nodes only)
``metrics.jsonl``          one line per finished epoch
``metrics.json``           the final metrics (present once the run has ended)
``checkpoint.pt``          weights, optimiser, schedule and random-number state after the last finished epoch
``checkpoint.previous.pt`` the same one epoch earlier, so a damaged latest checkpoint is not the end of a run
``tensorboard/``           the TensorBoard log
``eval_<split>.json``      ``ktg eval`` reports
``attention_<split>.png``  ``ktg attention``'s figure, by default
``error.txt``              the traceback of a search trial that failed with a programming error
``run.lock``               held by the process writing the run (pid and host inside)
=========================  ===========================================================================

What the files hold crosses module boundaries as small typed records, each with ``to_dict``/``from_dict``
and read and written only here: :class:`RunConfig` (config.json), :class:`EpochRecord` (a line of metrics.jsonl),
:class:`FinalMetrics` (metrics.json) and :class:`Checkpoint`. On disk they stay plain JSON (checkpoints: a
``torch.save`` dict of tensors and JSON values); a file with a field its record lacks, or lacking a required one,
is an error naming the file.

One process writes a run at a time: :meth:`RunFolder.writing` holds an OS lock (``flock``) on ``run.lock``
that the kernel releases when the process ends, however it ends, so a killed run never leaves a stale lock
and a second writer is refused at once with the holder's pid and host. Readers (``ktg eval``, figures, the
search) take no lock. Checkpoints are written atomically; the one they replace is kept as the previous one.
Only the checkpoints need torch, imported when one is read or written: checking a folder is instant, so the
command line does it before it loads a framework.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ktg import __version__
from ktg.config import TrainConfig
from ktg.data import DataSource
from ktg.errors import KTGError
from ktg.graph import GraphSpec
from ktg.io import atomic_path, read_json, write_json, write_text
from ktg.provenance import Provenance

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

# -- the records of a run -------------------------------------------------------------------------------------


def _fields(cls: type, data: Any, what: str) -> dict[str, Any]:
    """``data`` (a JSON object) checked against the fields of the record ``cls``: a field it lacks takes the
    field's default where there is one; a missing required field or an unknown key is an error naming ``what``."""
    if not isinstance(data, dict):
        raise KTGError(f"{what} is not a JSON object")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    missing = [name for name, f in known.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if unknown or missing:
        problem = f"has an unknown field {unknown[0]!r}" if unknown else f"lacks the field {missing[0]!r}"
        raise KTGError(f"{what} {problem}: it was not written by this version of ktg ({__version__})")
    return dict(data)


def _without_none(record: Any) -> dict[str, Any]:
    """The record's fields as a dict, leaving out optional fields that are None (absent from the JSON)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
            if not (getattr(record, f.name) is None and f.default is None)}


@dataclass(frozen=True)
class RunConfig:
    """config.json: how a run trained, how to load its data again, and what its outputs mean.

    Attributes:
        train: the training options.
        data: how to load the dataset again (``ktg eval`` does).
        eval_split: the split every epoch was evaluated on: ``val`` (the held-out part of the training split,
            see split.json) or ``test``.
        num_classes, classes: the classes, in the order of the logits.
        image_size: the side of the square images the nodes saw.
        ktg_version: the ktg that trained the run.
        provenance: what computed the run (None for a run made before runs recorded it).
    """

    train: TrainConfig
    data: DataSource
    eval_split: str
    num_classes: int
    classes: tuple[str, ...]
    image_size: int
    ktg_version: str
    provenance: Provenance | None = None

    def to_dict(self) -> dict[str, Any]:
        provenance = {} if self.provenance is None else {"provenance": self.provenance.to_dict()}
        return {"ktg_version": self.ktg_version, "train": self.train.to_dict(), "data": self.data.to_dict(),
                "eval_split": self.eval_split, "num_classes": self.num_classes, "classes": list(self.classes),
                "image_size": self.image_size, **provenance}

    @classmethod
    def from_dict(cls, data: Any, what: str = "config.json") -> RunConfig:
        values = _fields(cls, data, what)
        if "provenance" in values:
            values["provenance"] = Provenance.from_dict(values["provenance"])
        return cls(**{**values, "train": TrainConfig.from_dict(values["train"]),
                      "data": DataSource.from_dict(values["data"]), "classes": tuple(values["classes"])})


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch: a line of metrics.jsonl, and what the trainer's epoch callback receives.

    Attributes:
        epoch: the epoch's number, from 1.
        split: the split the run evaluates (see :attr:`RunConfig.eval_split`).
        lr: the learning rate the epoch trained with.
        train_loss: the mean total loss of a step.
        losses, gate_weights: each loss term's mean value and mean gate weight, by term name (``edge 1→0 prob_kl``).
        train_seconds: the epoch's training time, without evaluation; images_per_second: training images a second.
        node_accuracy, ensemble_accuracy: top-1 accuracy in [0, 1] of every node and of the ensemble node on
            ``split``; None (absent from the line) for an epoch that was not evaluated (see
            :func:`ktg.train.train`'s ``eval_epochs``).
        eval_seconds: the evaluation's time (evaluated epochs only).
        peak_memory_mib: the epoch's peak GPU memory (CUDA only).
    """

    epoch: int
    split: str
    lr: float
    train_loss: float
    losses: dict[str, float]
    gate_weights: dict[str, float]
    train_seconds: float
    images_per_second: float
    node_accuracy: tuple[float, ...] | None = None
    ensemble_accuracy: float | None = None
    eval_seconds: float | None = None
    peak_memory_mib: float | None = None

    @property
    def evaluated(self) -> bool:
        """Whether the epoch was evaluated (its accuracies are known)."""
        return self.ensemble_accuracy is not None

    def to_dict(self) -> dict[str, Any]:
        values = _without_none(self)
        return {**values, "node_accuracy": list(self.node_accuracy)} if self.evaluated else values

    @classmethod
    def from_dict(cls, data: Any, what: str = "an epoch record") -> EpochRecord:
        values = _fields(cls, data, what)
        if "node_accuracy" in values:
            values["node_accuracy"] = tuple(values["node_accuracy"])
        return cls(**values)


class RunFolderBusy(KTGError):
    """The run folder is being written by another process (it holds the folder's lock)."""


@dataclass(frozen=True)
class EvalReport:
    """eval_<split>.json: what ``ktg eval`` measured with a run's checkpoint on one split of its dataset.

    Attributes:
        dataset, split: the dataset's name and the split (test, train, or the held-out val part).
        num_images: the images of the split; epoch: the checkpoint's epoch.
        node_accuracy: top-1 accuracy in [0, 1] of every node.
        ensemble_accuracy: top-1 accuracy of each ensemble rule, by name (``mean``, ``power_mean(u=2)``, …).
    """

    dataset: str
    split: str
    num_images: int
    epoch: int
    node_accuracy: tuple[float, ...]
    ensemble_accuracy: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "node_accuracy": list(self.node_accuracy)}

    @classmethod
    def from_dict(cls, data: Any, what: str = "an eval report") -> EvalReport:
        values = _fields(cls, data, what)
        return cls(**{**values, "node_accuracy": tuple(values["node_accuracy"])})


@dataclass(frozen=True)
class FinalMetrics:
    """metrics.json: the final metrics of an ended run, those of its last epoch.

    Attributes:
        dataset, split: the dataset's name and the split evaluated (see :attr:`RunConfig.eval_split`).
        graph: the graph's name (None for an unnamed graph).
        epochs: the epochs trained; stopped_early: whether the epoch callback stopped the run (a pruned trial).
        node_accuracy, ensemble_accuracy, mean_node_accuracy: top-1 accuracy in [0, 1] after the last epoch.
        best_epoch, best_ensemble_accuracy: the evaluated epoch with the most accurate ensemble on the validation
            split, and that accuracy; None (absent) for a run evaluated on the test split, where choosing an epoch
            would select on the test split.
    """

    dataset: str
    split: str
    graph: str | None
    epochs: int
    stopped_early: bool
    node_accuracy: tuple[float, ...]
    ensemble_accuracy: float
    mean_node_accuracy: float
    best_epoch: int | None = None
    best_ensemble_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**_without_none(self), "node_accuracy": list(self.node_accuracy)}

    @classmethod
    def from_dict(cls, data: Any, what: str = "metrics.json") -> FinalMetrics:
        values = _fields(cls, data, what)
        return cls(**{**values, "node_accuracy": tuple(values["node_accuracy"])})


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint: the state of a run after a finished epoch, enough to continue it.

    Attributes:
        epoch: the epochs finished.
        model, optimizer, scheduler: the state dicts of the graph, its optimiser and its schedule.
        graph: the graph trained; train: the training options.
        history: every finished epoch's record, in order.
        rng: the random-number generators' states (``cpu``, and ``cuda`` on CUDA), so that a resumed run draws
            what an uninterrupted one would (None in checkpoints written before ktg saved them).
    """

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    graph: GraphSpec
    train: TrainConfig
    history: tuple[EpochRecord, ...]
    rng: dict[str, torch.Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The dict ``torch.save`` writes: tensors, and JSON-ready values."""
        return {"format": CHECKPOINT_FORMAT, "epoch": self.epoch, "model": self.model, "optimizer": self.optimizer,
                "scheduler": self.scheduler, "graph": self.graph.to_dict(), "train": self.train.to_dict(),
                "history": [record.to_dict() for record in self.history],
                **({} if self.rng is None else {"rng": self.rng})}

    @classmethod
    def from_dict(cls, data: Any, what: str = "checkpoint") -> Checkpoint:
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise KTGError(f"{what} is not a ktg checkpoint")
        values = _fields(cls, {key: value for key, value in data.items() if key != "format"}, what)
        return cls(**{**values, "graph": GraphSpec.from_dict(values["graph"], where=what),
                      "train": TrainConfig.from_dict(values["train"]),
                      "history": tuple(EpochRecord.from_dict(record, f"{what}: an epoch record")
                                       for record in values["history"])})



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

    def is_run_folder(self) -> bool:
        """Whether a run lives here, started, running, ended or with its weights deleted (its config or a
        checkpoint exists): the folder's files are the run's."""
        return (self.path / _CONFIG).exists() or self.holds_run()

    def is_finished(self) -> bool:
        """Whether the run here has ended (its final metrics are written)."""
        return (self.path / _METRICS).exists() and self.holds_run()

    def check_is_run(self) -> None:
        """Raise :class:`KTGError` unless the folder holds a run that can be loaded (graph, config, checkpoint)."""
        if not self.path.is_dir():
            raise KTGError(f"{self.path} is not a ktg run folder: it does not exist")
        missing = [name for name in (_GRAPH, _CONFIG) if not (self.path / name).exists()]
        if not missing and not self.holds_run() and (self.path / _METRICS).exists():
            raise KTGError(f"{self.path} holds an ended run whose weights were not kept (a search keeps the final "
                           f"weights of its best trials only with --keep-weights best:K); retrain its {_GRAPH}")
        if not self.holds_run():
            missing.append(_CHECKPOINT)
        if missing:
            raise KTGError(f"{self.path} is not a ktg run folder: {missing[0]} is missing")

    # -- reading ------------------------------------------------------------------------------------------

    def read_graph(self) -> GraphSpec:
        return GraphSpec.load(self.path / _GRAPH)

    def read_config(self) -> RunConfig:
        """config.json."""
        path = self.path / _CONFIG
        return RunConfig.from_dict(read_json(path, "run config"), str(path))

    def read_metrics(self) -> FinalMetrics:
        """metrics.json: the final metrics of an ended run."""
        path = self.path / _METRICS
        return FinalMetrics.from_dict(read_json(path, "run metrics"), str(path))

    def read_epochs(self) -> list[EpochRecord]:
        """metrics.jsonl: the record of every finished epoch, in order (none for a run that finished none).

        The last line of a run being written may be unfinished (no newline yet): it is left out.
        """
        path = self.path / _METRICS_LOG
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # the text after the last newline is unfinished
        return [EpochRecord.from_dict(json.loads(line), f"{path}, line {number}")
                for number, line in enumerate(lines, 1) if line.strip()]

    def read_split(self) -> dict[str, Any] | None:
        """split.json (``holdout``, ``seed``, ``fingerprint`` of the training split it indexes, ``train_indices``,
        ``val_indices``), or None for a run without one."""
        path = self.path / _SPLIT
        return read_json(path, "held-out split") if path.exists() else None

    def load_checkpoint(self) -> Checkpoint:
        """The latest checkpoint, on the CPU.

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
        print(f"ktg: warning: {problem}; continuing from {_PREVIOUS_CHECKPOINT} (epoch {state.epoch})",
              file=sys.stderr)
        return state

    def node_weights(self, node: int) -> dict[str, torch.Tensor]:
        """The state dict of network node ``node`` in the latest checkpoint (empty if the run has no such node)."""
        prefix = f"nodes.{node}."
        return {key[len(prefix):]: value for key, value in self.load_checkpoint().model.items()
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
        descriptor = self._take_lock()
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

    def _take_lock(self) -> int:
        """Create the folder and take its lock; the lock file's descriptor (closing it releases the lock)."""
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
            raise RunFolderBusy(f"{self.path} is being written by {holder}; wait for it to end, or stop it and "
                                f"continue with --resume") from None
        return descriptor

    def delete_checkpoints(self, *, keep_latest: bool = False) -> bool:
        """Delete the checkpoints of a run that has ended, or with ``keep_latest`` only the previous one: the
        folder keeps what its readers need (graph, config, split, metrics, TensorBoard log).

        Returns whether the folder was free to change: while another process writes the run (or the folder is
        not on this machine), nothing is deleted, as that process still needs them.
        """
        if not self.holds_run():
            return True
        try:
            descriptor = self._take_lock()
        except KTGError:
            return False
        try:
            if not keep_latest:
                (self.path / _CHECKPOINT).unlink(missing_ok=True)
            (self.path / _PREVIOUS_CHECKPOINT).unlink(missing_ok=True)
        finally:
            os.close(descriptor)
        return True

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

    def write_config(self, config: RunConfig) -> None:
        """Write config.json."""
        self._check_writing()
        write_json(self.path / _CONFIG, config.to_dict())

    def write_split(self, split: dict[str, Any]) -> None:
        """Write split.json (see :meth:`read_split`)."""
        self._check_writing()
        write_json(self.path / _SPLIT, split)

    def write_bagging(self, seed: int, counts: dict[int, list[int]]) -> None:
        """Write bagging.json: the seed and each bagging node's per-sample bootstrap counts."""
        self._check_writing()
        write_json(self.path / _BAGGING, {"seed": seed, "counts": {str(node): c for node, c in counts.items()}})

    def start_epochs(self, history: Sequence[EpochRecord]) -> None:
        """Begin metrics.jsonl with the epochs a resumed run has already done (none for a new run)."""
        self._check_writing()
        write_text(self.path / _METRICS_LOG, "".join(json.dumps(record.to_dict()) + "\n" for record in history))

    def append_epoch(self, record: EpochRecord) -> None:
        """Add one finished epoch's record to metrics.jsonl."""
        self._check_writing()
        with open(self.path / _METRICS_LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record.to_dict()) + "\n")

    def save_checkpoint(self, state: Checkpoint) -> None:
        """Write ``state`` as the latest checkpoint, atomically; the latest one before it becomes the previous
        checkpoint (an unreadable one is replaced, never kept)."""
        import torch  # only checkpoints need it: reading a run's other files, or checking the folder, does not

        self._check_writing()
        latest = self.path / _CHECKPOINT
        with atomic_path(latest) as tmp:
            torch.save(state.to_dict(), tmp)
            if latest.exists() and not self._latest_unreadable:
                os.replace(latest, self.path / _PREVIOUS_CHECKPOINT)
        self._latest_unreadable = False

    def write_metrics(self, final: FinalMetrics) -> None:
        """Write metrics.json, the final metrics."""
        self._check_writing()
        write_json(self.path / _METRICS, final.to_dict())

    def write_error(self, text: str) -> None:
        """Write error.txt (a failed search trial's traceback). Needs no lock: the run has ended."""
        write_text(self.path / _ERROR, text)

    def write_eval_report(self, report: EvalReport) -> Path:
        """Write a ``ktg eval`` report (eval_<split>.json); returns its path. Needs no lock: a report sits beside
        a run, whoever is writing it."""
        path = self.eval_report_file(report.split)
        write_json(path, report.to_dict())
        return path

    def read_eval_report(self, split: str) -> EvalReport | None:
        """The ``ktg eval`` report on ``split`` (eval_<split>.json), None where there is none."""
        path = self.eval_report_file(split)
        if not path.exists():
            return None
        return EvalReport.from_dict(read_json(path, "eval report"), str(path))


def check_outside_runs(path: str | os.PathLike, option: str, own: str | os.PathLike | None = None, *,
                       run: bool = False) -> None:
    """Raise :class:`KTGError` if ``path``, where a command writes its output ``option`` (``"--out"``), is or lies
    inside a run folder, unless it is ``own``, the command's own file in that run (``ktg attention``'s figure);
    with ``run``, ``path`` is the command's own run folder, and only the folders above it are checked.

    A run folder's files are the run's: an output written over its checkpoint or config destroys the run without
    a word, and any other file there is one a later ``--restart`` would not know to keep.
    """
    resolved = Path(path).resolve()
    if own is not None and resolved == Path(own).resolve():
        return
    above = resolved.parents if run else (resolved, *resolved.parents)
    folder = next((folder for folder in above if RunFolder(folder).is_run_folder()), None)
    if folder is not None:
        raise KTGError(f"{option} {path} lies in the run folder {folder}, whose files belong to its run (a file "
                       "written there can replace its checkpoint or config); write it outside the run folder")


def _read_checkpoint(path: Path) -> Checkpoint:
    import torch

    if not path.exists():
        raise KTGError(f"checkpoint {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a truncated or foreign file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise KTGError(f"cannot read checkpoint {path} ({reason})") from None
    return Checkpoint.from_dict(state, str(path))
