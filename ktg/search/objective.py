"""One trial: draw a graph, train it with :func:`ktg.train.train`, report the ensemble's validation accuracy.

Each trial trains with its own seed (:func:`trial_seed`), so initial weights, batch order and augmentation are
drawn afresh per trial as in the papers' search (docs/method.md#search); ``same_seed`` gives every trial the
config's seed instead (common random numbers).

The trainer knows nothing of Optuna. The only contact is its epoch callback: after every evaluated epoch the
objective reports the ensemble accuracy as the intermediate value at step = epoch and answers the trainer's
"stop?" with the pruner's verdict. A trial is evaluated only where the pruner reads it (its rungs; every epoch
for a pruner such as median) and at its last epoch: other evaluations would feed no decision. Without pruning it is
evaluated every epoch, to measure how well each epoch predicts the last (``ktg study fidelity``). The last epoch is
reported but not put to the pruner: a trial that has trained all its epochs is complete, pruning it then would
save nothing and only hide a finished result.
"""

from __future__ import annotations

import dataclasses
import traceback
from pathlib import Path
from typing import Any, Callable, Collection

import optuna
import torch

from ktg.config import TrainConfig
from ktg.data.images import Dataset
from ktg.errors import KTGError
from ktg.graph import default_model
from ktg.models import create_model
from ktg.registry import LOSS_DESIGNS
from ktg.run_folder import EpochRecord, RunFolder
from ktg.search.keys import (
    BASELINE_ATTR,
    FAIL_REASON_ATTR,
    GRAPH_ATTR,
    RESULT_ATTRS,
    RETRY_OF_ATTR,
    RUN_DIR_ATTR,
)
from ktg.search.sampler import stable_hash
from ktg.search.space import SearchSpace
from ktg.train import FinishCallback, train

TRIALS_DIR = "trials"


def trial_dir(out: str | Path, number: int) -> Path:
    """Where trial ``number`` trains, and its retries continue: ``OUT/trials/<number>/``."""
    return Path(out) / TRIALS_DIR / str(number)


def trial_seed(seed: int, trial_number: int) -> int:
    """The seed of trial ``trial_number`` in a search whose training config has ``seed``: a hash of both, in
    [0, 2³¹), so every trial, and every study with another ``seed``, draws unrelated randomness."""
    return stable_hash("ktg trial seed", seed, trial_number) >> 33


def failure_reason(error: BaseException, run_dir: Path | None = None) -> str:
    """One line saying why a trial failed; programming errors point at the traceback saved in ``run_dir``."""
    if isinstance(error, torch.OutOfMemoryError):
        return "out of GPU memory: lower --batch-size or --jobs-per-device"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM)"
    if isinstance(error, KTGError):
        return str(error)
    where = f" (traceback in {RunFolder(run_dir).error_file})" if run_dir is not None else ""
    return f"{type(error).__name__}: {error}{where}"


def check_space(space: SearchSpace, dataset: Dataset, node_options: dict[str, Any] | None = None) -> None:
    """Refuse, before any trial, a search space whose attention crops do not fit the attention maps of its models
    at the dataset's image size (``docs/method.md#attention-crops``): every trial that draws an attention edge
    would fail, and the search would quietly favour the graphs without one. Each searched model is built (with
    the nodes' options, without pretrained weights, which change no shape) and measured on one blank image."""
    if not any(LOSS_DESIGNS[design].needs_attention for design in space.designs):
        return
    options = {key: value for key, value in (node_options or {}).items() if key != "pretrained"}
    size = dataset.image_size
    for model in dict.fromkeys(space.models or (space.model or default_model(size),)):
        network = create_model(model, dataset.num_classes, **options).eval()
        with torch.no_grad():
            height, width = network(torch.zeros(1, 3, size, size)).attention.shape[-2:]
        too_large = [k for k in space.crop_sizes if k > min(height, width)]
        if too_large:
            raise KTGError(f"--crop-sizes: the attention maps of {model} on {size}-px images (--image-size) are "
                           f"{height}×{width}, too small for crop size {' '.join(map(str, too_large))}; use crop "
                           f"sizes ≤ {min(height, width)}, larger images, or --designs without attention")


