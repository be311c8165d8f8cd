"""Workers: processes that join one study and run trials until it holds its budget of finished trials.

A worker is the loop below, with Optuna's ask/tell so that the budget, heartbeats and faults are handled in
one readable place:

1. fail the trials of dead workers (stale heartbeat) and queue them again;
2. stop when the study has ``trials`` finished (COMPLETE + PRUNED) trials; wait while the finished plus the
   running ones already reach the budget (a running trial may still fail and free its place);
3. ask for a trial (a queued retry first), record its first heartbeat, and check the budget once more: if the
   other workers' finished and running trials already fill it, this trial was started in a race with another
   worker and is handed back: it is marked failed with the reason "not run: …" before it draws a graph, so
   it never counts as finished;
4. train; record COMPLETE, PRUNED or FAIL with its reason; rewrite the leaderboard and best graph (a failed
   rewrite is a warning: the files are a view of the storage, and the next finished trial rewrites them).

Several workers may run on one machine (``--jobs-per-device``, separate processes started with "spawn", each
with its own CUDA context) or anywhere that reaches the storage. Ctrl-C or SIGTERM fails the running trial with
the reason "interrupted", queues it to run again, and stops; running the same command again resumes the study.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import TrialState

from ktg.data.images import Dataset
from ktg.errors import KTGError
from ktg.io import check_writable
from ktg.progress import Progress
from ktg.registry import PRUNERS, SAMPLERS
from ktg.runtime import resolve_device
from ktg.runtime.mps import mps_daemon, running_daemon
from ktg.search.objective import FAIL_REASON_ATTR, TRIALS_DIR, Objective, check_space
from ktg.search.results import FINISHED, last_value, state_counts, write_results
from ktg.search.settings import BEST_GRAPH, LEADERBOARD, SearchSettings, check_pruner, check_sampler
from ktg.search.storage import WORKER_ATTR, RequeueTrial, fail_stale_trials, open_storage, open_study, queue_again
from ktg.train import FinishCallback

CLAIMED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
#: How often the parent of several workers reads the storage to update the progress display.
MONITOR_SECONDS = 5.0


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The registered pruner ``name`` for trials of ``epochs`` epochs, the resource. Successive halving is the
    paper's choice."""
    check_pruner(name)
    return PRUNERS[name].load()(epochs)


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
                       pruner=make_pruner(settings.pruner, settings.config.epochs),
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


