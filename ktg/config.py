"""How to train: :class:`TrainConfig`, everything about a run but the graph and the data.

Torch-free on purpose: the command line reads its training defaults and choices from here
(``dataclasses.fields(TrainConfig)``, :data:`SCHEDULES`, :data:`COMPILE_MODES`) while it builds its parser,
before any command has asked for torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ktg.errors import KTGError

#: Learning-rate schedules, stepped once per epoch.
SCHEDULES = ("cosine", "step", "constant")
#: Images per evaluation batch: the default of TrainConfig.eval_batch_size, of ktg eval and of ktg predict.
EVAL_BATCH_SIZE = 256
#: Exponents u of the power-mean rules an evaluation reports: the default of ktg.evaluate.evaluate_run and of
#: ktg eval.
EVAL_POWERS = (0.1, 0.5, 2.0)
#: torch.compile's modes: ``reduce-overhead`` uses CUDA graphs; ``max-autotune`` also searches kernels (slow to start).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (everything but the graph and the data).

    ``amp`` (bf16 autocast) / ``channels_last`` default (None) to on for CUDA and off elsewhere (bf16 is slower than
    fp32 on most CPUs). ``compile`` runs the nodes' forward and backward through ``torch.compile``; it is off by
    default because for three plain ABN-ResNet-18 on an H100 (not ktg; docs/performance.md, "Figures not measured by
    ktg") it gained about 3 % at batch 128 for 108 s of warm-up, which pays only where a long-lived worker reuses
    the compiled code across trials (see :func:`ktg.train.make_train_step`). ``compile_mode`` is torch.compile's
    mode: ``reduce-overhead`` adds CUDA graphs, which replay the nodes' forward and backward without a launch per
    kernel (the cost that dominates at the paper's batch 16). ``deterministic`` asks for reproducible kernels (see
    :func:`ktg.runtime.configure_kernels`). ``holdout`` is the fraction of the training split held out for
    evaluation (the search's validation split); None trains on the whole training split and evaluates on the
    official test split.

    Mistakes are reported as :class:`KTGError` naming the command-line option of the field.
    """

    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = EVAL_BATCH_SIZE
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    compile_mode: str = "default"
    deterministic: bool = False
    holdout: float | None = None
    holdout_seed: int = 0
    drop_last: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise KTGError(f"{option(name)} must be ≥ 1, got {value!r}")
        if not self.lr > 0:
            raise KTGError(f"--lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise KTGError(f"unknown --schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if self.compile_mode not in COMPILE_MODES:
            raise KTGError(f"unknown --compile-mode {self.compile_mode!r}; choose one of: {', '.join(COMPILE_MODES)}")
        if self.compile_mode != "default" and not self.compile:
            raise KTGError(f"--compile-mode {self.compile_mode} needs --compile")
        self._check_milestones()
        if self.holdout is not None and not 0.0 < self.holdout < 1.0:
            raise KTGError(f"--holdout must lie strictly between 0 and 1, got {self.holdout}")

    def _check_milestones(self) -> None:
        """Milestones only where the schedule reads them, and each one inside the run: the learning rate drops
        after milestone epoch m, so m must lie in 1 … epochs − 1 (one at or past --epochs never takes effect)."""
        given = " ".join(map(str, self.milestones))
        if self.schedule != "step":
            if self.milestones:
                raise KTGError(f"--milestones {given}: --schedule {self.schedule} has no milestones (only step "
                               "drops at milestones); drop --milestones or use --schedule step")
            return
        if not self.milestones:
            raise KTGError("--schedule step needs --milestones (epochs at which the learning rate drops)")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise KTGError(f"--milestones {given}: give each epoch once, in increasing order")
        if not all(1 <= m < self.epochs for m in self.milestones):
            raise KTGError(f"--milestones {given}: each must be at least 1 and below --epochs {self.epochs} (the rate "
                           "drops after a milestone's epoch, so one at or past the last epoch never takes effect); "
                           "lower the milestones or raise --epochs")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (tuples as lists), as config.json and checkpoints store it."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


def option(field_name: str) -> str:
    """The command-line option of a :class:`TrainConfig` field: ``batch_size`` → ``--batch-size``."""
    return "--" + field_name.replace("_", "-")
