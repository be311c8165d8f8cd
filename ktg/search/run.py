"""``ktg search`` on one machine: check what can be checked, then run one worker here or several in processes of
their own until the study holds its budget of finished trials (see :mod:`ktg.search.worker` for the loop)."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Callable

import optuna
import sqlalchemy
import torch

from ktg.errors import KTGError
from ktg.io import check_writable
from ktg.runtime import resolve_device
from ktg.runtime.mps import mps_daemon, running_daemon
from ktg.search.display import SearchDisplay
from ktg.search.objective import TRIALS_DIR, check_space
from ktg.search.processes import auto_jobs_per_device, run_processes
from ktg.search.rescore import RaceRunCallback
from ktg.search.settings import SearchSettings
from ktg.search.signals import StopRequest
from ktg.search.storage import open_storage, queue_baseline
from ktg.search.worker import Worker, connect, rewrite_results
from ktg.train import FinishCallback


def run_search(settings: SearchSettings, *, jobs_per_device: int | None = None, mps: bool = False,
               on_finish: FinishCallback | None = None, on_race_run: RaceRunCallback | None = None,
               progress: bool = True,
               on_start: Callable[[], None] | None = None) -> optuna.Study:
    """Run ``jobs_per_device`` workers on this machine (None: :func:`auto_jobs_per_device`) until the study
    holds its budget of finished trials and the race (``settings.rescore_top``) is decided; write the
    leaderboard, best graph and verdict; return the study.

    What can be checked is checked before anything is written: the device, that the search folder can be
    written, the data (loaded here once), the space against the data (:func:`check_space`) and the storage.
    The study's baselines are queued, unless it holds them already. Then ``on_start`` is called (the command
    line says what it searches) and the trials begin. With one job the worker runs in this process. With
    ``mps``, several workers on a GPU run side by side through CUDA MPS
    (:func:`ktg.runtime.mps.mps_daemon`). ``on_finish`` is called as each race run finishes all its epochs
    (:data:`ktg.train.FinishCallback`; a module-level function, for spawned workers), ``on_race_run`` after each
    race run (:func:`ktg.search.rescore.rescore`). Raises KeyboardInterrupt
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
    _check_trial_folders(settings)
    study, _, _ = connect(settings, heartbeats=False)  # creates the study or checks that this command may join it
    for spec in settings.baselines:  # first in the queue of a new study
        queue_baseline(study, spec.name, settings.space.to_params(spec), settings.space.distributions())
    if on_start is not None:
        on_start()
    if jobs > 1:
        print(f"{jobs} workers on {device}, each in its own process{_sharing(device, mps)}")
    elif mps:
        print("--mps: a single worker has no one to share the GPU with; MPS is not started")
    display = SearchDisplay(study, settings.budget, enabled=progress, epochs=settings.config.epochs)
    in_main_thread = threading.current_thread() is threading.main_thread()
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {stop: signal.signal(stop, StopRequest.handle) for stop in stops} if in_main_thread else {}
    StopRequest.requested = False
    try:
        if jobs == 1:
            Worker(settings, dataset=dataset, on_trial=display.update, on_epoch=display.epoch,
                   on_finish=on_finish, on_race_run=on_race_run).run()
        else:
            with mps_daemon() if mps else contextlib.nullcontext():
                run_processes(settings, jobs, device, study, display, on_finish, on_race_run)
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


def _check_trial_folders(settings: SearchSettings) -> None:
    """Refuse a search folder whose ``trials/`` holds runs while the study has no trials (they belong to another
    study: another --nodes names another study), before the study is created: a refused command writes nothing,
    and an empty second study in the folder's storage would make every later ``ktg study show`` ask which one."""
    trials = settings.out / TRIALS_DIR
    if not (trials.is_dir() and any(trials.iterdir())):
        return
    url = settings.storage_url
    database = url.startswith("sqlite") and sqlalchemy.engine.make_url(url).database
    if database and not Path(database).exists():
        has_trials = False  # opening the storage would create its file
    else:
        storage = open_storage(url)
        try:
            has_trials = bool(storage.get_all_trials(storage.get_study_id_from_name(settings.study_name),
                                                     deepcopy=False))
        except KeyError:  # no such study yet
            has_trials = False
    if not has_trials:
        raise KTGError(f"{trials} holds trial runs, but study {settings.study_name!r} has no trials: they belong to "
                       f"another study. Choose another --out, or the --storage and --study they were made with")
