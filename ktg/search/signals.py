"""Ctrl-C and SIGTERM: how a worker, or the parent of several, is asked to stop cleanly."""

from __future__ import annotations


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
