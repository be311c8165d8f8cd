"""The search's pruners, one factory each (registered in :mod:`ktg.registry`); the epoch is the resource.

Every factory takes the trials' epochs and the first rung (``ktg search --first-rung``, the first epoch at which a
trial may be stopped). Beside each factory stands the set of epochs its pruner reads: the search evaluates a trial
only at those epochs and at its last (docs/method.md#search), so the two are declared together, from the same
numbers. No pruning declares none: its trials are evaluated every epoch, to measure how well each epoch predicts
the last (``ktg study fidelity``).
"""

from __future__ import annotations

import itertools

import optuna

#: Successive halving's reduction factor (the papers'): its rungs lie at epochs E, 2E, 4E, … from the first rung E.
HALVING_FACTOR = 2
#: Hyperband's reduction factor (Optuna's default): its brackets' rungs lie at epochs E, 3E, 9E, …
HYPERBAND_FACTOR = 3


def rungs(first: int, factor: int, epochs: int) -> frozenset[int]:
    """The epochs ``first · factor^k`` up to ``epochs``: where a successive-halving bracket reads a trial."""
    return frozenset(itertools.takewhile(lambda epoch: epoch <= epochs,
                                         (first * factor**k for k in itertools.count())))


def successive_halving(epochs: int, *, first_rung: int) -> optuna.pruners.BasePruner:
    """The papers' choice: successive halving with reduction factor 2, its first rung at epoch ``first_rung``."""
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=first_rung, reduction_factor=HALVING_FACTOR,
                                                  min_early_stopping_rate=0)


def successive_halving_epochs(epochs: int, *, first_rung: int) -> frozenset[int]:
    """Successive halving reads a trial at its rungs only: a trial's score at a rung is its score at that epoch."""
    return rungs(first_rung, HALVING_FACTOR, epochs)


def median(epochs: int, *, first_rung: int) -> optuna.pruners.BasePruner:
    """From epoch ``first_rung`` on, stop a trial whose score is below the median of earlier trials at that epoch."""
    return optuna.pruners.MedianPruner(n_warmup_steps=first_rung)  # the earliest step it prunes at


def median_epochs(epochs: int, *, first_rung: int) -> frozenset[int]:
    """The median pruner reads every epoch from the first rung on."""
    return frozenset(range(first_rung, epochs + 1))


def hyperband(epochs: int, *, first_rung: int) -> optuna.pruners.BasePruner:
    """Hyperband over ``first_rung`` to ``epochs`` epochs."""
    return optuna.pruners.HyperbandPruner(min_resource=first_rung, max_resource=epochs,
                                          reduction_factor=HYPERBAND_FACTOR)


def hyperband_epochs(epochs: int, *, first_rung: int) -> frozenset[int]:
    """Hyperband's brackets are successive halvings from rung E, 3E, 9E, …: together they read epochs E·3^k."""
    return rungs(first_rung, HYPERBAND_FACTOR, epochs)


def no_pruning(epochs: int, *, first_rung: int) -> optuna.pruners.BasePruner:
    """Every trial trains to the end; it has no rungs, so ``first_rung`` changes nothing."""
    return optuna.pruners.NopPruner()
