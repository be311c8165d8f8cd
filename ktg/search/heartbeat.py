"""A running trial's heartbeat: the sign of life by which other workers tell a running trial from a dead one."""

from __future__ import annotations

import sys
import threading


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