class Heartbeat:
    """Records a trial's heartbeat now and then every ``interval`` seconds from a daemon thread.

    Unlike Optuna's own heartbeat thread, a failed write (a database briefly unreachable) is reported and
    retried at the next beat instead of silently ending the heartbeats of a trial that is still running.
    """

    def __init__(self, storage, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ktg-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.storage.record_heartbeat(self.trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as error:  # keep beating: the trial is alive, only this write failed
                print(f"ktg: warning: heartbeat of trial {self.trial_id} not recorded ({error}); retrying",
                      file=sys.stderr)


class Worker:
    """One worker of a study: runs trials until the study holds ``settings.trials`` finished trials.

    Args:
        settings: see :class:`SearchSettings`.
        dataset: the data, when the caller has loaded it already; else it is loaded from ``settings.data_source``.
        on_trial: called with the study after every trial this worker ends (progress displays).
        on_epoch: called with (trial number, epoch, metrics) after every epoch.
        on_finish: called as a trial's run finishes all its epochs (see :data:`ktg.train.FinishCallback`).
        progress: show the trainer's progress bars.
    """

    def __init__(self, settings: SearchSettings, *, dataset: Dataset | None = None,
                 on_trial: Callable[[optuna.Study], None] | None = None,
                 on_epoch: Callable[[int, int, dict], None] | None = None, on_finish: FinishCallback | None = None,
                 progress: bool = False) -> None:
        self.settings = settings
        self.dataset = dataset
        self.on_trial = on_trial
        self.on_epoch = on_epoch
        self.on_finish = on_finish
        self.progress = progress
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.poll_seconds = min(5.0, settings.heartbeat_interval)

    def run(self) -> None:
        s = self.settings
        study, storage, study_id = connect(s)
        dataset = self.dataset if self.dataset is not None else s.data_source.load()
        objective = Objective(s.space, dataset, s.config, s.out, node_options=s.node_options,
                              on_epoch=self._after_epoch, on_finish=self.on_finish, progress=self.progress,
                              same_seed=s.same_seed)
        failures_in_a_row = 0
        while True:
            StopRequest.check()
            fail_stale_trials(study, storage, study_id)
            finished = storage.get_n_trials(study_id, FINISHED)
            if finished >= s.trials:
                return
            if finished + storage.get_n_trials(study_id, TrialState.RUNNING) >= s.trials:
                time.sleep(self.poll_seconds)  # the running trials may still fail and free their places
                continue
            state, reason = self._run_trial(study, storage, study_id, objective)
            if state is None:
                time.sleep(random.uniform(0.2, 2.0))  # lost a race for the last places; let it settle
                continue
            rewrite_results(study, s.out)
            if self.on_trial is not None:
                self.on_trial(study)
            failures_in_a_row = failures_in_a_row + 1 if state == TrialState.FAIL else 0
            if failures_in_a_row >= s.max_failures_in_a_row:
                raise KTGError(f"{failures_in_a_row} trials in a row failed, the last because: {reason}")

    def _after_epoch(self, trial: int, epoch: int, metrics: dict) -> None:
        StopRequest.check()  # an interrupt a library swallowed stops the trial here, one epoch late at the most
        if self.on_epoch is not None:
            self.on_epoch(trial, epoch, metrics)

    def _run_trial(self, study: optuna.Study, storage, study_id: int,
                   objective: Objective) -> tuple[TrialState | None, str | None]:
        """Ask, train and tell one trial; (its final state, its failure reason). State None: handed back."""
        with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize(); this loop is its twin
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        with Heartbeat(storage, trial_id, self.settings.heartbeat_interval):
            trial.set_user_attr(WORKER_ATTR, self.name)
            others = storage.get_n_trials(study_id, CLAIMED) - 1
            if others >= self.settings.trials:
                self._hand_back(study, trial)
                return None, None
            value, state, out_of_memory = None, TrialState.FAIL, False
            try:
                value, state = objective(trial), TrialState.COMPLETE
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except KeyboardInterrupt:
                if self._tell(study, trial, TrialState.FAIL) is not None:
                    RequeueTrial(self.settings.max_retry)(study, storage.get_trial(trial_id))
                raise
            except Exception as error:  # recorded with its reason by the objective; the search goes on
                out_of_memory = isinstance(error, torch.OutOfMemoryError)
        if out_of_memory:  # the failed trial's tensors are garbage now; give their memory back to the GPU
            gc.collect()
            torch.cuda.empty_cache()
        self._tell(study, trial, state, value)
        return state, storage.get_trial(trial_id).user_attrs.get(FAIL_REASON_ATTR)

    def _hand_back(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Fail a trial that must not run because the budget is taken; a queued retry goes back in the queue."""
        trial.set_user_attr(FAIL_REASON_ATTR, f"not run: the other workers' trials already fill the budget of "
                            f"{self.settings.trials} trials")
        frozen = self._tell(study, trial, TrialState.FAIL)
        if frozen is not None and frozen.params:  # only a queued retry has its graph before it runs
            queue_again(study, frozen, frozen.system_attrs["retry_history"])

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


# -- several workers on one device ----------------------------------------------------------------------


def auto_jobs_per_device(device: torch.device, nodes: int, batch_size: int) -> int:
    """How many trials to run side by side on ``device`` when ``--jobs-per-device`` is not given.

    CPU: 1 (one trial already uses every core). CUDA: a step of one trial trains ``nodes × batch_size``
    images; below about 256 images per step a large GPU idles between small kernels (the paper's 3 nodes ×
    batch 16 = 48), so run ⌈256 / (nodes × batch)⌉ trials, at most one per 10 GiB of GPU memory, one per CPU
    core and 8 in all. Measure and set ``--jobs-per-device`` for long searches.
    """
    if device.type != "cuda":
        return 1
    wanted = -(-256 // (nodes * batch_size))
    memory_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return max(1, min(wanted, int(memory_gib // 10), os.cpu_count() or 1, 8))


class StopRequest:
    """Ctrl-C or SIGTERM (in this process, or the SIGTERM a parent forwards to its workers; a batch system such as
    Slurm sends SIGTERM before it cancels, requeues or times out a job): raise KeyboardInterrupt now, and remember
    it. A library that swallows the exception (a bare ``except:`` around an import) must not make the worker carry
    on: the worker loop checks :attr:`requested` before every trial as well. Only the first signal raises: Slurm
    signals every process of a job, so a worker receives its parent's SIGTERM besides its own, and the second must
    not cut short the cleanup the first began."""

    requested = False

    @classmethod
    def handle(cls, signum, frame) -> None:
        if cls.requested:
            return
        cls.requested = True
        raise KeyboardInterrupt

    @classmethod
    def check(cls) -> None:
        if cls.requested:
            raise KeyboardInterrupt


def _worker_process(settings: SearchSettings, threads: int | None, on_finish: FinishCallback | None) -> None:
    """Entry point of a spawned worker: exit status 0 done, 2 user error, 130 interrupted."""
    # The parent forwards Ctrl-C as exactly one SIGTERM, so a second key press cannot cut the cleanup short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, StopRequest.handle)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        Worker(settings, on_finish=on_finish).run()
    except KTGError as error:
        print(f"ktg: error: worker {os.getpid()}: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


class SearchDisplay:
    """The search's progress over its budget of finished trials: one line for every trial that ends and, on a
    terminal, a bar showing the best accuracy so far and the running trial's epoch (see :class:`Progress`)."""

    def __init__(self, study: optuna.Study, total: int, *, enabled: bool, epochs: int) -> None:
        self.epochs = epochs
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        counts = state_counts(study)
        self.progress = Progress(total, desc="search", unit="trial", initial=counts["complete"] + counts["pruned"],
                                 enabled=enabled)

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        for trial in trials:
            if trial.state.is_finished() and trial.number not in self.seen:
                self.seen.add(trial.number)
                self.progress.write(trial_line(trial))
        counts = state_counts(study)
        complete = [t.value for t in trials if t.state == TrialState.COMPLETE]
        self.progress.advance(counts["complete"] + counts["pruned"],
                              best=f"{100 * max(complete):.2f}%" if complete else "-", running=counts["running"],
                              failed=counts["fail"])

    def epoch(self, trial: int, epoch: int, metrics: dict) -> None:
        self.progress.status(trial=f"{trial}: epoch {epoch}/{self.epochs}, "
                             f"ensemble {100 * metrics['ensemble_accuracy']:.2f}%")

    def close(self) -> None:
        self.progress.close()


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """One line about an ended trial, for the console."""
    value = last_value(trial)
    accuracy = f"ensemble {100 * value:.2f} %" if value is not None else "no epoch finished"
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number}: complete, {accuracy} after {trial.last_step} epochs"
    if trial.state == TrialState.PRUNED:
        return f"trial {trial.number}: pruned after epoch {trial.last_step}, {accuracy}"
    reason = trial.user_attrs.get(FAIL_REASON_ATTR) or "its worker stopped sending heartbeats"
    return f"trial {trial.number}: failed, {reason}"


def run_search(settings: SearchSettings, *, jobs_per_device: int | None = None, mps: bool = False,
               on_finish: FinishCallback | None = None, progress: bool = True,
               on_start: Callable[[], None] | None = None) -> optuna.Study:
    """Run ``jobs_per_device`` workers on this machine (None: :func:`auto_jobs_per_device`) until the study
    holds its budget of finished trials; write the leaderboard and best graph; return the study.

    What can be checked is checked before anything is written: the device, that the search folder can be
    written, the data (loaded here once), the space against the data (:func:`check_space`) and the storage.
    Then ``on_start`` is called (the command line says what it searches) and the trials begin. With one job the
    worker runs in this process. With ``mps``, several workers on a GPU run side by side through CUDA MPS
    (:func:`ktg.runtime.mps.mps_daemon`). ``on_finish`` is called as each trial's run finishes all its epochs
    (:data:`ktg.train.FinishCallback`; a module-level function, for spawned workers). Raises KeyboardInterrupt
    after a clean stop on Ctrl-C or SIGTERM.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = resolve_device(settings.config.device)
    if mps and device.type != "cuda":
        raise KTGError(f"--mps lets the workers on one CUDA GPU run side by side; this search runs on {device}")
    jobs = (auto_jobs_per_device(device, settings.space.num_nodes, settings.config.batch_size)
            if jobs_per_device is None else jobs_per_device)
    if jobs < 1:
        raise KTGError(f"--jobs-per-device must be at least 1, got {jobs}")
    check_writable(settings.out, "the search folder --out")
    dataset = settings.data_source.load()
    check_space(settings.space, dataset, settings.node_options)
    study, _, _ = connect(settings, heartbeats=False)  # creates the study or checks that this command may join it
    _check_trial_folders(study, settings.out)
    if on_start is not None:
        on_start()
    if jobs > 1:
        print(f"{jobs} workers on {device}, each in its own process{_sharing(device, mps)}")
    elif mps:
        print("--mps: a single worker has no one to share the GPU with; MPS is not started")
    display = SearchDisplay(study, settings.trials, enabled=progress, epochs=settings.config.epochs)
    in_main_thread = threading.current_thread() is threading.main_thread()
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {stop: signal.signal(stop, StopRequest.handle) for stop in stops} if in_main_thread else {}
    StopRequest.requested = False
    try:
        if jobs == 1:
            Worker(settings, dataset=dataset, on_trial=display.update, on_epoch=display.epoch,
                   on_finish=on_finish).run()
        else:
            with mps_daemon() if mps else contextlib.nullcontext():
                _run_processes(settings, jobs, device, study, display, on_finish)
        display.update(study)
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
        display.close()
        rewrite_results(study, settings.out)
    return study


def _sharing(device: torch.device, mps: bool) -> str:
    """How the workers share ``device``, for the line that starts a search."""
    if device.type != "cuda":
        return ""
    daemon = running_daemon()
    if daemon is not None:
        return f", side by side through the CUDA MPS daemon at {daemon}"
    if mps:
        return ", side by side through a private CUDA MPS daemon, quit when the search ends"
    return ", taking turns on the GPU (--mps runs them side by side, where CUDA MPS is allowed)"


def _check_trial_folders(study: optuna.Study, out: Path) -> None:
    trials = out / TRIALS_DIR
    if not study.get_trials(deepcopy=False) and trials.is_dir() and any(trials.iterdir()):
        raise KTGError(f"{trials} holds trial runs, but study {study.study_name!r} has no trials: they belong to "
                       f"another study. Choose another --out, or the --storage and --study they were made with")


def _run_processes(settings: SearchSettings, jobs: int, device: torch.device, study: optuna.Study,
                   display: SearchDisplay, on_finish: FinishCallback | None) -> None:
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs) if device.type == "cpu" else None
    workers = [context.Process(target=_worker_process, args=(settings, threads, on_finish),
                               name=f"ktg-search-worker-{i}") for i in range(jobs)]
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):
            StopRequest.check()
            display.update(study)
            multiprocessing.connection.wait([worker.sentinel for worker in workers if worker.is_alive()],
                                            timeout=MONITOR_SECONDS)
    except KeyboardInterrupt:
        for worker in workers:
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():  # its trial is left RUNNING; the next worker fails it as stale and retries it
                worker.kill()
        raise
    failed = [worker for worker in workers if worker.exitcode != 0]
    if failed:
        codes = ", ".join(f"{w.name}: {w.exitcode}" for w in failed)
        raise KTGError(f"{len(failed)} of {jobs} workers stopped with an error ({codes}); their messages are above")
