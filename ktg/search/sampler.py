"""The search's sampler: uniform random search that draws the same graph for a trial whichever worker runs it."""

from __future__ import annotations

import hashlib
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution


class TrialSeededSampler(optuna.samplers.RandomSampler):
    """Uniform random search whose draws depend only on (seed, trial number, parameter name).

    A plain seeded ``RandomSampler`` in every worker would make all workers draw the same graphs. Here trial
    k gets the same graph whichever worker runs it and however many workers there are, so a study is
    reproducible from its seed and workers never repeat each other.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.seed = seed

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        if not isinstance(param_distribution, CategoricalDistribution):
            return super().sample_independent(study, trial, param_name, param_distribution)
        digest = hashlib.sha256(f"{self.seed}/{trial.number}/{param_name}".encode()).digest()
        choices = param_distribution.choices
        return choices[int.from_bytes(digest[:8], "big") % len(choices)]
