"""Where and how a run computes: the device, bf16 autocast and channels-last, cuDNN/determinism settings and
torch.compile's options — the same for training, evaluation, figures, the search's workers and the benchmark.

Several processes on one GPU may share it through CUDA MPS (:mod:`ktg.runtime.mps`).
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterator

import torch

from ktg.config import TrainConfig
from ktg.errors import KTGError


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KTGError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise KTGError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def configure_kernels(device: torch.device, deterministic: bool) -> None:
    """Reproducible kernels, or the fastest ones (cuDNN autotuning on CUDA). Process-wide, set per run.

    Strict: an operation without a deterministic implementation raises (PyTorch's RuntimeError, which
    :func:`naming_nondeterministic_ops` turns into one line) instead of warning, since a warning in a log
    breaks the promise of a bit-for-bit repeat without stopping anything. ktg's own models and losses use none.
    """
    if deterministic and device.type == "cuda":
        # cuBLAS is reproducible only with a fixed workspace; read when the first cuBLAS handle is made.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic or torch.are_deterministic_algorithms_enabled():
        # Only when it changes something: the call imports torch._inductor (whose config it also sets), about
        # 1.4 s of every process's start on a CPU, for a flag that is off unless a run turned it on.
        torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


#: How PyTorch begins the error of an operation it cannot run deterministically (the operation's name first).
_NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


@contextmanager
def naming_nondeterministic_ops() -> Iterator[None]:
    """Turn PyTorch's error for an operation without a deterministic implementation (under ``--deterministic``,
    see :func:`configure_kernels`) into a one-line :class:`KTGError` naming the operation; other errors pass."""
    try:
        yield
    except RuntimeError as error:
        found = _NONDETERMINISTIC.match(str(error))
        if found is None:
            raise
        raise KTGError(f"--deterministic: {found.group(1)} has no deterministic implementation in PyTorch "
                       f"{torch.__version__} on this device; train without --deterministic") from None


def autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """bf16 autocast on ``device`` when ``amp``, else a context that changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def compile_options(config: TrainConfig) -> dict[str, Any]:
    """The compile arguments of :func:`ktg.train.make_train_step` that ``config`` asks for: inductor in its
    mode, or eager."""
    return {"compile_backend": "inductor" if config.compile else None, "compile_mode": config.compile_mode}
