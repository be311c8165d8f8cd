"""The worker: a process that joins one study and runs trials until it holds its budget of finished trials.

A worker is the loop of :meth:`Worker.run`, with Optuna's ask/tell so that the budget, heartbeats and faults are
handled in one readable place:

1. fail the trials of dead workers (stale heartbeat) and queue them again;
2. stop when the study has ``trials`` finished (COMPLETE + PRUNED) trials; wait while the finished plus the
   running ones already reach the budget (a running trial may still fail and free its place);
3. ask for a trial (a queued retry first), record its first heartbeat (:mod:`ktg.search.heartbeat`), and check
   the budget once more: if the other workers' finished and running trials already fill it, this trial was
   started in a race with another worker and is handed back: it is marked failed with the reason "not run: …"
   before it draws a graph, so it never counts as finished;
4. train; record COMPLETE, PRUNED or FAIL with its reason; rewrite the leaderboard and best graph (a failed
   rewrite is a warning: the files are a view of the storage, and the next finished trial rewrites them).

Several workers may run on one machine (``--jobs-per-device``, separate processes started with "spawn", each
with its own CUDA context: :mod:`ktg.search.processes`) or anywhere that reaches the storage;
:func:`ktg.search.run.run_search` runs this machine's part of a search. Ctrl-C or SIGTERM
(:mod:`ktg.search.signals`) fails the running trial with the reason "interrupted", queues it to run again, and
stops; running the same command again resumes the study.
"""

from __future__ import annotations

import gc
import os
import random
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import TrialState

from ktg.data.images import Dataset
from ktg.errors import KTGError
from ktg.registry import PRUNERS, SAMPLERS
from ktg.run_folder import EpochRecord
from ktg.runtime import resolve_device
from ktg.search.heartbeat import Heartbeat
from ktg.search.keys import FAIL_REASON_ATTR, RETRY_HISTORY_ATTR, WORKER_ATTR
from ktg.search.objective import Objective, keep_best_weights
from ktg.search.rescore import RaceRunCallback, rescore
from ktg.search.results import write_results
from ktg.search.settings import BEST_GRAPH, LEADERBOARD, SearchSettings, check_pruner, check_sampler
from ktg.search.signals import StopRequest
from ktg.search.storage import (
    FINISHED,
    RequeueTrial,
    fail_stale_trials,
    open_storage,
    open_study,
    queue_again,
)
from ktg.train import FinishCallback

