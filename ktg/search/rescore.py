"""A winner chosen without luck: retrain the best graphs of a study with fresh seeds and rank them by their mean.

A trial's score is one training run on one held-out split, and seed noise is as large as the differences the
search looks for, so the argmax of thousands of trials is partly the luckiest run (the winner's curse). After the
search, :func:`rescore` retrains the ``top`` best complete trials with ``seeds`` fresh seeds each, on the same
held-out split, and the study's chosen graph becomes the one with the best mean (``docs/method.md#search``).

Every candidate trains with the same fresh seeds (:func:`rescore_seed`, unrelated to any trial's seed), so the
candidates are compared on common random numbers. Each run's result is stored in the study (a study user
attribute per run), so the storage alone says what was rescored: ``ktg study show`` reads it anywhere, a
re-run resumes, and several workers share the runs. A worker claims a run before it trains it and renews the
claim every heartbeat interval; a claim silent for the grace period belongs to a dead worker and is taken over.
Two workers that claim the same run at the same instant both train it, which costs time, never correctness.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ktg.graph import GraphSpec
from ktg.search.heartbeat import Renewal
from ktg.search.sampler import stable_hash
from ktg.search.settings import RESCORE_DIR, SearchSettings, check_rescore
from ktg.search.storage import GRAPH_ATTR

if TYPE_CHECKING:  # what reads a study (ktg study show, the leaderboard) imports no PyTorch; rescore_run does
    from ktg.data.images import Dataset
    from ktg.train import FinishCallback

#: Study user attribute: the rescore last asked for, ``{"top": K, "seeds": S}``.
RESCORE_ATTR = "ktg.rescore"
#: Study user attributes per run (``<prefix><trial>/<index>``): its result, and the claim of the worker training it.
RUN_PREFIX = "ktg.rescore.run/"
CLAIM_PREFIX = "ktg.rescore.claim/"
#: How :func:`chosen` says that it took the plain argmax.
ARGMAX = "highest held-out ensemble accuracy of one run"


def rescore_seed(seed: int, index: int) -> int:
    """The seed of rescore run ``index`` (the same for every candidate) in a search whose config has ``seed``."""
    return stable_hash("ktg rescore seed", seed, index) >> 33


def run_dir(out: str | Path, trial: int, index: int) -> Path:
    """Where rescore run ``index`` of trial ``trial`` trains: ``OUT/rescore/<trial>/<index>/``."""
    return Path(out) / RESCORE_DIR / str(trial) / str(index)


@dataclass(frozen=True)
class Rescored:
    """What the rescore runs of one trial found (accuracies are fractions of the held-out split).

    Attributes:
        trial: the trial number.
        search_score: its ensemble accuracy in the search (one run).
        accuracies: the ensemble accuracy of each finished rescore run, by run index.
        failed: how many rescore runs failed (a NaN loss, say).
        seeds: how many runs were asked for.
    """

    trial: int
    search_score: float
    accuracies: tuple[float, ...]
    failed: int
    seeds: int

    @property
    def complete(self) -> bool:
        return len(self.accuracies) + self.failed >= self.seeds

    @property
    def mean(self) -> float | None:
        return sum(self.accuracies) / len(self.accuracies) if self.accuracies else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation over the runs (None below two runs)."""
        n = len(self.accuracies)
        if n < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((a - mean) ** 2 for a in self.accuracies) / (n - 1))

    def rank_key(self) -> tuple:
        """Best first: no failed run, then the highest mean, then the lowest trial number."""
        return (self.failed > 0, -(self.mean if self.mean is not None else -1.0), self.trial)


