"""The one statistic behind every claim that one graph beats another: a paired difference on common seeds.

Two graphs trained with the same seeds share their initial weights' draw, batch order and augmentation, so most
of the seed noise cancels in the per-seed difference. The search's race (:mod:`ktg.search.rescore`), its verdict
and the experiments all use :func:`paired_difference`, so they say "better" the same way.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

#: The confidence of every interval ktg reports, and of the race's decisions.
CONFIDENCE = 0.95


def t_quantile(probability: float, degrees_of_freedom: int) -> float:
    """Student's t quantile (SciPy's, imported here only: the command line's start stays light)."""
    from scipy.stats import t

    return float(t.ppf(probability, degrees_of_freedom))


@dataclass(frozen=True)
class PairedDifference:
    """``a − b`` over the seeds both were trained with, in the units of the values (fractions of the split).

    Attributes:
        mean: the mean difference.
        low, high: its two-sided Student-t interval at ``confidence`` (±inf below two seeds: nothing is known).
        seeds: how many paired seeds.
        wins: on how many of them ``a`` was higher.
        confidence: of the interval; :data:`CONFIDENCE` unless the interval is one reading of several (a race's).
    """

    mean: float
    low: float
    high: float
    seeds: int
    wins: int
    confidence: float = CONFIDENCE

    @property
    def above_zero(self) -> bool:
        """Whether ``a`` beats ``b`` at the interval's confidence (the interval lies above zero)."""
        return self.low > 0

    @property
    def below_zero(self) -> bool:
        """Whether ``b`` beats ``a`` at the interval's confidence."""
        return self.high < 0

    def describe(self, scale: float = 100.0) -> str:
        """``+1.23 [+0.40, +2.06] over 5 paired seeds`` (points of % with the default ``scale``), with ``at 98.93 %``
        after it for an interval at another confidence than :data:`CONFIDENCE`."""
        interval = (f"[{scale * self.low:+.2f}, {scale * self.high:+.2f}]" if math.isfinite(self.low)
                    else "[no interval below 2 seeds]")
        at = f" at {100 * self.confidence:.2f} %" if self.confidence != CONFIDENCE and math.isfinite(self.low) else ""
        return f"{scale * self.mean:+.2f} {interval} over {self.seeds} paired seed{'s' * (self.seeds != 1)}{at}"

    def to_dict(self, scale: float = 100.0) -> dict[str, float | int | None]:
        """JSON-ready, in points of % with the default ``scale`` (an unknown bound as None); the confidence in %."""
        def bound(value: float) -> float | None:
            return scale * value if math.isfinite(value) else None

        return {"mean": scale * self.mean, "low": bound(self.low), "high": bound(self.high), "seeds": self.seeds,
                "wins": self.wins, "confidence": 100 * self.confidence}


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedDifference:
    """The paired difference ``a[i] − b[i]`` (same seed i) with its two-sided Student-t interval.

    Equal differences on every seed have a zero-width interval at their mean: the seeds tell them apart without
    doubt. Raises ValueError for lists of different lengths or none at all."""
    if len(a) != len(b) or not a:
        raise ValueError(f"a paired difference needs the same seeds on both sides, got {len(a)} and {len(b)} values")
    differences = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(differences)
    wins = sum(d > 0 for d in differences)
    if len(differences) < 2:
        return PairedDifference(mean, -math.inf, math.inf, 1, wins, confidence)
    half = (t_quantile(1 - (1 - confidence) / 2, len(differences) - 1) * statistics.stdev(differences)
            / math.sqrt(len(differences)))
    return PairedDifference(mean, mean - half, mean + half, len(differences), wins, confidence)
