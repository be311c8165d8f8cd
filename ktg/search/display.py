"""What a search shows while it runs: a line for every trial that ends, and on a terminal a progress bar."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from ktg.progress import Progress
from ktg.run_folder import EpochRecord
from ktg.search.keys import FAIL_REASON_ATTR
from ktg.search.results import last_value, state_counts


class SearchDisplay:
    """The search's progress over its budget of finished trials: one line for every trial that ends and, on a
    terminal, a bar showing the best accuracy so far and the running trial's epoch (see :class:`Progress`)."""

    def __init__(self, study: optuna.Study, total: int, *, enabled: bool, epochs: int) -> None:
        self.epochs = epochs
        self.seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        counts = state_counts(study)
        self.progress = Progress(total, desc="search", unit="trial", initial=counts["complete"] + counts["pruned"],
                                 enabled=enabled)

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        for trial in trials:
            if trial.state.is_finished() and trial.number not in self.seen:
                self.seen.add(trial.number)
                self.progress.write(trial_line(trial))
        counts = state_counts(study)
        complete = [t.value for t in trials if t.state == TrialState.COMPLETE]
        self.progress.advance(counts["complete"] + counts["pruned"],
                              best=f"{100 * max(complete):.2f}%" if complete else "-", running=counts["running"],
                              failed=counts["fail"])

    def epoch(self, trial: int, epoch: int, metrics: EpochRecord) -> None:
        accuracy = f", ensemble {100 * metrics.ensemble_accuracy:.2f}%" if metrics.evaluated else ""
        self.progress.status(trial=f"{trial}: epoch {epoch}/{self.epochs}{accuracy}")

    def close(self) -> None:
        self.progress.close()


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    """One line about an ended trial, for the console."""
    value = last_value(trial)
    accuracy = f"ensemble {100 * value:.2f} %" if value is not None else "no epoch finished"
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number}: complete, {accuracy} after {trial.last_step} epochs"
    if trial.state == TrialState.PRUNED:
        return f"trial {trial.number}: pruned after epoch {trial.last_step}, {accuracy}"
    reason = trial.user_attrs.get(FAIL_REASON_ATTR) or "its worker stopped sending heartbeats"
    return f"trial {trial.number}: failed, {reason}"
