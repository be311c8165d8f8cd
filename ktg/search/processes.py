"""Several workers on one device, each in its own process: how many (:func:`auto_jobs_per_device`), and
starting and watching them (:func:`run_processes`).

Each worker is a process started with "spawn" (its own CUDA context); the parent updates the progress display
from the storage until they end, and forwards Ctrl-C to them as one SIGTERM each. A worker whose parent is gone
without forwarding anything (killed with SIGKILL, by the OOM killer, or by a script that kills its child) sends
itself that SIGTERM (:func:`stop_when_orphaned`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time

import optuna
import torch

from ktg.errors import KTGError
from ktg.search.display import SearchDisplay
from ktg.search.rescore import RaceRunCallback
from ktg.search.settings import SearchSettings
from ktg.search.signals import StopRequest
from ktg.search.worker import Worker
from ktg.train import FinishCallback

#: How often the parent of several workers reads the storage to update the progress display.
MONITOR_SECONDS = 5.0
#: How often a worker looks whether the process that started it is still there.
PARENT_POLL_SECONDS = 2.0


def auto_jobs_per_device(device: torch.device, nodes: int, batch_size: int) -> int:
    """How many trials to run side by side on ``device`` when ``--jobs-per-device`` is not given.

    CPU: 1 (one trial already uses every core). CUDA: a step of one trial trains ``nodes × batch_size``
    images; small steps leave a large GPU idle between small kernels (three plain ABN-ResNet-18 on an H100, not
    ktg: 1,200–1,600 node-images/s at batch 16 against 8,400 at batch 128; docs/performance.md, "Figures not
    measured by ktg"), so run ⌈256 / (nodes × batch)⌉ trials (the paper's 3 nodes × batch 16 = 48 images: 6),
    at most one per 10 GiB of GPU memory, one per CPU core and 8 in all. 256 is a guess from those figures, not
    a measurement of ktg: measure (``experiments/benchmark.py``) and set ``--jobs-per-device`` for long searches.
    """
    if device.type != "cuda":
        return 1
    wanted = -(-256 // (nodes * batch_size))
    memory_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return max(1, min(wanted, int(memory_gib // 10), os.cpu_count() or 1, 8))


def stop_when_orphaned(parent: int, poll_seconds: float = PARENT_POLL_SECONDS) -> threading.Thread:
    """Watch, in a daemon thread, that ``parent`` is still this process's parent, and once it is not, send this
    process the SIGTERM the parent would have forwarded: a worker left behind would go on adding trials and race
    runs to the study that nobody watches, with the code it loaded, after the user saw the search stop."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="ktg-parent-watch", daemon=True)
    thread.start()
    return thread


def worker_process(settings: SearchSettings, threads: int | None, on_finish: FinishCallback | None,
                   on_race_run: RaceRunCallback | None, parent: int) -> None:
    """Entry point of a spawned worker of the process ``parent``: exit status 0 done, 2 user error, 130
    interrupted."""
    # The parent forwards Ctrl-C as exactly one SIGTERM, so a second key press cannot cut the cleanup short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, StopRequest.handle)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        stop_when_orphaned(parent)  # inside: a parent gone already stops this worker at once, as Ctrl-C would
        Worker(settings, on_finish=on_finish, on_race_run=on_race_run).run()
    except KTGError as error:
        print(f"ktg: error: worker {os.getpid()}: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def run_processes(settings: SearchSettings, jobs: int, device: torch.device, study: optuna.Study,
                  display: SearchDisplay, on_finish: FinishCallback | None,
                  on_race_run: RaceRunCallback | None = None) -> None:
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // jobs) if device.type == "cpu" else None
    workers = [context.Process(target=worker_process, args=(settings, threads, on_finish, on_race_run, os.getpid()),
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
