"""A winner chosen without luck: race the best graphs of a study and its baselines over fresh, common seeds.

A trial's score is one training run on one held-out split, and seed noise is as large as the differences the
search looks for, so the argmax of thousands of trials is partly the luckiest run (the winner's curse). After the
search, :func:`rescore` races the ``top`` best complete trials and every baseline trial of the study
(``ktg search --baseline``): run i of each contender is retrained with the same fresh seed (:func:`rescore_seed`,
unrelated to any trial's seed) on the same fresh held-out split (:func:`rescore_split_seed`), so every comparison
is paired on common random numbers, and none is scored on the split the searched graphs were chosen on.

The race (``docs/method.md#search``) reads its intervals at a few looks (:class:`Looks`: after :data:`MIN_SEEDS`
seeds, then about 1.5 times as many each look). At each, it drops each searched contender that the leader (the best
mean so far) beats at 95 % (:func:`ktg.stats.paired_difference` on their common seeds), or that is shown to gain
less than the smallest gain worth racing for (:func:`gains_too_little`, ``--rescore-min-gain``) over the best
baseline or over the best searched contender, and trains the rest up to the next look, until one searched contender
is left or ``seeds`` seeds are spent. A baseline is what the verdict measures the winner against, so it is never
dropped for losing to the leader: it rests while the best searched contender is told apart from it, either way, at
the confidence of the race's look (all its looks and searched contenders together wrong at most 5 % of the time), and
where a new best is not, it catches up on that one's seeds and races on. A contender with a diverging run is dropped.
Its state is a function of the stored results alone (:func:`standings`), so every worker and every reader agrees on
it.

Each run's result is stored in the study (a study user attribute per run), so the storage alone says what was
raced: ``ktg study show`` reads it anywhere, a re-run resumes, and several workers share the runs. A worker claims a
run before it trains it and renews the claim every heartbeat interval; a claim silent for the grace period
belongs to a dead worker and is taken over. Of two workers that claim the same run at the same instant and
each read their own claim back, the second finds the run's folder locked by the first and leaves the run to it.

The study's verdict (:func:`verdict`) compares the best searched graph with every baseline on their common seeds.
The graph the study recommends (:func:`chosen`) is that searched graph only where it beats the best baseline at
95 %; otherwise it is the best baseline, named as the graph to keep.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ktg.graph import GraphSpec
from ktg.run_folder import RunFolder, RunFolderBusy
from ktg.search.heartbeat import Renewal
from ktg.search.keys import BASELINE_ATTR, CLAIM_PREFIX, GRAPH_ATTR, RESCORE_ATTR, RUN_PREFIX
from ktg.search.sampler import stable_hash
from ktg.search.settings import DEFAULT_RESCORE_MIN_GAIN, RESCORE_DIR, SearchSettings, check_rescore
from ktg.search.storage import Snapshot, StudyReader
from ktg.stats import CONFIDENCE, PairedDifference, paired_difference

if TYPE_CHECKING:  # what reads a study (ktg study show, the leaderboard) imports no PyTorch; rescore_run does
    from ktg.data.images import Dataset
    from ktg.train import FinishCallback

#: Seeds every contender of a race is trained with before any is dropped: the fewest with which a paired
#: Student-t interval is not absurdly wide (with 2 seeds its half-width is 12.7 standard errors, with 3 it is 4.3).
MIN_SEEDS = 3
#: How many times as many seeds each look of a race reads as the look before (:func:`looks`).
LOOK_GROWTH = 1.5
#: How a race spends its 5 % chance of telling apart two graphs that do not differ over its looks (``growing-shares``):
#: by the look after n of at most N seeds, 5 % × (n / N) ** SPENDING of it (:class:`Looks`). Little at the early
#: looks, where a few seeds' Student-t intervals are wide anyway, and most at the last, where a gain of a point can
#: show (docs/results.md#how-often-a-race-claims-a-gain-that-is-not-there measured 1, 2 and 3).
SPENDING = 2
#: The ways a race has read its intervals, each kept so that a stored race replays as it ran: ``every-seed``, a 95 %
#: interval after every seed (races asked until the evening of 2026-12-07); ``even-shares``, at its looks, each at
#: 1 − 0.05 / looks (races asked that evening); ``growing-shares``, the shares of :class:`Looks` (since that night).
READINGS = ("every-seed", "even-shares", "growing-shares")
#: How a race asked now reads them.
READING = "growing-shares"
#: How :func:`chosen` says that it took the plain argmax.
ARGMAX = "highest held-out ensemble accuracy of one run"


def rescore_seed(seed: int, index: int) -> int:
    """The seed of rescore run ``index`` (the same for every candidate) in a search whose config has ``seed``."""
    return stable_hash("ktg rescore seed", seed, index) >> 33


def rescore_split_seed(holdout_seed: int, index: int) -> int:
    """The seed of the held-out split of rescore run ``index`` (the same for every candidate) in a search whose
    trials hold out the split of ``holdout_seed``. Each run draws a split of its own: the searched graphs were
    chosen for how they scored on the search's split, and on that split a race would measure that luck again."""
    return stable_hash("ktg rescore split", holdout_seed, index) >> 33