def candidates(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` complete trials with the highest search score (the lowest number among equals)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: (-t.value, t.number))[:top]


def stored_runs(attrs: dict[str, Any], trial: int, seeds: int) -> list[dict | None]:
    """The results of ``trial``'s runs 0..seeds-1 stored in a study's user attributes ``attrs`` (None where none
    is stored, or it is not readable)."""
    results = []
    for index in range(seeds):
        stored = attrs.get(f"{RUN_PREFIX}{trial}/{index}")
        readable = isinstance(stored, dict) and ("ensemble_accuracy" in stored or "fail_reason" in stored)
        results.append(stored if readable else None)
    return results


def summaries(study: optuna.Study) -> list[Rescored]:
    """What the rescore last asked for (:data:`RESCORE_ATTR`) found for each of the current top trials, best
    first; empty when no rescore was asked for. Runs still training or never started count as missing."""
    attrs = study.user_attrs
    asked = attrs.get(RESCORE_ATTR)
    if not isinstance(asked, dict) or not {"top", "seeds"} <= set(asked):
        return []
    found = []
    for trial in candidates(study, asked["top"]):
        runs = [run for run in stored_runs(attrs, trial.number, asked["seeds"]) if run is not None]
        accuracies = tuple(run["ensemble_accuracy"] for run in runs if run.get("ensemble_accuracy") is not None)
        found.append(Rescored(trial.number, trial.value, accuracies, len(runs) - len(accuracies), asked["seeds"]))
    return sorted(found, key=Rescored.rank_key)


def chosen(study: optuna.Study) -> tuple[FrozenTrial, str] | None:
    """The trial whose graph the study recommends, and how it was chosen: the best mean of a complete rescore,
    else the highest search score (None while no trial is complete)."""
    ranked = summaries(study)
    if ranked and all(r.complete for r in ranked) and ranked[0].accuracies:
        best = ranked[0]
        (trial,) = [t for t in study.get_trials(deepcopy=False) if t.number == best.trial]
        spread = f" ± {100 * best.std:.2f}" if best.std is not None else ""
        return trial, (f"best mean held-out ensemble accuracy, {100 * best.mean:.2f}{spread} %, over "
                       f"{best.seeds} fresh seeds among the top {len(ranked)} trials")
    complete = candidates(study, 1)
    return (complete[0], ARGMAX) if complete else None


def _claim(study: optuna.Study, key: str, worker: str) -> None:
    study.set_user_attr(key, {"worker": worker, "time": time.time()})


def _unfinished(study: optuna.Study, top: int, seeds: int, grace_period: float) -> list[tuple[FrozenTrial, int, bool]]:
    """Every run without a result, best candidate first: (trial, run index, whether a live worker claims it)."""
    attrs = study.user_attrs
    runs = []
    for trial in candidates(study, top):
        for index, result in enumerate(stored_runs(attrs, trial.number, seeds)):
            if result is None:
                claim = attrs.get(f"{CLAIM_PREFIX}{trial.number}/{index}")
                live = isinstance(claim, dict) and time.time() - claim.get("time", 0) < grace_period
                runs.append((trial, index, live))
    return runs


def rescore(settings: SearchSettings, study: optuna.Study, *, top: int, seeds: int, dataset: Dataset | None = None,
            on_run: Callable[[int, int, dict], None] | None = None, on_finish: FinishCallback | None = None,
            progress: bool = False, poll_seconds: float = 5.0) -> list[Rescored]:
    """Retrain the ``top`` best complete trials of ``study`` with ``seeds`` fresh seeds each on the search's
    held-out split; return the candidates best first (see :func:`summaries`).

    Runs already stored are kept; runs other live workers are training are waited for. ``on_run`` is called
    with (trial, run index, its stored result) after each run this worker trains; ``on_finish`` as each run
    finishes all its epochs (:data:`ktg.train.FinishCallback`).
    """
    check_rescore(top, seeds)
    study.set_user_attr(RESCORE_ATTR, {"top": top, "seeds": seeds})
    worker = f"{socket.gethostname()}:{os.getpid()}"
    dataset = dataset if dataset is not None else settings.data_source.load()
    while True:
        unfinished = _unfinished(study, top, seeds, settings.grace_period)
        if not unfinished:
            return summaries(study)
        free = [(trial, index) for trial, index, claimed in unfinished if not claimed]
        if not free:  # other workers train the last runs; a dead one's claim falls silent and is taken over
            time.sleep(poll_seconds)
            continue
        trial, index = free[0]
        key = f"{CLAIM_PREFIX}{trial.number}/{index}"
        with Renewal(functools.partial(_claim, study, key, worker), settings.heartbeat_interval, f"claim {key}"):
            if study.user_attrs.get(key, {}).get("worker") != worker:
                continue  # another worker claimed it at the same instant, and trains it
            result = rescore_run(settings, dataset, trial, index, on_finish=on_finish, progress=progress)
            study.set_user_attr(f"{RUN_PREFIX}{trial.number}/{index}", result)
        if on_run is not None:
            on_run(trial.number, index, result)


def rescore_run(settings: SearchSettings, dataset: Dataset, trial: FrozenTrial, index: int, *,
                on_finish: FinishCallback | None = None, progress: bool = False) -> dict[str, Any]:
    """Train rescore run ``index`` (seed :func:`rescore_seed`) of ``trial``'s graph in :func:`run_dir` on the
    search's held-out split; its result as :func:`rescore` stores it (a diverging run: its one-line reason)."""
    from ktg.search.objective import failure_reason
    from ktg.train import NonFiniteLossError, train

    seed = rescore_seed(settings.config.seed, index)
    spec = GraphSpec.from_dict(trial.user_attrs[GRAPH_ATTR], where=f"trial {trial.number}")
    folder = run_dir(settings.out, trial.number, index)
    config = dataclasses.replace(settings.config, seed=seed)
    try:
        final = train(spec, dataset, config, folder, restart=True, on_finish=on_finish, progress=progress)
    except NonFiniteLossError as error:  # this graph diverges with this seed: a result too, stored as such
        return {"seed": seed, "fail_reason": failure_reason(error, folder)}
    return {"seed": seed, "ensemble_accuracy": final.ensemble_accuracy,
            "mean_node_accuracy": final.mean_node_accuracy, "run_dir": str(folder.resolve())}
