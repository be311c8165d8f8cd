"""The search's samplers (registered by name in :mod:`ktg.registry`; ``docs/method.md#search``).

Every sampler here is seeded per trial: trial k draws its randomness from (seed, k) alone, never from a random
state a process carries along. Seeding each worker's sampler the usual way would make every worker draw the same
graphs; here workers never repeat each other, and a study is reproducible from its seed as far as its sampler
allows:

- ``random``: trial k's graph depends on (seed, k) only, whichever worker runs it and whatever the others found.
- ``tpe``, ``evolution``: trial k's graph depends on (seed, k) and the trials finished (for TPE also running)
  when it starts. One worker: the study is reproducible from its seed; several: it depends on their timing.
  Until enough trials have finished they draw exactly random search's graphs, so studies of different samplers
  with one seed share their first trials.

Parameters that a model-based sampler does not sample jointly are drawn as random search draws them. The search
space asks every parameter in every trial (a cut-off edge keeps its drawn design), so the joint search space is
the whole space and TPE needs no ``group`` decomposition.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from ktg.search.storage import FINISHED

#: TPE's random start: Optuna's default, as documented for 100–1,000 trials.
TPE_STARTUP_TRIALS = 10
#: Regularised evolution: the population (the trials that finished last) and the tournament drawn from it.
#: 20 / 5 keeps Real et al.'s ratio of 4 at a size that starts evolving within a 100-trial budget.
EVOLUTION_POPULATION = 20
EVOLUTION_TOURNAMENT = 5


def stable_hash(*parts: Any) -> int:
    """A 64-bit hash of ``parts`` joined by "/", the same in every process and Python version (unlike ``hash``):
    the source of every seed a search derives from its own seed."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def trial_stream_seed(seed: int, trial_number: int) -> int:
    """The seed of trial ``trial_number``'s own random stream in a study seeded with ``seed``, in [0, 2³²)."""
    return stable_hash("ktg sampler", seed, trial_number) >> 32


class TrialSeededSampler(optuna.samplers.RandomSampler):
    """Uniform random search whose draws depend only on (seed, trial number, parameter name).

    A plain seeded ``RandomSampler`` in every worker would make all workers draw the same graphs. Here trial
    k gets the same graph whichever worker runs it and however many workers there are, so a study is
    reproducible from its seed and workers never repeat each other.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.seed = seed

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if not isinstance(param_distribution, CategoricalDistribution):
            return super().sample_independent(study, trial, param_name, param_distribution)
        choices = param_distribution.choices
        return choices[stable_hash(self.seed, trial.number, param_name) % len(choices)]


class TrialSeededTPE(TrialSeededSampler):
    """Optuna's ``TPESampler(multivariate=True, constant_liar=True)``, built afresh for every trial with that
    trial's seed (:func:`trial_stream_seed`): its draws depend on the seed, the trial number and the study's
    history, never on which worker asks. Independent draws (its random start) are random search's."""

    def __init__(self, seed: int = 0, startup_trials: int = TPE_STARTUP_TRIALS) -> None:
        super().__init__(seed)
        self.startup_trials = startup_trials
        self._trial: int | None = None
        self._tpe: optuna.samplers.TPESampler | None = None

    def _tpe_for(self, trial: FrozenTrial) -> optuna.samplers.TPESampler:
        if self._tpe is None or self._trial != trial.number:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._tpe = optuna.samplers.TPESampler(
                    multivariate=True, constant_liar=True, n_startup_trials=self.startup_trials,
                    seed=trial_stream_seed(self.seed, trial.number))
            self._trial = trial.number
        return self._tpe

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._tpe_for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self._tpe_for(trial).sample_relative(study, trial, search_space)


def fitness(trial: FrozenTrial) -> tuple[bool, int, float]:
    """How good a finished trial is, comparable across pruned and complete trials: complete before pruned, then
    the longest trained, then the most accurate at its last epoch (the leaderboard's order)."""
    if trial.state == TrialState.COMPLETE:
        value = trial.value
    else:
        value = trial.intermediate_values.get(trial.last_step) if trial.last_step is not None else None
    return (trial.state == TrialState.COMPLETE, trial.last_step or 0,
            value if value is not None else float("-inf"))


class RegularisedEvolution(TrialSeededSampler):
    """Regularised (aging) evolution (Real et al., 2019) over categorical parameters, for many workers at once.

    The population is the ``population`` trials that finished last (older ones age out, so a graph that was
    lucky once does not breed for ever). Trial k draws ``tournament`` of them with its own seed, copies the
    fittest (:func:`fitness`) and changes one parameter, chosen at random, to another of its choices. Until
    ``population`` trials have finished it draws random search's graphs. Nothing is cached between trials: the
    study is the state, so workers joining or leaving change nothing.
    """

    def __init__(self, seed: int = 0, population: int = EVOLUTION_POPULATION,
                 tournament: int = EVOLUTION_TOURNAMENT) -> None:
        if not 1 <= tournament <= population:
            raise ValueError(f"the tournament ({tournament}) must be drawn from the population ({population})")
        super().__init__(seed)
        self.population = population
        self.tournament = tournament

    def _population(self, study: optuna.Study) -> list[FrozenTrial]:
        finished = study.get_trials(deepcopy=False, states=FINISHED)
        finished.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
        return finished[-self.population:] if len(finished) >= self.population else []

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        population = self._population(study)
        if not population:
            return {}
        space = optuna.search_space.intersection_search_space(population, include_pruned=True)
        return {name: dist for name, dist in space.items()
                if isinstance(dist, CategoricalDistribution) and not dist.single()}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        population = self._population(study)
        if not population or not search_space:
            return {}
        rng = random.Random(trial_stream_seed(self.seed, trial.number))
        parent = max(rng.sample(population, self.tournament), key=fitness)
        child = {name: parent.params[name] for name in search_space}
        mutated = rng.choice(sorted(search_space))
        child[mutated] = rng.choice([c for c in search_space[mutated].choices if c != child[mutated]])
        return child


def random_search(seed: int) -> optuna.samplers.BaseSampler:
    """The papers' sampler: uniform random search (:class:`TrialSeededSampler`)."""
    return TrialSeededSampler(seed)


def tpe(seed: int) -> optuna.samplers.BaseSampler:
    """Multivariate TPE with constant liar (:class:`TrialSeededTPE`)."""
    return TrialSeededTPE(seed)


def regularised_evolution(seed: int) -> optuna.samplers.BaseSampler:
    """Regularised evolution (:class:`RegularisedEvolution`)."""
    return RegularisedEvolution(seed)