class Objective:
    """The function Optuna optimises: trial → ensemble top-1 accuracy on the held-out split after the last epoch.

    Args:
        space: the graphs to draw from.
        dataset: loaded once per worker; ``config.holdout`` chooses the validation part of its training split. Its
            source is saved with every trial's run, so ``ktg eval`` works on trials.
        config: training options of every trial (the same for all, so graphs are compared fairly); each trial
            trains with its own seed derived from ``config.seed`` and its number (a retry: its original's number).
        out: the search folder; trial k trains in ``OUT/trials/k/``, and a retry of trial k continues there.
        node_options: model options of every node that sets none itself (e.g. ``base_width``), final: the
            dataset's suggestions are the caller's to add.
        on_epoch: called with (trial number, epoch, metrics) after every epoch, for progress displays.
        on_finish: called as a trial's run finishes all its epochs (see :data:`ktg.train.FinishCallback`).
        progress: show the trainer's own progress bars.
        same_seed: train every trial with ``config.seed`` (common random numbers) instead.
        eval_epochs: the epochs a trial is evaluated at, and its score reported to the pruner (the last always):
            those the pruner reads (:meth:`ktg.registry.PrunerRecord.epochs_read`); None: every epoch.

    A trial that raises is recorded by the caller as failed; before re-raising, the objective stores a one-line
    reason as the user attribute ``fail_reason`` (and the traceback of a programming error in ``error.txt``).

    A trial's checkpoints exist while it runs, so that a retry (:class:`ktg.search.storage.RequeueTrial`) of a
    trial whose worker died continues it from its last finished epoch, with the same graph and seed, its pruner
    hearing the finished epochs again; as a trial ends they are deleted (pruned, or failed for good), or all but
    the final weights, which :func:`keep_best_weights` keeps for the study's best trials only.
    """

    def __init__(self, space: SearchSpace, dataset: Dataset, config: TrainConfig, out: str | Path, *,
                 node_options: dict[str, Any] | None = None,
                 on_epoch: Callable[[int, int, EpochRecord], None] | None = None,
                 on_finish: FinishCallback | None = None, progress: bool = False, same_seed: bool = False,
                 eval_epochs: Collection[int] | None = None) -> None:
        if config.holdout is None:
            raise KTGError("the search must never look at the test split: give the training config a holdout fraction")
        self.space = space
        self.dataset = dataset
        self.config = config
        self.out = Path(out)
        self.node_options = node_options or {}
        self.on_epoch = on_epoch
        self.on_finish = on_finish
        self.progress = progress
        self.same_seed = same_seed
        self.eval_epochs = eval_epochs

    def seed_of(self, trial: optuna.Trial) -> int:
        """The seed ``trial`` trains with; a queued retry gets the seed of the trial it runs again."""
        if self.same_seed:
            return self.config.seed
        return trial_seed(self.config.seed, trial.user_attrs.get(RETRY_OF_ATTR, trial.number))

    def __call__(self, trial: optuna.Trial) -> float:
        origin = trial.user_attrs.get(RETRY_OF_ATTR, trial.number)  # a retry continues its original's run
        run_dir = trial_dir(self.out, origin)
        try:
            return self._run(trial, origin, run_dir)
        except optuna.TrialPruned:
            raise
        except BaseException as error:
            if not isinstance(error, (KTGError, torch.OutOfMemoryError, KeyboardInterrupt)) and run_dir.exists():
                RunFolder(run_dir).write_error(traceback.format_exc())
            # Only an interrupted trial, or one another worker failed as stale, is retried: the retry continues
            # from its checkpoints. Any other failure is for good, and its checkpoints go.
            retried = isinstance(error, (KeyboardInterrupt, optuna.exceptions.UpdateFinishedTrialError))
            try:
                trial.set_user_attr(FAIL_REASON_ATTR, failure_reason(error, run_dir))
            except optuna.exceptions.UpdateFinishedTrialError:
                retried = True  # already failed as stale by another worker; its retry continues the run
            if not retried:
                RunFolder(run_dir).delete_checkpoints()
            raise

    def _run(self, trial: optuna.Trial, origin: int, run_dir: Path) -> float:
        baseline = trial.user_attrs.get(BASELINE_ATTR)
        if baseline is not None:
            _check_first(trial, baseline)
        spec = self.space.suggest(trial, origin)  # a baseline's graph was queued as its parameters
        if baseline is not None:
            spec = dataclasses.replace(spec, name=baseline)
        spec = spec.resolved(self.dataset.image_size, self.node_options)
        trial.set_user_attr(GRAPH_ATTR, spec.to_dict())  # exactly what the trainer trains
        trial.set_user_attr(RUN_DIR_ATTR, str(run_dir.resolve()))  # absolute: readable from any working directory

        def after_epoch(epoch: int, metrics: EpochRecord) -> bool:
            if metrics.evaluated:
                trial.report(metrics.ensemble_accuracy, epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, epoch, metrics)
            # A baseline is the yardstick of every graph of the study: it always trains to its end.
            return metrics.evaluated and epoch < self.config.epochs and baseline is None and trial.should_prune()

        config = dataclasses.replace(self.config, seed=self.seed_of(trial))  # recorded in the run's config.json
        run = RunFolder(run_dir)
        retry = RETRY_OF_ATTR in trial.user_attrs
        resume = retry and run.holds_run()  # a retry continues its original's last finished epoch, if there is one
        final = train(spec, self.dataset, config, run_dir, resume=resume, restart=retry and not resume,
                      eval_epochs=self.eval_epochs, callback=after_epoch, on_finish=self.on_finish,
                      progress=self.progress)
        for key in RESULT_ATTRS:
            value = getattr(final, key)
            trial.set_user_attr(key, list(value) if isinstance(value, tuple) else value)  # as the storage keeps it
        if final.stopped_early:
            run.delete_checkpoints()
            raise optuna.TrialPruned(f"pruned after epoch {final.epochs}")
        run.delete_checkpoints(keep_latest=True)  # its final weights wait for the leaderboard: keep_best_weights
        return final.ensemble_accuracy


