"""Progress a person can read: bars on a terminal, one plain line per finished epoch or trial in a log.

tqdm bars redraw themselves in place on a terminal. Written into a file (a batch job's log, a pipe) the same
bars leave cursor-up codes and a new line at every refresh, so there each finished unit is one plain line
instead and the bars inside a unit (its batches) are left out. :class:`Progress` makes that choice, once, for
the trainer, the evaluation and the search alike. Progress goes to stderr; results go to stdout.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


class Progress:
    """Progress over ``total`` units (epochs, trials): a bar on a terminal, one line per finished unit in a log,
    nothing when not ``enabled``.

    Args:
        total: the number of units; ``initial`` of them are done already (a resumed run).
        desc, unit: the bar's label and unit name (``"training"``, ``"epoch"``).
        enabled: False shows nothing at all (``--no-progress``).
    """

    def __init__(self, total: int, *, desc: str, unit: str, initial: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bars = bars_wanted(enabled)
        self.bar = tqdm(total=total, initial=min(initial, total), desc=desc, unit=unit, disable=not self.bars,
                        dynamic_ncols=True)

    def announce(self, line: str) -> None:
        """Say what begins: in a log as ``line``; on a terminal the bar's label says it."""
        if not self.bars:
            self.write(line)

    def finished(self, line: str, **status: Any) -> None:
        """One unit finished: on a terminal the bar moves on and shows ``status``; in a log ``line`` is written."""
        if self.bars:
            self.advance(**status)
        else:
            self.write(line)

    def advance(self, done: int | None = None, **status: Any) -> None:
        """Move the bar to ``done`` units (default: one further) and show ``status``; a terminal only."""
        if self.bars:
            if status:
                self.bar.set_postfix(status, refresh=False)
            self.bar.update((self.bar.n + 1 if done is None else min(done, self.bar.total)) - self.bar.n)

    def status(self, **status: Any) -> None:
        """Show ``status`` beside the bar (a terminal only: a log gets one line per unit, not per update)."""
        if self.bars:
            self.bar.set_postfix(status, refresh=True)

    def write(self, line: str) -> None:
        """A line of its own: above the bar on a terminal, plain in a log."""
        if self.bars:
            tqdm.write(line, file=sys.stderr)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def bars_wanted(enabled: bool = True) -> bool:
    """Whether progress is drawn as bars: it is wanted and stderr is a terminal (else: lines, or nothing)."""
    return enabled and sys.stderr.isatty()


def inner_bar(iterable: Iterable[T], *, total: int, desc: str, unit: str, enabled: bool = True) -> Iterable[T]:
    """``iterable`` with a bar that goes away when it ends, on a terminal and when ``enabled``; as it is in a log,
    which gets no line for the steps of a unit."""
    if not bars_wanted(enabled):
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
