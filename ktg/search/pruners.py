"""The search's pruners, one factory each (registered in :mod:`ktg.registry`); the epoch is the resource."""

from __future__ import annotations

import optuna


def successive_halving(epochs: int) -> optuna.pruners.BasePruner:
    """The papers' choice: successive halving with reduction factor 2, from the first epoch on."""
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2, min_early_stopping_rate=0)


def median(epochs: int) -> optuna.pruners.BasePruner:
    """Stop a trial whose score at an epoch is below the median of earlier trials at that epoch."""
    return optuna.pruners.MedianPruner()


def hyperband(epochs: int) -> optuna.pruners.BasePruner:
    """Hyperband over 1 to ``epochs`` epochs."""
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)


def no_pruning(epochs: int) -> optuna.pruners.BasePruner:
    """Every trial trains to the end."""
    return optuna.pruners.NopPruner()
