"""Where and how a run computes: the device, bf16 autocast and channels-last, cuDNN/determinism settings and
torch.compile's options — the same for training, evaluation, figures, the search's workers and the benchmark.

Several processes on one GPU may share it through CUDA MPS (:mod:`ktg.runtime.mps`).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

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

    An op without a deterministic implementation warns instead of failing the run; ktg's own models and
    losses use none.
    """
    if deterministic and device.type == "cuda":
        # cuBLAS is reproducible only with a fixed workspace; read when the first cuBLAS handle is made.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def autocast(device: torch.device, amp: bool) -> AbstractContextManager:
    """bf16 autocast on ``device`` when ``amp``, else a context that changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def compile_options(config: TrainConfig) -> dict[str, Any]:
    """The compile arguments of :func:`ktg.train.make_train_step` that ``config`` asks for: inductor in its
    mode, or eager."""
    return {"compile_backend": "inductor" if config.compile else None, "compile_mode": config.compile_mode}
