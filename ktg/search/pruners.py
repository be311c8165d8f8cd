"""The search's pruners, one factory each (registered in :mod:`ktg.registry`); the epoch is the resource.

Beside each factory stands the set of epochs its pruner reads (for a pruner that reads every epoch, none): the
search evaluates a trial only at those epochs and at its last (docs/method.md#search), so the two are declared
together, from the same constants.
"""

from __future__ import annotations

import itertools

import optuna

#: Successive halving's rungs: epochs 1, 2, 4, … (the papers').
HALVING_MIN_EPOCHS, HALVING_FACTOR = 1, 2
#: Hyperband's reduction factor (Optuna's default): its brackets' rungs lie at epochs 1, 3, 9, …
HYPERBAND_FACTOR = 3


def rungs(first: int, factor: int, epochs: int) -> frozenset[int]:
    """The epochs ``first · factor^k`` up to ``epochs``: where a successive-halving bracket reads a trial."""
    return frozenset(itertools.takewhile(lambda epoch: epoch <= epochs,
                                         (first * factor**k for k in itertools.count())))


def successive_halving(epochs: int) -> optuna.pruners.BasePruner:
    """The papers' choice: successive halving with reduction factor 2, from the first epoch on."""
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=HALVING_MIN_EPOCHS, reduction_factor=HALVING_FACTOR,
                                                  min_early_stopping_rate=0)


def successive_halving_epochs(epochs: int) -> frozenset[int]:
    """Successive halving reads a trial at its rungs only: a trial's score at a rung is its score at that epoch."""
    return rungs(HALVING_MIN_EPOCHS, HALVING_FACTOR, epochs)


def median(epochs: int) -> optuna.pruners.BasePruner:
    """Stop a trial whose score at an epoch is below the median of earlier trials at that epoch."""
    return optuna.pruners.MedianPruner()


def hyperband(epochs: int) -> optuna.pruners.BasePruner:
    """Hyperband over 1 to ``epochs`` epochs."""
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=HYPERBAND_FACTOR)


def hyperband_epochs(epochs: int) -> frozenset[int]:
    """Hyperband's brackets are successive halvings from rung 1, 3, 9, …: together they read epochs 3^k."""
    return rungs(1, HYPERBAND_FACTOR, epochs)


def no_pruning(epochs: int) -> optuna.pruners.BasePruner:
    """Every trial trains to the end."""
    return optuna.pruners.NopPruner()


def no_epochs(epochs: int) -> frozenset[int]:
    """Without pruning no epoch but the last is read."""
    return frozenset()