def run_dir(out: str | Path, trial: int, index: int) -> Path:
    """Where rescore run ``index`` of trial ``trial`` trains: ``OUT/rescore/<trial>/<index>/``."""
    return Path(out) / RESCORE_DIR / str(trial) / str(index)


def baseline_of(trial: FrozenTrial) -> str | None:
    """The baseline a trial trains (``independent``, ``dml``, a graph file's name), None for a searched graph."""
    return trial.user_attrs.get(BASELINE_ATTR)


@dataclass(frozen=True)
class RaceRun:
    """One race run's result, as the study stores it (a study user attribute of :func:`stored_run`'s key).

    Attributes:
        seed: the run's seed (:func:`rescore_seed`).
        holdout_seed: the seed of its held-out split (:func:`rescore_split_seed`); None for a run of a race asked
            before races drew a split per run, which scored every run on the search's own split.
        ensemble_accuracy, mean_node_accuracy: after its last epoch, on its held-out split (None for a run that
            diverged).
        run_dir: its run folder, absolute (None for a run that diverged).
        fail_reason: why it diverged, one line (None for a run that finished).
    """

    seed: int
    holdout_seed: int | None
    ensemble_accuracy: float | None = None
    mean_node_accuracy: float | None = None
    run_dir: str | None = None
    fail_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def from_stored(cls, stored: Any, split_per_run: bool = True) -> RaceRun | None:
        """The run a study attribute holds; None for what is not one whole result of a race that holds out a
        split per run (``split_per_run``, as races do now) or the search's own split (as races asked before did):
        a worker's claim, a value cut off while another process wrote it, or a run of the other kind of race."""
        known = {f.name for f in dataclasses.fields(cls)}
        if (not isinstance(stored, dict) or not isinstance(stored.get("seed"), int) or not set(stored) <= known
                or ("ensemble_accuracy" in stored) == ("fail_reason" in stored)
                or not (isinstance(stored.get("holdout_seed"), int) if split_per_run
                        else stored.get("holdout_seed") is None)):
            return None
        return cls(**{"holdout_seed": None, **stored})


#: Called with (trial, run index, its result) after each race run a worker trains.
RaceRunCallback = Callable[[int, int, RaceRun], None]


def splits_per_run(attrs: dict[str, Any]) -> bool:
    """Whether the race a study's user attributes ``attrs`` ask for holds out a split per run: every race asked
    now; a race asked before (its :data:`RESCORE_ATTR` lacks ``split_per_run``) scored its runs on the search's
    own split, and readers replay it as it ran. Without a race, runs are stored as races store them now."""
    asked = attrs.get(RESCORE_ATTR)
    return asked.get("split_per_run") is True if isinstance(asked, dict) else True


def stored_run(attrs: dict[str, Any], trial: int, index: int) -> RaceRun | None:
    """Run ``index`` of ``trial`` as stored in a study's user attributes ``attrs``; None where there is none, or
    it is not a run of the race the study asks for (:func:`splits_per_run`)."""
    return RaceRun.from_stored(attrs.get(f"{RUN_PREFIX}{trial}/{index}"), splits_per_run(attrs))


def store_run(study: optuna.Study, trial: int, index: int, run: RaceRun) -> None:
    """Store ``run`` as run ``index`` of ``trial`` (see :func:`stored_run`)."""
    study.set_user_attr(f"{RUN_PREFIX}{trial}/{index}", run.to_dict())


