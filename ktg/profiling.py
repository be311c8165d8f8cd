"""Counting what a block of PyTorch code dispatches, to reason about kernel launches on any device."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class CountOperators(TorchDispatchMode):
    """Counts the operators dispatched inside ``with CountOperators() as counter:`` (``counter.count``),
    views excluded: they only relabel memory. In eager mode each counted operator is about one kernel launch,
    which is what a step costs on a GPU at small batches, so counts made on a CPU carry over. The count includes
    the backward when it runs inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))