CLAIMED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def make_pruner(name: str, epochs: int, *, first_rung: int) -> optuna.pruners.BasePruner:
    """The registered pruner ``name`` for trials of ``epochs`` epochs, the resource, that stops no trial before
    epoch ``first_rung``. Successive halving is the paper's choice."""
    check_pruner(name)
    return PRUNERS[name].load()(epochs, first_rung=first_rung)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The registered sampler ``name`` seeded with ``seed`` (``--search-seed``)."""
    check_sampler(name)
    return SAMPLERS[name].load()(seed)


def connect(settings: SearchSettings, heartbeats: bool = True) -> tuple[optuna.Study, Any, int]:
    """Open the storage of ``settings`` and create or join its study: (study, storage, study id)."""
    # A served study's server may be away as long as a running trial may be silent: then it is failed anyway.
    storage = open_storage(settings.storage_url, server_wait=settings.grace_period,
                           **({"heartbeat_interval": settings.heartbeat_interval, "grace_period": settings.grace_period,
                               "max_retry": settings.max_retry} if heartbeats else {}))
    study = open_study(storage, settings.study_name, sampler=make_sampler(settings.sampler, settings.seed),
                       pruner=make_pruner(settings.pruner, settings.config.epochs, first_rung=settings.rung),
                       settings=settings.shared(resolve_device(settings.config.device).type))
    return study, storage, storage.get_study_id_from_name(settings.study_name)


def rewrite_results(study: optuna.Study, out: Path) -> None:
    """Rewrite the leaderboard and best graph in ``out`` from the storage (:func:`write_results`). A failure is a
    one-line warning, never a reason to stop a worker: the files are only a view of the storage, which keeps
    every result, and the next finished trial rewrites them."""
    try:
        write_results(study, out)
    except Exception as error:  # a full disk, a file in the way, a storage briefly unreachable, a malformed trial
        print(f"ktg: warning: {out / LEADERBOARD} and {BEST_GRAPH} not rewritten ({error}); the next finished trial "
              f"rewrites them, and the storage keeps every result (ktg study show)", file=sys.stderr)


class Worker:
    """One worker of a study: runs trials until the study holds ``settings.budget`` finished trials.

    Args:
        settings: see :class:`SearchSettings`.
        dataset: the data, when the caller has loaded it already; else it is loaded from ``settings.data_source``.
        on_trial: called with the study after every trial this worker ends (progress displays).
        on_epoch: called with (trial number, epoch, metrics) after every epoch.
        on_finish: called as each race run finishes all its epochs (see :data:`ktg.train.FinishCallback`), e.g.
            to log its attention grid; trials call none: they keep a few kilobytes each, and a kept trial's figure
            is one ``ktg attention`` away.
        on_race_run: called with (trial, run index, its stored result) after each race run this worker trains.
        progress: show the trainer's progress bars.

    Once the study holds its budget, the worker joins the race (``settings.rescore_top``), so every worker of the
    search, on every machine, trains race runs until the race is decided.
    """

    def __init__(self, settings: SearchSettings, *, dataset: Dataset | None = None,
                 on_trial: Callable[[optuna.Study], None] | None = None,
                 on_epoch: Callable[[int, int, EpochRecord], None] | None = None,
                 on_finish: FinishCallback | None = None, on_race_run: RaceRunCallback | None = None,
                 progress: bool = False) -> None:
        self.settings = settings
        self.dataset = dataset
        self.on_trial = on_trial
        self.on_epoch = on_epoch
        self.on_finish = on_finish
        self.progress = progress
        self.on_race_run = on_race_run
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.poll_seconds = min(5.0, settings.heartbeat_interval)

    def run(self) -> None:
        s = self.settings
        study, storage, study_id = connect(s)
        dataset = self.dataset if self.dataset is not None else s.data_source.load()
        self._search(study, storage, study_id, dataset)
        if s.rescore_top:
            rescore(s, study, top=s.rescore_top, seeds=s.rescore_seeds, min_gain=s.rescore_min_gain, dataset=dataset,
                    on_run=self.on_race_run, on_finish=self.on_finish, progress=self.progress,
                    poll_seconds=self.poll_seconds)
            rewrite_results(study, s.out)

    def _search(self, study: optuna.Study, storage, study_id: int, dataset: Dataset) -> None:
        s = self.settings
        objective = Objective(s.space, dataset, s.config, s.out, node_options=s.node_options,
                              on_epoch=self._after_epoch, progress=self.progress,
                              same_seed=s.same_seed,
                              eval_epochs=PRUNERS[s.pruner].epochs_read(s.config.epochs, first_rung=s.rung))
        failures_in_a_row = 0
        while True:
            StopRequest.check()
            fail_stale_trials(study, storage, study_id)
            finished = storage.get_n_trials(study_id, FINISHED)
            if finished >= s.budget:
                return
            if finished + storage.get_n_trials(study_id, TrialState.RUNNING) >= s.budget:
                time.sleep(self.poll_seconds)  # the running trials may still fail and free their places
                continue
            state, reason = self._run_trial(study, storage, study_id, objective)
            if state == TrialState.COMPLETE:
                keep_best_weights(study, s.keep_weights)
            rewrite_results(study, s.out)  # a trial handed back too: the last leaderboard lists it failed, not running
            if state is None:
                time.sleep(random.uniform(0.2, 2.0))  # lost a race for the last places; let it settle
                continue
            if self.on_trial is not None:
                self.on_trial(study)
            failures_in_a_row = failures_in_a_row + 1 if state == TrialState.FAIL else 0
            if failures_in_a_row >= s.max_failures_in_a_row:
                raise KTGError(f"{failures_in_a_row} trials in a row failed, the last because: {reason}")

    def _after_epoch(self, trial: int, epoch: int, metrics: EpochRecord) -> None:
        StopRequest.check()  # an interrupt a library swallowed stops the trial here, one epoch late at the most
        if self.on_epoch is not None:
            self.on_epoch(trial, epoch, metrics)

    def _run_trial(self, study: optuna.Study, storage, study_id: int,
                   objective: Objective) -> tuple[TrialState | None, str | None]:
        """Ask, train and tell one trial; (its final state, its failure reason). State None: handed back."""
        with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize(); this loop is its twin
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            with Heartbeat(storage, trial_id, self.settings.heartbeat_interval):
                trial.set_user_attr(WORKER_ATTR, self.name)
                others = storage.get_n_trials(study_id, CLAIMED) - 1
                if others >= self.settings.budget:
                    self._hand_back(study, trial)
                    return None, None
                value, state, out_of_memory = None, TrialState.FAIL, False
                try:
                    value, state = objective(trial), TrialState.COMPLETE
                except optuna.TrialPruned:
                    state = TrialState.PRUNED
                except Exception as error:  # recorded with its reason by the objective; the search goes on
                    out_of_memory = isinstance(error, torch.OutOfMemoryError)
        except KeyboardInterrupt:
            # Ctrl-C at any moment after the ask, before training too: the trial fails and, with its graph drawn,
            # is queued again, so that a stopped worker leaves no RUNNING trial for a grace period.
            frozen = self._tell(study, trial, TrialState.FAIL)
            if frozen is not None and frozen.params:
                RequeueTrial(self.settings.max_retry)(study, frozen)
            raise
        if out_of_memory:  # the failed trial's tensors are garbage now; give their memory back to the GPU
            gc.collect()
            torch.cuda.empty_cache()
        self._tell(study, trial, state, value)
        return state, storage.get_trial(trial_id).user_attrs.get(FAIL_REASON_ATTR)

    def _hand_back(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Fail a trial that must not run because the budget is taken; a queued trial (a retry, a baseline) goes
        back in the queue."""
        trial.set_user_attr(FAIL_REASON_ATTR, f"not run: the other workers' trials already fill the budget of "
                            f"{self.settings.budget} trials")
        frozen = self._tell(study, trial, TrialState.FAIL)
        if frozen is not None and frozen.params:  # only a queued trial has its graph before it runs
            queue_again(study, frozen, frozen.system_attrs.get(RETRY_HISTORY_ATTR))

    def _tell(self, study: optuna.Study, trial: optuna.Trial, state: TrialState,
              value: float | None = None) -> optuna.trial.FrozenTrial | None:
        try:
            return study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            # Another worker saw no heartbeat for a grace period and failed this trial; its queued retry will
            # run the same graph again, so this result is not counted twice. Optuna refuses to tell a trial it
            # reads as failed with a ValueError, and one failed while it tells with UpdateFinishedTrialError.
            failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if not any(t.number == trial.number for t in failed):
                raise
            print(f"ktg: warning: trial {trial.number} was declared stale while running (heartbeats not "
                  f"recorded for {self.settings.grace_period} s); its retry runs it again", file=sys.stderr)
            return None
