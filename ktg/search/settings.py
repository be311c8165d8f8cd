"""What a search is: :class:`SearchSettings`, everything every worker of a study needs.

Free of torch and Optuna on purpose: the command line reads the search's defaults from here while it builds its
parser, and checks a search's settings (and where its study lives) before any command has asked for a framework.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ktg.config import TrainConfig, training_identity
from ktg.errors import KTGError
from ktg.registry import (
    DEFAULT_FIRST_RUNG_FRACTION,
    DEFAULT_PRUNER,
    DEFAULT_SAMPLER,
    PRUNERS,
    SAMPLERS,
    TRIAL_LENGTHS,
)

if TYPE_CHECKING:
    from ktg.data import DataSource
    from ktg.graph import GraphSpec
    from ktg.search.space import SearchSpace

#: The files of a search folder (torch-free, so that ``ktg graph show SEARCH_FOLDER`` can name them): the study
#: when --storage is not given, the leaderboard, the best trial's graph, the lock their writers take turns on,
#: the runs of ``--rescore-top``.
STUDY_DB = "study.db"
LEADERBOARD = "leaderboard.csv"
BEST_GRAPH = "best_graph.json"
RESULTS_LOCK = "results.lock"
RESCORE_DIR = "rescore"
VERDICT = "verdict.json"
#: The graphs every ``ktg search`` runs beside the graphs it draws, unless told otherwise (``--baseline``): the
#: papers' two baselines, which the search must beat for its graph to be worth using.
DEFAULT_BASELINES = ("independent", "dml")
#: The race after the search (``--rescore-top K --rescore-seeds S``): the K best searched graphs and the baselines,
#: up to S common fresh seeds each. Measured on the low-data MNIST folder (docs/results.md#how-many-seeds-a-race-needs),
#: the race's paired differences spread by 1.5-3 points a run, so 6 seeds tell apart only gains of 2-3 points; the
#: searched graph that beats independent there by 0.85 points was told apart after 27 seeds by a 95 % interval read
#: after every seed; read at the race's looks (98.93 % at the last of 30 seeds with 3 searched graphs), 30 seeds at
#: that spread (2 points) tell apart about 1 point. The race stops as soon as its contenders are told apart, so S is
#: a bound on its cost, (K + baselines) * S full runs at worst.
DEFAULT_RESCORE_TOP = 3
DEFAULT_RESCORE_SEEDS = 30
#: The smallest gain over the best baseline worth racing for (``--rescore-min-gain``, a fraction of the held-out
#: split): a searched graph leaves the race once the upper end of its paired 95 % interval against the best baseline
#: lies below it. Replayed on every race this project stored (docs/results.md#the-smallest-gain-worth-racing-for):
#: at 1 point no verdict changes and the tied digits race costs 70 runs instead of 103; at 1.5 points both gains races
#: certified (+0.85 [+0.07, +1.63] over 27 seeds, +0.60 [+0.14, +1.06] over 5) would have been given up after 11 and
#: 4 seeds. With 30 seeds and paired differences spread by 1.5-3 points, gains under a point are at the edge of
#: what the race can tell anyway.
DEFAULT_RESCORE_MIN_GAIN = 0.01


def resolve_storage_url(storage: str | None, out: Path | None = None, *, new_file: bool = False) -> str:
    """A database URL from ``--storage``: a URL as given (``grpc://HOST:PORT``: a study served by ``ktg storage
    serve``), a file path as SQLite, a search folder as its ``study.db``; None means ``OUT/study.db``. With
    ``new_file`` a path that does not exist yet is a SQLite file to create."""
    if storage is None:
        if out is None:
            raise KTGError("--storage is required (a database URL, a study.db file or a search folder)")
        return f"sqlite:///{(Path(out) / STUDY_DB).resolve()}"
    if "://" in storage:
        return storage
    path = Path(storage)
    if path.is_dir():
        path = path / STUDY_DB
    if not path.exists() and not new_file:
        raise KTGError(f"--storage {storage!r} is neither a database URL (sqlite:///FILE, "
                       f"postgresql+psycopg2://USER:PASSWORD@HOST/DB) nor an existing study file or search folder")
    return f"sqlite:///{path.resolve()}"


def check_pruner(name: str) -> None:
    """Raise KTGError naming the registered pruners if ``name`` is not one of them."""
    if name not in PRUNERS:
        raise KTGError(f"unknown pruner {name!r}; choose one of: {', '.join(PRUNERS)}")


def check_sampler(name: str) -> None:
    """Raise KTGError naming the registered samplers if ``name`` is not one of them."""
    if name not in SAMPLERS:
        raise KTGError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")


def check_rescore(top: int, seeds: int, min_gain: float) -> None:
    """Raise KTGError unless ``--rescore-top`` and ``--rescore-seeds`` are at least 1 (a race of none is no
    race: the command line's ``--rescore-top 0`` skips it before asking) and ``min_gain`` (a fraction) is from 0
    to 1."""
    if top < 1 or seeds < 1:
        raise KTGError(f"--rescore-top and --rescore-seeds must be at least 1, got {top} and {seeds} (--rescore-top "
                       f"0 skips the race)")
    if not 0 <= min_gain < 1:
        raise KTGError(f"--rescore-min-gain must be from 0 (race to --rescore-seeds) to below 100 points of "
                       f"accuracy, got {100 * min_gain:g}")


def default_first_rung(epochs: int) -> int:
    """The first rung of a search of ``epochs``-epoch trials when none is given: a fraction of the run, rounded up
    (:data:`ktg.registry.DEFAULT_FIRST_RUNG_FRACTION`)."""
    return max(1, math.ceil(DEFAULT_FIRST_RUNG_FRACTION * epochs))


def check_holdout(config: TrainConfig) -> None:
    """Raise KTGError unless ``config`` holds out part of the training split, which the search scores graphs on
    (the fraction's range is TrainConfig's to check)."""
    if config.holdout is None:
        raise KTGError("the search scores graphs on a held-out part of the training split: give it a --holdout "
                       "fraction")


def trial_training(config: TrainConfig, length: str) -> TrainConfig:
    """The training of a search's trials, for ``config``: the training the chosen graph will get on the whole
    training split, with the ``holdout`` the trials are scored on. ``length`` is one of
    :data:`ktg.registry.TRIAL_LENGTHS`: ``epochs`` trains ``config.epochs`` epochs on the trials' share of the
    split; ``steps`` trains as many optimiser steps as the whole split takes in ``config.epochs`` epochs, so
    ``config.epochs / (1 - holdout)`` epochs rounded up, with the milestones of a step schedule scaled alike, so
    that the learning rate falls at the same point of the run."""
    if length not in TRIAL_LENGTHS:
        raise KTGError(f"unknown trial length {length!r}; choose one of: {', '.join(TRIAL_LENGTHS)}")
    check_holdout(config)
    if length == "epochs":
        return config
    # Rounded first, so that 6 / (1 - 0.4) is 10 epochs and not 11 (the float 1 - 0.4 lies below 0.6).
    epochs = math.ceil(round(config.epochs / (1 - config.holdout), 6))
    scale = epochs / config.epochs
    return dataclasses.replace(config, epochs=epochs,
                               milestones=tuple(round(milestone * scale) for milestone in config.milestones))


@dataclass(frozen=True)
class SearchSettings:
    """Everything a worker needs; picklable, so spawned worker processes receive it whole.

    Attributes:
        space: the graphs searched.
        config: the training of every trial (``holdout`` set: trials are scored on held-out training data;
            :func:`trial_training` makes it from the training the chosen graph will get).
        out: this machine's search folder (trial runs, leaderboard, best graph).
        storage_url, study_name: the study every worker joins.
        trials: the budget of finished (complete or pruned) searched trials, counted over all workers; the
            baselines' trials come on top (:attr:`budget`).
        data_source: the data every trial trains on.
        node_options: model options of every node that sets none itself, the dataset's suggestions included.
        pruner: a registered pruner (:data:`ktg.registry.PRUNERS`).
        first_rung: the first epoch at which the pruner may stop a trial (successive halving's rungs: E, 2E, 4E, …);
            None: :func:`default_first_rung`.
        sampler: a registered sampler (:data:`ktg.registry.SAMPLERS`).
        seed: the sampler's seed; trial k draws from a random stream of its own (see :mod:`ktg.search.sampler`).
        same_seed: train every trial with ``config.seed`` (common random numbers) rather than a seed of its own.
        heartbeat_interval, grace_period: seconds between heartbeats, and of silence before a running trial
            counts as abandoned by a dead worker.
        max_retry: how often a trial of a dead worker is queued again.
        keep_weights: how many of the best complete trials keep their final weights (``checkpoint.pt``); every
            other trial's checkpoints are deleted as it ends. Part of the study's identity: every worker deletes.
        max_failures_in_a_row: a worker stops with an error after this many consecutive failed trials
            (a systematic problem such as a wrong option should not burn through the queue).
        baselines: known graphs of the space (named: their name is how the study knows them) that the study
            runs first, never pruned, as trials of their own; the race compares the searched graphs with them.
        rescore_top, rescore_seeds, rescore_min_gain: the race every worker joins once the search is done
            (:func:`ktg.search.rescore.rescore`): the ``rescore_top`` best searched graphs and the baselines, up to
            ``rescore_seeds`` seeds each, a searched graph dropped once shown to gain less than ``rescore_min_gain``
            (a fraction) over the best baseline or the best searched graph; 0 top: no race. Not part of the
            study's identity: a later command may race more graphs or seeds, reusing the runs stored.
    """

    space: SearchSpace
    config: TrainConfig
    out: Path
    storage_url: str
    study_name: str
    trials: int
    data_source: DataSource
    node_options: dict[str, Any] = field(default_factory=dict)
    pruner: str = DEFAULT_PRUNER
    first_rung: int | None = None
    sampler: str = DEFAULT_SAMPLER
    seed: int = 0
    same_seed: bool = False
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: int = 2
    keep_weights: int = 0
    max_failures_in_a_row: int = 10
    baselines: tuple[GraphSpec, ...] = ()
    rescore_top: int = 0
    rescore_seeds: int = DEFAULT_RESCORE_SEEDS
    rescore_min_gain: float = DEFAULT_RESCORE_MIN_GAIN

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise KTGError(f"--trials must be at least 1, got {self.trials}")
        check_holdout(self.config)
        check_pruner(self.pruner)
        if not 1 <= self.rung <= self.config.epochs:
            raise KTGError(f"--first-rung must be an epoch of a trial, from 1 to {self.config.epochs}, got "
                           f"{self.rung}")
        check_sampler(self.sampler)
        if self.rescore_top < 0:
            raise KTGError(f"--rescore-top must be 0 (no race) or more, got {self.rescore_top}")
        if self.rescore_top:
            check_rescore(self.rescore_top, self.rescore_seeds, self.rescore_min_gain)
        names = [spec.name for spec in self.baselines]
        if None in names or len(set(names)) != len(names):
            raise KTGError(f"every --baseline needs a name of its own, got {names}")
        for spec in self.baselines:
            try:
                self.space.to_params(spec)
            except KTGError as error:
                raise KTGError(f"--baseline {spec.name}: a baseline must be a graph the search could draw, so that "
                               f"its samplers learn from it too, but {error}; widen the space or drop the baseline "
                               f"(--baseline none)") from None
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise KTGError(f"the grace period ({self.grace_period} s) must exceed the heartbeat interval "
                           f"({self.heartbeat_interval} s, at least 1)")

    @property
    def rung(self) -> int:
        """The first rung the pruner uses: ``first_rung``, or :func:`default_first_rung` of the epochs (resolved
        when read, so a copy with other epochs resolves again)."""
        return default_first_rung(self.config.epochs) if self.first_rung is None else self.first_rung

    @property
    def budget(self) -> int:
        """The finished trials a study holds when it is done: the searched ones and one per baseline."""
        return self.trials + len(self.baselines)

    def shared(self, device_type: str) -> dict[str, Any]:
        """What every worker of the study must agree on, for a worker on a device of ``device_type``: the study's
        identity, stored with the study by its first worker. Training is compared resolved for the device
        (:func:`ktg.config.training_identity`): a CPU worker in fp32 and a CUDA worker in bf16 would rank graphs
        trained two ways on one leaderboard."""
        training = training_identity(self.config.resolved(device_type))
        source = self.data_source
        data = {"name": source.name, "image_size": source.image_size,
                "options": {k: v for k, v in source.options.items() if k != "cache_dir"}}
        return {"space": self.space.describe(), "train": training, "data": data,
                "node_options": self.node_options, "pruner": self.pruner, "sampler": self.sampler, "seed": self.seed,
                "first_rung": self.rung,
                "same_seed": self.same_seed, "keep_weights": self.keep_weights,
                "baselines": [spec.to_dict() for spec in self.baselines]}
