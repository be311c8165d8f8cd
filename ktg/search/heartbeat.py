"""Signs of life by which other workers tell running work from dead work: a running trial's heartbeat, and the
renewed claim of a rescore run (:mod:`ktg.search.rescore`)."""

from __future__ import annotations

import sys
import threading
from typing import Callable


class Renewal:
    """Calls ``write`` on entering and then every ``interval`` seconds from a daemon thread, until exit.

    Unlike Optuna's own heartbeat thread, a failed write (a database briefly unreachable) is reported as
    ``what`` and retried at the next beat instead of silently ending the signs of life of work still running.
    """

    def __init__(self, write: Callable[[], None], interval: float, what: str) -> None:
        self.write, self.interval, self.what = write, interval, what
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ktg-heartbeat", daemon=True)

    def __enter__(self) -> "Renewal":
        self.write()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.write()
            except Exception as error:  # keep beating: the work is alive, only this write failed
                print(f"ktg: warning: {self.what} not recorded ({error}); retrying", file=sys.stderr)


class Heartbeat(Renewal):
    """Records a trial's heartbeat now and then every ``interval`` seconds (see :class:`Renewal`)."""

    def __init__(self, storage, trial_id: int, interval: float) -> None:
        super().__init__(lambda: storage.record_heartbeat(trial_id), interval, f"heartbeat of trial {trial_id}")
