"""How well a study's early epochs rank its trials as their end does (``ktg study fidelity``), from the storage alone.

A pruner decides at its rungs from the ranking of trials at that epoch; whether that ranking is the final one is
measured here (docs/method.md#search). For every epoch at which trials reported a score (the ensemble's held-out
accuracy, Optuna's intermediate value at step = epoch), the complete trials that reported there are ranked by that
score and by their final value, a complete trial's objective: Spearman's rank correlation of the two rankings,
and how many of the k best final trials (k = max(1, n // 4) of n) were already among the k best at that epoch,
ties broken by trial number as on the leaderboard.

Only complete trials have a final value. Pruned trials are left out, so where a pruner stopped trials an epoch's
row ranks only the trials it let finish (selection bias); a study searched with ``--pruner none`` evaluates
every trial after every epoch and measures them all. The study may still be running: running and waiting trials
are skipped, failed ones have no final value.

Torch-free: it reads Optuna's trials, nothing else.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import scipy.stats
from optuna.trial import FrozenTrial, TrialState

from ktg.io import write_text

COLUMNS = ("epoch", "trials", "spearman_rho", "top_k", "top_k_kept", "pruned_left_out")
#: Fewer trials than this have no rank correlation worth a number (two trials correlate ±1 whatever they do).
MIN_TRIALS = 3


@dataclass(frozen=True)
class EpochFidelity:
    """How well the ranking of trials at one epoch predicts their final ranking.

    Attributes:
        epoch: the epoch (Optuna's step), from 1.
        trials: the complete trials with a score at this epoch: those ranked.
        rho: Spearman's rank correlation of their scores at this epoch with their final values, in [-1, 1];
            None under :data:`MIN_TRIALS` trials or where either set of values is constant (undefined).
        top_k: k = max(1, trials // 4), 0 without trials.
        kept: how many of the k best trials at the end were among the k best at this epoch.
        pruned: the pruned trials with a score at this epoch, left out for want of a final value.
    """

    epoch: int
    trials: int
    rho: float | None
    top_k: int
    kept: int
    pruned: int


@dataclass(frozen=True)
class Fidelity:
    """A study's fidelity: one :class:`EpochFidelity` per epoch at which trials reported, in order, and how
    many trials there were of each kind (complete: ranked; pruned: left out; running or waiting: skipped)."""

    epochs: tuple[EpochFidelity, ...]
    complete: int
    pruned: int
    running: int


def best(scores: dict[int, float], k: int) -> set[int]:
    """The trial numbers of the ``k`` highest of ``scores`` (trial number → score), ties to the lower number."""
    return set(sorted(scores, key=lambda number: (-scores[number], number))[:k])


def rank_correlation(early: Sequence[float], final: Sequence[float]) -> float | None:
    """Spearman's rho of two paired sequences; None under :data:`MIN_TRIALS` pairs or where either is constant."""
    if len(early) < MIN_TRIALS or len(set(early)) < 2 or len(set(final)) < 2:
        return None
    return float(scipy.stats.spearmanr(early, final).statistic)


def fidelity(trials: Sequence[FrozenTrial]) -> Fidelity:
    """How well each epoch's ranking of the complete ``trials`` predicts their final ranking (see the module)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    final = {t.number: t.value for t in complete}
    rows = []
    for epoch in sorted({step for t in complete + pruned for step in t.intermediate_values}):
        early = {t.number: t.intermediate_values[epoch] for t in complete if epoch in t.intermediate_values}
        k = max(1, len(early) // 4) if early else 0
        rows.append(EpochFidelity(
            epoch=epoch, trials=len(early),
            rho=rank_correlation(list(early.values()), [final[number] for number in early]),
            top_k=k, kept=len(best(early, k) & best({n: final[n] for n in early}, k)),
            pruned=sum(epoch in t.intermediate_values for t in pruned)))
    return Fidelity(tuple(rows), complete=len(complete), pruned=len(pruned), running=running)


def rows(result: Fidelity) -> list[dict[str, Any]]:
    """One row per epoch, named by :data:`COLUMNS` (rho rounded to 6 decimals, "" where undefined)."""
    return [{"epoch": row.epoch, "trials": row.trials, "spearman_rho": "" if row.rho is None else round(row.rho, 6),
             "top_k": row.top_k, "top_k_kept": row.kept, "pruned_left_out": row.pruned} for row in result.epochs]


def write_csv(result: Fidelity, path: str | Path) -> None:
    """Write the rows (:func:`rows`) as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows(result))
    write_text(path, buffer.getvalue())


def format_report(result: Fidelity) -> str:
    """The rows as an aligned text table, then a line on the pruned trials left out and the running ones skipped."""
    lines = [("epoch", "trials", "Spearman rho", "top-k kept", "pruned, left out")]
    for row in result.epochs:
        lines.append((str(row.epoch), str(row.trials), "n/a" if row.rho is None else f"{row.rho:.2f}",
                      f"{row.kept} of {row.top_k}", str(row.pruned)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines]
    text.append("top-k kept: how many of the k best trials at the end were among the k best at that epoch "
                "(k = max(1, trials // 4), ties to the lower trial number)")
    if result.pruned:
        text.append(f"left out: {result.pruned} pruned trial{'s' * (result.pruned != 1)} without a final value; each "
                    f"row ranks only the trials the pruner let finish (selection bias): a study searched with "
                    f"--pruner none measures them all")
    if result.running:
        text.append(f"skipped: {result.running} trial{'s' * (result.running != 1)} still running or waiting")
    return "\n".join(text)
