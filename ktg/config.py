"""How to train: :class:`TrainConfig`, everything about a run but the graph and the data.

Torch-free on purpose: the command line reads its training defaults and choices from here
(``dataclasses.fields(TrainConfig)``, :data:`SCHEDULES`, :data:`COMPILE_MODES`) while it builds its parser,
before any command has asked for torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ktg.errors import KTGError
from ktg.registry import RECIPES, RecipeRecord

#: Learning-rate schedules, stepped once per epoch.
SCHEDULES = ("cosine", "step", "constant")
#: Images per evaluation batch: the default of TrainConfig.eval_batch_size, of ktg eval and of ktg predict.
EVAL_BATCH_SIZE = 256
#: Exponents u of the power-mean rules an evaluation reports: the default of ktg.evaluate.evaluate_run and of
#: ktg eval.
EVAL_POWERS = (0.1, 0.5, 2.0)
#: torch.compile's modes: ``reduce-overhead`` uses CUDA graphs; ``max-autotune`` also searches kernels (slow to start).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
#: The TrainConfig fields that say where a run computes and how fast, not what: the only ones that may differ
#: between the workers of one study and when a run is resumed. Everything else, resolved for the device
#: (:meth:`TrainConfig.resolved`), is the run's identity (:func:`training_identity`).
PER_PROCESS_FIELDS = ("device", "compile", "compile_mode", "eval_batch_size")
#: The fields of a learning-rate schedule: a recipe's schedule is replaced as a whole (TrainConfig.from_recipe).
_SCHEDULE_FIELDS = ("schedule", "milestones", "gamma")


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
    official test split. ``recipe`` names the registered recipe (:data:`ktg.registry.RECIPES`) the values came
    from, if any (see :meth:`from_recipe`); it is a label, the values are the other fields. :meth:`resolved`
    settles ``amp`` and ``channels_last`` for a device, and a run records them settled.

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
    recipe: str | None = None

    def __post_init__(self) -> None:
        if self.recipe is not None:
            recipe_record(self.recipe)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise KTGError(f"{option(name)} must be ≥ 1, got {value!r}")
        for name, low, high, bounds in _NUMBER_RANGES:
            value = getattr(self, name)
            if value is None and name == "holdout":
                continue
            if not _is_number(value) or not _inside(float(value), low, high, bounds):
                raise KTGError(f"{option(name)} must be a number {_describe(low, high, bounds)}, got {value!r}")
        for name in ("seed", "holdout_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
                raise KTGError(f"{option(name)} must be an integer in 0 … 2³² − 1, got {value!r}")
        if self.nesterov and self.momentum == 0:
            raise KTGError("--nesterov needs a --momentum above 0 (Nesterov momentum without momentum is nothing)")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        if self.schedule != "step" and self.gamma != defaults["gamma"]:
            raise KTGError(f"--gamma {self.gamma}: --schedule {self.schedule} has no steps (only step multiplies the "
                           "rate by --gamma at its milestones); drop --gamma or use --schedule step")
        if self.holdout is None and self.holdout_seed != defaults["holdout_seed"]:
            raise KTGError(f"--holdout-seed {self.holdout_seed} needs --holdout (the fraction it draws); drop "
                           "--holdout-seed or add --holdout")
        if self.schedule not in SCHEDULES:
            raise KTGError(f"unknown --schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if self.compile_mode not in COMPILE_MODES:
            raise KTGError(f"unknown --compile-mode {self.compile_mode!r}; choose one of: {', '.join(COMPILE_MODES)}")
        if self.compile_mode != "default" and not self.compile:
            raise KTGError(f"--compile-mode {self.compile_mode} needs --compile")
        self._check_milestones()

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

    @classmethod
    def from_recipe(cls, recipe: str | None, given: dict[str, Any],
                    suggested: dict[str, Any] | None = None) -> TrainConfig:
        """The config of ``recipe`` (None: no recipe): the fields ``given`` explicitly override the recipe's
        values, which override the ``suggested`` ones (a dataset's, :class:`ktg.data.DatasetDefaults`), which
        override the defaults. The recipe's name is kept in :attr:`recipe`.

        A recipe's schedule is one unit: a ``schedule`` given explicitly replaces it, the recipe's
        ``milestones`` and ``gamma`` with it (they belong to the recipe's schedule, not to the one given). Given
        ``milestones`` may be any sequence (the command line and chain files give lists); the config holds a tuple.
        """
        if "milestones" in given:
            given = {**given, "milestones": tuple(given["milestones"])}
        values = dict(recipe_record(recipe).train) if recipe is not None else {}
        if given.get("schedule", values.get("schedule")) != values.get("schedule"):
            values = {key: value for key, value in values.items() if key not in _SCHEDULE_FIELDS}
        return cls(**{**(suggested or {}), **values, **given, "recipe": recipe})

    def resolved(self, device_type: str) -> TrainConfig:
        """The config with ``amp`` and ``channels_last`` settled for a device of ``device_type`` (``"cuda"``,
        ``"cpu"``, …): a value left to the default (None) becomes on for CUDA and off elsewhere; channels-last asked
        for on the CPU is an error (see below)."""
        on_cuda = device_type == "cuda"
        if self.channels_last and device_type == "cpu":
            # Measured with PyTorch 2.14.1: the CPU backward of a strided 1×1 convolution (ResNet's downsampling
            # shortcut) on channels-last tensors corrupts the heap, and the process dies (tests/test_fuzz.py).
            raise KTGError("--channels-last is for CUDA: on the CPU, PyTorch's backward of a ResNet's strided 1×1 "
                           "convolution in channels-last memory crashes the process; drop --channels-last")
        return dataclasses.replace(self, amp=on_cuda if self.amp is None else self.amp,
                                   channels_last=on_cuda if self.channels_last is None else self.channels_last)

    @property
    def precision(self) -> str:
        """``"bf16 autocast"`` or ``"fp32"``, of a :meth:`resolved` config."""
        if self.amp is None:
            raise ValueError("the precision of an unresolved config depends on its device: see TrainConfig.resolved")
        return "bf16 autocast" if self.amp else "fp32"

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (tuples as lists), as config.json and checkpoints store it."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config a :meth:`to_dict` dict describes; a field it lacks (a run from before ktg had it) takes its
        default, an unknown one is an error."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise KTGError(f"unknown training option {unknown[0]!r} (written by another version of ktg?)")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


#: The float fields' ranges: (field, low, high, which ends are included: "[]", "[)", "(]" or "()"); every value
#: must also be finite. A value outside is an error where the config is made, not a traceback from torch's
#: optimiser or a run that silently trains on something else.
_NUMBER_RANGES = (("lr", 0.0, math.inf, "()"), ("momentum", 0.0, 1.0, "[)"), ("weight_decay", 0.0, math.inf, "[)"),
                  ("gamma", 0.0, 1.0, "(]"), ("holdout", 0.0, 1.0, "()"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _inside(value: float, low: float, high: float, bounds: str) -> bool:
    """Whether the finite ``value`` lies in the range from ``low`` to ``high`` with ``bounds`` ("[)" …)."""
    above = value >= low if bounds[0] == "[" else value > low
    below = value <= high if bounds[1] == "]" else value < high
    return math.isfinite(value) and above and below


def _describe(low: float, high: float, bounds: str) -> str:
    """A range for a message: ``in [0, 1)``, ``above 0``, ``≥ 0``."""
    if high == math.inf:
        return f"above {low:g}" if bounds[0] == "(" else f"≥ {low:g}"
    return f"in {bounds[0]}{low:g}, {high:g}{bounds[1]}"


def recipe_record(name: str) -> RecipeRecord:
    """The registered recipe ``name``; KTGError naming the registered ones if there is none."""
    if name not in RECIPES:
        raise KTGError(f"unknown --recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_node_options(name: str | None) -> dict[str, Any]:
    """The model options the recipe ``name`` gives every node ({} for None, no recipe); options given explicitly
    for every node override them."""
    return dict(recipe_record(name).node_options) if name is not None else {}


def training_identity(config: TrainConfig) -> dict[str, Any]:
    """What a run of the :meth:`~TrainConfig.resolved` ``config`` computes, as JSON-ready values: every field but
    :data:`PER_PROCESS_FIELDS` and the recipe's name, with ``amp`` given as its :attr:`~TrainConfig.precision`
    (so that a difference reads ``precision: stored 'fp32', given 'bf16 autocast'``). The workers of one study
    and a resumed run must agree on it (compare with :func:`differences`)."""
    if config.channels_last is None:
        raise ValueError("a training identity is that of a resolved config: see TrainConfig.resolved")
    values = {key: value for key, value in config.to_dict().items()
              if key not in (*PER_PROCESS_FIELDS, "recipe", "amp")}
    return {**values, "precision": config.precision}


def differences(stored: Any, given: Any, *, stored_as: str = "stored", given_as: str = "given",
                prefix: str = "") -> list[str]:
    """Where the JSON-like values ``stored`` and ``given`` differ, key by key into nested dicts, one line each:
    ``"train.precision: study has 'fp32', you gave 'bf16 autocast'"`` with ``stored_as="study has"`` and
    ``given_as="you gave"`` (a missing key reads as None); empty when they are equal."""
    if isinstance(stored, dict) and isinstance(given, dict):
        return [line for key in sorted(set(stored) | set(given)) if stored.get(key) != given.get(key)
                for line in differences(stored.get(key), given.get(key), stored_as=stored_as, given_as=given_as,
                                        prefix=f"{prefix}{key}.")]
    return [] if stored == given else [f"{prefix.rstrip('.')}: {stored_as} {stored!r}, {given_as} {given!r}"]


def option(field_name: str) -> str:
    """The command-line option of a :class:`TrainConfig` field: ``batch_size`` → ``--batch-size``."""
    return "--" + field_name.replace("_", "-")