@dataclass(frozen=True)
class Rescored:
    """What the race found for one contender (accuracies are fractions of the held-out split).

    Attributes:
        trial: the trial number.
        search_score: its ensemble accuracy in the search (one run).
        runs: the ensemble accuracy of each run index asked of it so far (None: failed, or not finished yet).
        failed: how many of its runs failed (a NaN loss, say).
        seeds: how many runs the race asks of it now.
        baseline: the baseline it is, None for a searched graph.
        dropped_at: the number of seeds after which the race stopped training it (None: still racing, or the
            winner): a searched graph the leader beat or that gains too little over the best baseline, a
            contender that diverged, or a baseline told apart from the best searched graph (which races again
            where a later best is not).
    """

    trial: int
    search_score: float
    runs: tuple[float | None, ...]
    failed: int
    seeds: int
    baseline: str | None = None
    dropped_at: int | None = None

    @property
    def accuracies(self) -> tuple[float, ...]:
        return tuple(accuracy for accuracy in self.runs if accuracy is not None)

    @property
    def complete(self) -> bool:
        """Whether every run asked of it has a result."""
        return len(self.accuracies) + self.failed >= self.seeds

    @property
    def mean(self) -> float | None:
        return sum(self.accuracies) / len(self.accuracies) if self.accuracies else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation over the runs (None below two runs)."""
        n = len(self.accuracies)
        if n < 2:
            return None
        mean = self.mean
        return math.sqrt(sum((a - mean) ** 2 for a in self.accuracies) / (n - 1))

    @property
    def label(self) -> str:
        """``trial 17`` or ``independent (baseline, trial 0)``."""
        return f"{self.baseline} (baseline, trial {self.trial})" if self.baseline else f"trial {self.trial}"


def minus(a: Rescored, b: Rescored, confidence: float = CONFIDENCE) -> PairedDifference | None:
    """``a − b`` on the run indices where both have an accuracy, its interval at ``confidence`` (None where they
    share none)."""
    common = [i for i in range(min(len(a.runs), len(b.runs))) if a.runs[i] is not None and b.runs[i] is not None]
    if not common:
        return None
    return paired_difference([a.runs[i] for i in common], [b.runs[i] for i in common], confidence)


def looks(seeds: int) -> tuple[int, ...]:
    """The numbers of seeds after which a race of at most ``seeds`` seeds reads its intervals: :data:`MIN_SEEDS`,
    then about :data:`LOOK_GROWTH` times as many each look, the last one at ``seeds`` (3, 5, 8, 12, 18, 30 for 30).

    Few looks, because every look is a chance to tell apart two graphs that do not differ; growing ones, because
    a look after one more seed of many tells little more than the look before."""
    found = [min(MIN_SEEDS, seeds)]
    while found[-1] < seeds:
        following = math.ceil(found[-1] * LOOK_GROWTH)
        found.append(following if math.ceil(following * LOOK_GROWTH) <= seeds else seeds)
    return tuple(found)


@dataclass(frozen=True)
class Looks:
    """When a race reads its paired intervals, and at what confidence each.

    Attributes:
        at: the numbers of seeds after which it reads them (it trains every contender still racing up to the next).
        confidences: of each look's intervals. A race reads its intervals several times, and each reading may tell
            apart two graphs that do not differ; with ``K`` searched contenders, the look after ``n`` of at most
            ``N`` seeds may do so ``0.05 × ((n / N)^SPENDING − (n' / N)^SPENDING) / K`` of the time (``n'``: the look
            before), so all its readings of all its searched graphs against a baseline together claim a gain that is
            not there at most 5 % of the time (a union bound over the looks and the searched graphs).
        reading: which of the :data:`READINGS` these are.
        searched: the ``K`` searched contenders the 5 % is shared among (1 for the readings before
            ``growing-shares``, which shared it among the looks only).
    """

    at: tuple[int, ...]
    confidences: tuple[float, ...]
    reading: str = READING
    searched: int = 1

    @classmethod
    def of(cls, seeds: int, reading: str = READING, searched: int = 1) -> Looks:
        """The looks of a race of at most ``seeds`` seeds and ``searched`` searched contenders read the
        :data:`READINGS` way ``reading``: :func:`looks`, each at the confidence that keeps the race's 95 %, or
        (``every-seed``) a 95 % interval after every seed."""
        if reading == "every-seed":
            at = tuple(range(min(MIN_SEEDS, seeds), seeds + 1))
            return cls(at, (CONFIDENCE,) * len(at), reading)
        at = looks(seeds)
        if reading == "even-shares":
            return cls(at, (1 - (1 - CONFIDENCE) / len(at),) * len(at), reading)
        if reading != "growing-shares":
            raise ValueError(f"a race reads its intervals one of the ways {', '.join(READINGS)}, not {reading!r}")
        searched = max(1, searched)
        spent = [(1 - CONFIDENCE) * (n / at[-1]) ** SPENDING / searched for n in at]
        return cls(at, tuple(1 - (now - before) for before, now in zip([0.0, *spent], spent)), reading, searched)

    def confidence(self, seeds: int) -> float:
        """The confidence of the intervals read at the look after ``seeds`` seeds (the last look at or before it,
        the first one below it)."""
        return self.confidences[max(0, sum(n <= seeds for n in self.at) - 1)]

    def after(self, reached: int) -> int:
        """The seeds of the look after the one at ``reached`` seeds (the last one's own)."""
        return next((seeds for seeds in self.at if seeds > reached), self.at[-1])

    @property
    def when(self) -> str:
        """``after 3, 5 and 8 seeds``, ``after each of 3 to 30 seeds``."""
        if len(self.at) > 6 and self.at == tuple(range(self.at[0], self.at[-1] + 1)):
            listed = f"each of {self.at[0]} to {self.at[-1]}"
        else:
            listed = ", ".join(map(str, self.at[:-1])) + (" and " if len(self.at) > 1 else "") + str(self.at[-1])
        return f"after {listed} seed{'s' * (self.at[-1] != 1)}"

    def describe(self) -> str:
        """One sentence on how the race read its intervals."""
        if set(self.confidences) == {CONFIDENCE}:
            return f"intervals at {100 * CONFIDENCE:g} %, read {self.when}"
        if len(set(self.confidences)) == 1:
            read = f"intervals at {100 * self.confidences[0]:.2f} %, read {self.when}"
        else:
            listed = ", ".join(f"{100 * c:.2f}" for c in self.confidences[:-1])
            read = f"intervals read {self.when}, at {listed} and {100 * self.confidences[-1]:.2f} %"
        many = len(self.at) > 1
        who = (f"all {len(self.at)} looks" if many else "its one look") + \
            (f" at the {self.searched} searched graphs" if self.searched > 1 else "")
        if self.searched == 1:
            errs = ("together tell" if many else "tells") + " apart two graphs that do not differ"
        else:
            errs = ("together claim" if many else "claims") + " a gain that is not there"
        return f"{read}: {who} {errs} at most {100 * (1 - CONFIDENCE):g} % of the time"

    def to_dict(self) -> dict[str, Any]:
        return {"at": list(self.at), "confidences": [100 * c for c in self.confidences], "reading": self.reading,
                "searched": self.searched}


@dataclass(frozen=True)
class Standings:
    """The state of a race, best first: the contenders still racing (by mean), then the dropped ones (the
    latest dropped first). ``done``: no contender needs another run; ``seeds``: the seeds the race has reached;
    ``min_gain``: the smallest gain over the best baseline the race looked for (:func:`gains_too_little`);
    ``looks``: when it reads its intervals, at what confidence."""

    ranked: tuple[Rescored, ...]
    done: bool
    seeds: int
    min_gain: float
    looks: Looks

    @property
    def look(self) -> int:
        """Which of its looks the race has reached, from 1."""
        return self.looks.at.index(self.seeds) + 1

    def describe(self) -> str:
        """One line on where the race stands: done, or at which look, with how many of that look's runs."""
        trained = sum(len(r.accuracies) + r.failed for r in self.ranked)
        looks = f"looks {self.looks.when}"
        if self.done:
            return f"race: done after {self.seeds} seeds and {trained} runs ({looks})"
        racing = [r for r in self.ranked if r.dropped_at is None]
        finished = sum(len(r.accuracies) + r.failed for r in racing)
        return (f"race: look {self.look} of {len(self.looks.at)} ({looks}): "
                f"{len(racing)} contenders racing, {finished} of the {sum(r.seeds for r in racing)} runs it asks "
                f"of them finished, {trained} runs in all")


def candidates(study: StudyReader, top: int) -> list[FrozenTrial]:
    """The ``top`` complete searched trials with the highest search score (the lowest number among equals)."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if baseline_of(t) is None]
    return sorted(complete, key=lambda t: (-t.value, t.number))[:top]


def baseline_trials(study: StudyReader) -> list[FrozenTrial]:
    """The complete baseline trials of the study, one per baseline (its first), in trial order."""
    found: dict[str, FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if baseline_of(trial) is not None:
            found.setdefault(baseline_of(trial), trial)
    return sorted(found.values(), key=lambda t: t.number)


def contenders(study: StudyReader, top: int) -> list[FrozenTrial]:
    """What a race of the ``top`` best searched trials runs: those, then the baselines."""
    return candidates(study, top) + baseline_trials(study)


def stored_runs(attrs: dict[str, Any], trial: int, seeds: int) -> list[RaceRun | None]:
    """The results of ``trial``'s runs 0..seeds-1 stored in a study's user attributes ``attrs`` (None where none
    is stored, or it is not readable)."""
    return [stored_run(attrs, trial, index) for index in range(seeds)]


def standings(study: StudyReader) -> Standings | None:
    """The race the study last asked for (:data:`RESCORE_ATTR`), replayed from its stored runs; None when no race
    was asked for. Runs still training or never started count as missing."""
    study = Snapshot.of(study)
    attrs = study.user_attrs
    asked = attrs.get(RESCORE_ATTR)
    if not isinstance(asked, dict) or not {"top", "seeds"} <= set(asked):
        return None
    results = {trial.number: (trial, stored_runs(attrs, trial.number, asked["seeds"]))
               for trial in contenders(study, asked["top"])}
    # A race asked before the smallest gain existed ran its contenders to the bound, and one asked before races
    # read their intervals today's way read them another (reading_of): each is replayed as it ran.
    return replay(results, asked["seeds"], asked.get("min_gain", 0.0), reading_of(asked))


def reading_of(asked: dict[str, Any]) -> str:
    """How the race stored as ``asked`` (:data:`RESCORE_ATTR`) read its intervals (:data:`READINGS`): as it says,
    or, for a race asked before it said so, ``even-shares`` where it was ``sequential``, else ``every-seed``."""
    return asked.get("reading", "even-shares" if asked.get("sequential") is True else "every-seed")


def replay(results: dict[int, tuple[FrozenTrial, list[RaceRun | None]]], seeds: int,
           min_gain: float = 0.0, reading: str = READING, searched: int | None = None) -> Standings:
    """The race over ``results`` (trial number → (trial, its stored runs by index)) with at most ``seeds`` seeds (see
    the module's docstring): at each of its looks (:meth:`Looks.of`), each searched contender the leader beats,
    or shown to gain less than ``min_gain`` over the best baseline or over the best searched contender
    (:func:`gains_too_little`), is dropped, and each baseline rests while the best searched contender still
    racing is told apart from it (either way) and races again where it is not; until one searched contender is
    left with every baseline told apart from it, none is left, or the seeds are spent. ``reading`` (:data:`READINGS`)
    replays a stored race as it read its intervals; an ``every-seed`` race also raced searched contenders that tie
    each other to the bound. ``searched``: among how many searched graphs the race shared its 5 % (default: those of
    ``results``; a replay of part of a race passes the whole race's)."""
    dropped: dict[int, int] = {}  # out of the race for good (searched, or diverging), by the seeds it reached
    resting: dict[int, int] = {}  # baselines told apart from the best searched contender, by the seeds they have
    baselines = [number for number, (trial, _) in results.items() if baseline_of(trial) is not None]
    if searched is None:
        searched = sum(baseline_of(trial) is None for trial, _ in results.values())
    schedule = Looks.of(seeds, reading, searched=searched)
    sequential = reading != "every-seed"
    reached = schedule.at[0]

    def rescored(number: int) -> Rescored:
        trial, runs = results[number]
        stopped = dropped.get(number, resting.get(number))
        within = runs[:reached if stopped is None else stopped]
        return Rescored(number, trial.value, tuple(None if r is None else r.ensemble_accuracy for r in within),
                        sum(r is not None and r.ensemble_accuracy is None for r in within), len(within),
                        baseline_of(trial), stopped)

    while True:
        racing = [rescored(number) for number in results if number not in dropped and number not in resting]
        if not all(r.complete for r in racing):
            # runs of this round are missing: it waits
            return _ranked(results, rescored, done=False, reached=reached, min_gain=min_gain, looks=schedule)
        sound = [r for r in racing if not r.failed and r.accuracies]
        leader = best(sound)
        best_baseline = best([r for r in (rescored(number) for number in baselines if number not in dropped)
                              if not r.failed and r.accuracies])
        # a race asked since it was sequential also stops telling apart searched graphs that tie each other
        searched_leader = best([r for r in sound if r.baseline is None]) if sequential else None
        for r in racing:
            if r.failed or (r.baseline is None and ((r is not leader and minus(leader, r).above_zero)
                                                    or gains_too_little(r, best_baseline, min_gain)
                                                    or (r is not searched_leader
                                                        and gains_too_little(r, searched_leader, min_gain)))):
                dropped[r.trial] = reached
        searched = [r for r in sound if r.baseline is None and r.trial not in dropped]
        best_searched = best(searched)
        if best_searched is None:  # the baselines beat every searched graph: the best of them is the one to keep
            return _ranked(results, rescored, done=True, reached=reached, min_gain=min_gain, looks=schedule)
        reopened = False
        for number in baselines:
            if number in dropped:
                continue
            # read at the look of the baseline's own seeds: a resting one's were read at an earlier look's
            if told_apart(best_searched, rescored(number), schedule.confidence(resting.get(number, reached))):
                resting.setdefault(number, reached)
            elif resting.pop(number, reached) < reached:
                reopened = True  # a new best searched contender is not told apart from it: it catches up first
        if reopened:
            continue
        if reached >= seeds or (len(searched) == 1 and set(baselines) <= {*dropped, *resting}):
            return _ranked(results, rescored, done=True, reached=reached, min_gain=min_gain, looks=schedule)
        reached = schedule.after(reached)


def best(contenders: list[Rescored]) -> Rescored | None:
    """The contender with the best mean (the lowest trial number among equals); None for none."""
    return max(contenders, key=lambda r: (r.mean, -r.trial), default=None)


def gains_too_little(searched: Rescored, baseline: Rescored | None, min_gain: float,
                     confidence: float = CONFIDENCE) -> bool:
    """Whether ``searched`` is shown at ``confidence`` to gain less than ``min_gain`` over ``baseline``
    (:func:`below_min_gain`)."""
    return baseline is not None and below_min_gain(minus(searched, baseline, confidence), min_gain)


def below_min_gain(difference: PairedDifference | None, min_gain: float) -> bool:
    """Whether a paired ``difference`` shows a gain below ``min_gain`` (the upper end of its interval lies below
    it) without lying above zero: no gain worth having is left to find. Never with ``min_gain`` 0, the race that
    runs its contenders to the bound."""
    return min_gain > 0 and difference is not None and difference.high < min_gain and not difference.above_zero


def told_apart(a: Rescored, b: Rescored, confidence: float = CONFIDENCE) -> bool:
    """Whether ``a`` and ``b`` differ at ``confidence`` on their common seeds, either way."""
    difference = minus(a, b, confidence)
    return difference is not None and (difference.above_zero or difference.below_zero)


def _ranked(results, rescored, *, done: bool, reached: int, min_gain: float, looks: Looks) -> Standings:
    everyone = [rescored(number) for number in results]

    def key(r: Rescored) -> tuple:
        return (r.dropped_at is not None, -(r.dropped_at or 0), r.failed > 0,
                -(r.mean if r.mean is not None else -1.0), r.trial)

    return Standings(tuple(sorted(everyone, key=key)), done, reached, min_gain, looks)


def summaries(study: StudyReader) -> list[Rescored]:
    """Every contender of the race the study last asked for, best first (:func:`standings`); empty when no race
    was asked for."""
    found = standings(study)
    return list(found.ranked) if found is not None else []


@dataclass(frozen=True)
class Verdict:
    """What the race says of the best searched graph against the study's baselines, in the search's own regime.

    Attributes:
        searched: the best searched graph of the race (None if none finished a run).
        baselines: each baseline contender, in the order the study queued them.
        differences: searched − baseline on their common seeds, by baseline name.
        best_baseline: the baseline with the best mean.
        beats: whether ``searched`` beats ``best_baseline`` at 95 % over the race's looks (then it is the graph to
            use).
        min_gain: the smallest gain over the best baseline the race looked for (0: none).
        looks: when the race read its intervals, and at what confidence each (the ``differences``' too).
    """

    searched: Rescored | None
    baselines: tuple[Rescored, ...]
    differences: dict[str, PairedDifference]
    best_baseline: Rescored | None
    beats: bool
    min_gain: float
    looks: Looks

    def keep(self) -> Rescored | None:
        """The graph the study recommends: the searched one where it beats the best baseline, else that baseline."""
        return self.searched if self.beats or self.best_baseline is None else self.best_baseline

    def lines(self) -> list[str]:
        """The verdict in plain words, one sentence a line."""
        if self.searched is None:
            return ["no searched graph finished a race run: nothing to compare with the baselines"]
        lines = [f"{self.searched.label} − {name} = {difference.describe()}"
                 for name, difference in self.differences.items()]
        best = self.best_baseline
        if best is None:
            return lines + ["no baseline in the study (--baseline): nothing says whether the search paid"]
        lines.append(self.looks.describe())
        if self.beats:
            lines.append(f"the best searched graph, {self.searched.label}, beats the best baseline, "
                         f"{best.baseline}, at 95 %: use it")
        else:
            difference = self.differences.get(best.baseline)
            # the race gave up on it at a plain 95 % (that claims no gain): that interval, not the wider one of the
            # race's looks above, is what the verdict rests on
            shortfall = minus(self.searched, best)
            how = ("shares no seed with it" if difference is None
                   else "is worse than it at 95 %" if difference.below_zero
                   else f"gains less than {100 * self.min_gain:.2f} points over it at 95 %: "
                        f"{shortfall.describe()}"
                   if below_min_gain(shortfall, self.min_gain) else "is not told apart from it")
            lines.append(f"no searched graph beats the best baseline, {best.baseline}, at 95 % (the best, "
                         f"{self.searched.label}, {how}): keep {best.baseline}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (accuracies and differences in %)."""
        def contender(r: Rescored | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {"trial": r.trial, "baseline": r.baseline, "label": r.label,
                    "mean": None if r.mean is None else 100 * r.mean, "std": None if r.std is None else 100 * r.std,
                    "runs": [None if a is None else 100 * a for a in r.runs], "dropped_at": r.dropped_at}

        keep = self.keep()
        return {"searched": contender(self.searched), "baselines": [contender(b) for b in self.baselines],
                "differences": {name: d.to_dict() for name, d in self.differences.items()},
                "best_baseline": None if self.best_baseline is None else self.best_baseline.baseline,
                "beats_best_baseline": self.beats, "min_gain": 100 * self.min_gain, "looks": self.looks.to_dict(),
                "keep": None if keep is None else keep.label,
                "summary": self.lines()}


def verdict(study: StudyReader) -> Verdict | None:
    """The verdict of the study's race (None while no race finished)."""
    return judge(standings(study))


def judge(found: Standings | None) -> Verdict | None:
    """The verdict of a race's standings (None unless the race is done), for a caller that has them already."""
    if found is None or not found.done:
        return None
    searched = next((r for r in found.ranked if r.baseline is None and r.accuracies and not r.failed), None)
    baselines = tuple(sorted((r for r in found.ranked if r.baseline is not None), key=lambda r: r.trial))
    differences = {}
    if searched is not None:
        for b in baselines:
            difference = minus(searched, b, found.looks.confidence(b.dropped_at or found.seeds))
            if difference is not None:
                differences[b.baseline] = difference
    best_baseline = best([b for b in baselines if b.mean is not None])
    beats = searched is not None and best_baseline is not None and best_baseline.baseline in differences \
        and differences[best_baseline.baseline].above_zero
    return Verdict(searched, baselines, differences, best_baseline, beats, found.min_gain, found.looks)


def chosen(study: StudyReader) -> tuple[FrozenTrial, str] | None:
    """The trial whose graph the study recommends, and how it was chosen: after a finished race, what its
    :class:`Verdict` keeps; else the highest search score (None while no trial is complete)."""
    study = Snapshot.of(study)
    found = verdict(study)
    keep = found.keep() if found is not None else None
    if keep is not None:
        (trial,) = [t for t in study.get_trials(deepcopy=False) if t.number == keep.trial]
        spread = f" ± {100 * keep.std:.2f}" if keep.std is not None else ""
        how = (f"race over fresh seeds, {100 * keep.mean:.2f}{spread} % over {len(keep.accuracies)} seeds; "
               + "; ".join(found.lines()))
        return trial, how
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    return min(complete, key=lambda t: (-t.value, t.number)), ARGMAX


def _claim(study: optuna.Study, key: str, worker: str) -> None:
    study.set_user_attr(key, {"worker": worker, "time": time.time()})


def _unfinished(study: StudyReader, grace_period: float) -> list[tuple[FrozenTrial, int, bool]]:
    """Every run the race asks for now without a result, best contender first: (trial, run index, whether a live
    worker claims it)."""
    study = Snapshot.of(study)
    found = standings(study)
    if found is None:
        return []
    attrs = study.user_attrs
    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    runs = []
    for contender in found.ranked:
        if contender.dropped_at is not None:
            continue
        for index, result in enumerate(stored_runs(attrs, contender.trial, contender.seeds)):
            if result is None:
                claim = attrs.get(f"{CLAIM_PREFIX}{contender.trial}/{index}")
                live = isinstance(claim, dict) and time.time() - claim.get("time", 0) < grace_period
                runs.append((trials[contender.trial], index, live))
    return runs


def rescore(settings: SearchSettings, study: optuna.Study, *, top: int, seeds: int,
            min_gain: float = DEFAULT_RESCORE_MIN_GAIN, dataset: Dataset | None = None,
            on_run: RaceRunCallback | None = None, on_finish: FinishCallback | None = None,
            progress: bool = False, poll_seconds: float = 5.0) -> list[Rescored]:
    """Race the ``top`` best complete searched trials of ``study`` and its baselines over at most ``seeds`` fresh
    seeds and held-out splits each, dropping a searched graph once it is shown to gain less than ``min_gain`` (a
    fraction of the held-out split) over the best baseline; return the contenders best first (see
    :func:`summaries`).

    Runs already stored are kept; runs other live workers are training are waited for. ``on_run`` is called
    with (trial, run index, its stored result) after each run this worker trains; ``on_finish`` as each run
    finishes all its epochs (:data:`ktg.train.FinishCallback`).
    """
    check_rescore(top, seeds, min_gain)
    # A race asked before held out the search's own split; asked now, its runs are raced again, a split each.
    study.set_user_attr(RESCORE_ATTR, {"top": top, "seeds": seeds, "split_per_run": True, "min_gain": min_gain,
                                       "sequential": True, "reading": READING})
    worker = f"{socket.gethostname()}:{os.getpid()}"
    dataset = dataset if dataset is not None else settings.data_source.load()
    while True:
        unfinished = _unfinished(study, settings.grace_period)
        if not unfinished:
            return summaries(study)
        free = [(trial, index) for trial, index, claimed in unfinished if not claimed]
        if not free:  # other workers train the last runs; a dead one's claim falls silent and is taken over
            time.sleep(poll_seconds)
            continue
        trial, index = free[0]
        key = f"{CLAIM_PREFIX}{trial.number}/{index}"
        with Renewal(functools.partial(_claim, study, key, worker), settings.heartbeat_interval, f"claim {key}"):
            if study.user_attrs.get(key, {}).get("worker") != worker:
                continue  # another worker claimed it at the same instant, and trains it
            try:
                result = rescore_run(settings, dataset, trial, index, on_finish=on_finish, progress=progress)
            except RunFolderBusy:
                continue  # another worker claimed it at the same instant, read its own claim first, and trains it
            store_run(study, trial.number, index, result)
        if on_run is not None:
            on_run(trial.number, index, result)


def rescore_run(settings: SearchSettings, dataset: Dataset, trial: FrozenTrial, index: int, *,
                on_finish: FinishCallback | None = None, progress: bool = False,
                keep_weights: bool | None = None) -> RaceRun:
    """Train rescore run ``index`` (seed :func:`rescore_seed`, held-out split :func:`rescore_split_seed`) of
    ``trial``'s graph in :func:`run_dir`; its result (a diverging run: its one-line reason). The
    run keeps its final weights if ``keep_weights`` (None: where the search keeps weights, ``--keep-weights``)."""
    from ktg.search.objective import failure_reason
    from ktg.train import NonFiniteLossError, train

    seed = rescore_seed(settings.config.seed, index)
    split = rescore_split_seed(settings.config.holdout_seed, index)
    spec = GraphSpec.from_dict(trial.user_attrs[GRAPH_ATTR], where=f"trial {trial.number}")
    folder = run_dir(settings.out, trial.number, index)
    config = dataclasses.replace(settings.config, seed=seed, holdout_seed=split)
    try:
        final = train(spec, dataset, config, folder, restart=True, eval_epochs=frozenset(), on_finish=on_finish,
                      progress=progress)
    except NonFiniteLossError as error:  # this graph diverges with this seed: a result too, stored as such
        return RaceRun(seed, split, fail_reason=failure_reason(error, folder))
    # Only the result is read (it is stored in the study); the final weights stay where the search keeps weights.
    keep = settings.keep_weights > 0 if keep_weights is None else keep_weights
    RunFolder(folder).delete_checkpoints(keep_latest=keep)
    return RaceRun(seed, split, final.ensemble_accuracy, final.mean_node_accuracy, str(folder.resolve()))