def _check_first(trial: optuna.Trial, baseline: str) -> None:
    """Refuse to train a baseline that an earlier trial of the study trains or trained already: two commands that
    created the study at the same instant may both have queued it. A retry continues its original instead."""
    if RETRY_OF_ATTR in trial.user_attrs:
        return
    earlier = [t.number for t in trial.study.get_trials(deepcopy=False)
               if t.number < trial.number and t.user_attrs.get(BASELINE_ATTR) == baseline
               and t.state != optuna.trial.TrialState.FAIL]
    if earlier:
        raise KTGError(f"not run: baseline {baseline!r} is trial {earlier[0]} of this study already")


def keep_best_weights(study: optuna.Study, keep: int) -> None:
    """Delete the final weights of every complete trial outside the ``keep`` best (ranked as the leaderboard ranks
    them), whatever worker ran it.

    Safe with several workers finishing trials at once: the complete trials only grow, so a trial among the
    ``keep`` best of the study's final leaderboard is among the ``keep`` best of every earlier one, and no worker
    deletes weights that should stay; running trials are never touched. Trials still being written (no run folder
    recorded yet) are passed over.
    """
    complete = [trial for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if trial.value is not None]
    for trial in sorted(complete, key=lambda t: (-t.value, t.number))[keep:]:
        if RUN_DIR_ATTR in trial.user_attrs:
            RunFolder(trial.user_attrs[RUN_DIR_ATTR]).delete_checkpoints()
