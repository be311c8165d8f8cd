"""Finding the first training step whose loss is not finite, without reading the device back every step.

A NaN or infinite loss poisons the weights in the step that produces it (its backward and optimiser step
run before anyone looks), and every later step trains on the poisoned weights. So the run must stop at that
step, name it and its edges, and never save what came after. Reading the losses back after each step would
say so at once, but it stalls the host until the GPU has finished the step, so the GPU then idles while the
host prepares the next one: at the papers' batch 16, where a step is short, that costs a large share of
every step.

:class:`FirstNonFiniteStep` keeps the record on the device instead: how many steps of the epoch had only
finite losses before the first one that did not (a few tiny kernels per step, no host sync). Each step
copies that one number to pinned host memory without blocking, and the host reads the copy
:data:`LAG` steps later. By then the GPU has long finished the step that made the copy (waiting for its
event costs nothing then, and if it must wait, the GPU still has the steps in between queued, so it never
idles), so a non-finite loss stops the epoch :data:`LAG` steps after the step that produced it, and the
record names that step exactly. The record costs four tiny operations and one 8-byte copy per step, against
the step's more than a thousand (``experiments/operators.py``). Reading every N steps instead would either
stall (N = 1) or let the poisoned weights train for up to N steps; the pinned copy gets both a short delay and
no stall.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Sequence

import torch

#: Steps between a step and the host's reading of its record; the steps that run on poisoned weights.
LAG = 2


class FirstNonFiniteStep:
    """The first step of an epoch whose losses were not all finite, recorded on the device, seen on the host
    :data:`LAG` steps later (see the module's docstring).

    Args:
        names: the name of each loss term, in the order of the terms :meth:`record` receives.
        device: where the terms are (the training device).
    """

    def __init__(self, names: Sequence[str], device: torch.device) -> None:
        self.names = list(names)
        on_cuda = device.type == "cuda"
        self._all_finite = torch.ones((), dtype=torch.bool, device=device)
        self._finite_steps = torch.zeros((), dtype=torch.int64, device=device)  # steps before the first bad one
        copies = [torch.zeros((), dtype=torch.int64, pin_memory=on_cuda) for _ in range(LAG)]
        self._copies = copies
        # Read through NumPy views: reading a pinned tensor itself would count as a tensor read to the host.
        self._seen = [copy.numpy() for copy in copies]
        self._events = [torch.cuda.Event() if on_cuda else None for _ in range(LAG)]
        # The stream the copies run on: the training device's, which need not be the current device (cuda:1).
        self._stream = torch.cuda.current_stream(device) if on_cuda else None
        self._recent: deque[torch.Tensor] = deque(maxlen=LAG + 1)  # the terms of the last steps, to name edges
        self._steps = 0
        self._first: tuple[int, list[str]] | None = None  # once seen, the answer for good

    def record(self, terms: torch.Tensor) -> tuple[int, list[str]] | None:
        """Record one step's loss terms (a vector on the device, one per name). Returns (the first step, from 1,
        whose terms were not all finite, the names of its non-finite terms) once the host can see it, which
        is :data:`LAG` steps after that step (and from then on); None until then."""
        if self._first is not None:
            return self._first
        self._all_finite &= torch.isfinite(terms).all()
        self._finite_steps += self._all_finite  # stops counting at the first bad step: the record is sticky
        self._recent.append(terms)
        self._steps += 1
        slot = self._steps % LAG
        found = None
        if self._steps > LAG:  # the slot holds the copy made LAG steps ago: read it before it is overwritten
            event = self._events[slot]
            if event is not None:
                event.synchronize()
            found = self._found(int(self._seen[slot]), self._steps - LAG)
        self._copies[slot].copy_(self._finite_steps, non_blocking=True)
        if self._events[slot] is not None:
            self._events[slot].record(self._stream)
        return found

    def finish(self) -> tuple[int, list[str]] | None:
        """At the end of the epoch: what :meth:`record` would return, for the last steps it has not seen yet
        (one read of the device, which the epoch's end waits for anyway)."""
        return self._first or self._found(int(self._finite_steps.item()), self._steps)

    def _found(self, finite_steps: int, steps: int) -> tuple[int, list[str]] | None:
        """(first bad step, its non-finite terms' names) if fewer than ``steps`` steps were all finite. Every
        earlier read saw only finite steps, so the first bad one is among the last LAG + 1, whose terms are kept."""
        if finite_steps >= steps:
            return None
        step = finite_steps + 1
        terms = self._recent[step - (self._steps - len(self._recent)) - 1].tolist()
        self._first = step, [name for name, value in zip(self.names, terms) if not math.isfinite(value)]
        return self._first
