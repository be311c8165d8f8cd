"""What a study found, read from its storage alone: the leaderboard, the best graph, any trial's graph.

Everything here reads the database, never the trial folders, so ``ktg study show`` works on any machine that
can reach the storage URL. The files (``leaderboard.csv``, ``best_graph.json``) are rewritten atomically from
the storage after every finished trial by the worker that finished it, and once more when a search ends; the
writers take turns (:func:`write_results`), so the files never go back to an older state of the storage.

A live study is read as possibly unfinished: a running trial draws its graph one parameter at a time, each
written to the storage at once, so its parameters may describe half a graph. Readers therefore never rebuild a
graph from parameters; they read the graph a worker stores whole, in one write, before the trial trains
(:data:`~ktg.search.keys.GRAPH_ATTR`). A trial without it is listed with no graph, unless it trained
(complete or pruned): then its missing graph is an error.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from ktg.errors import KTGError
from ktg.graph import GraphSpec
from ktg.io import write_json, write_text
from ktg.run_folder import RunFolder
from ktg.search import rescore
from ktg.search.keys import (
    FAIL_REASON_ATTR,
    FAILED_TRIAL_ATTR,
    GRAPH_ATTR,
    RETRY_HISTORY_ATTR,
    RUN_DIR_ATTR,
    RUN_PREFIX,
)
from ktg.search.settings import BEST_GRAPH, LEADERBOARD, RESULTS_LOCK, VERDICT
from ktg.search.storage import FINISHED, Snapshot, StudyReader

COLUMNS = ("rank", "trial", "state", "baseline", "ensemble_accuracy", "rescore_mean", "rescore_std", "rescore_runs",
           "epochs",
           "mean_node_accuracy", "node_accuracy", "retry_of", "seconds", "note", "graph", "graph_file")
_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.WAITING: 3,
          TrialState.FAIL: 4}


def last_value(trial: FrozenTrial) -> float | None:
    """The objective of a complete trial, else the last accuracy it reported (None if it reported none)."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    return trial.intermediate_values[trial.last_step] if trial.last_step is not None else None


def describe_graph(spec: GraphSpec) -> str:
    """A one-line summary of the active part of a graph: label gates, then every edge that is not cut off."""
    edges = ", ".join(f"{e.source}→{e.target} {e.loss}/{e.gate}" for e in spec.active_edges)
    return f"labels {'/'.join(spec.label_gates)}; " + (edges or "no network edges")


def graph_of(trial: FrozenTrial) -> GraphSpec | None:
    """The graph the trial trains or trained, as its worker stored it before training; None while a running or
    waiting trial has not stored it yet, and for a failed trial that never did (it failed while drawing it, or
    was handed back before). A complete or pruned trial without it, or any trial's malformed graph (stored
    whole, in one write, so never half-written), raises KTGError."""
    stored = trial.user_attrs.get(GRAPH_ATTR)
    if stored is not None:
        return GraphSpec.from_dict(stored, where=f"trial {trial.number}")
    if trial.state in FINISHED:
        raise KTGError(f"trial {trial.number} is {trial.state.name.lower()} but its graph is not stored with it "
                       f"(user attribute {GRAPH_ATTR!r}); ktg search stores it before a trial trains: was this trial "
                       f"added to the study by other means?")
    return None


def _note(trial: FrozenTrial, retried_as: dict[int, int]) -> str:
    if trial.state == TrialState.PRUNED:
        return f"pruned after epoch {trial.last_step}" if trial.last_step is not None else "pruned"
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return "" if GRAPH_ATTR in trial.user_attrs else "no graph drawn yet"
    if trial.state != TrialState.FAIL:
        return ""
    reason = trial.user_attrs.get(FAIL_REASON_ATTR) or "its worker stopped sending heartbeats (killed or lost)"
    if trial.number in retried_as:
        reason += f"; retried as trial {retried_as[trial.number]}"
    return reason


def leaderboard(study: StudyReader) -> list[dict[str, Any]]:
    """One row per trial: complete trials ranked by ensemble accuracy, then pruned (longest-trained first),
    running, waiting and failed ones. Accuracies are fractions in [0, 1].

    After a finished race (``--rescore-top``) its contenders rank first, as the race ranks them (the
    ``rescore_*`` columns: mean, sample standard deviation, runs finished of those asked for, and the seeds after
    which the race dropped it), the graph the study recommends (``best_graph.json``) first. Baseline trials say
    which baseline they are."""
    study = Snapshot.of(study)
    trials = study.get_trials(deepcopy=False)
    race = rescore.standings(study)
    rescored = {r.trial: r for r in race.ranked} if race is not None else {}
    rescore_rank = {number: i for i, number in enumerate(rescored)} if race is not None and race.done else {}
    found = rescore.judge(race)
    if found is not None and found.keep() is not None:  # rank 1 is the graph in best_graph.json
        rescore_rank[found.keep().trial] = -1
    retried_as = {}
    for trial in trials:
        history = trial.system_attrs.get(RETRY_HISTORY_ATTR)
        if history:
            retried_as[history[-1]] = trial.number

    def order(trial: FrozenTrial) -> tuple:
        value = last_value(trial)
        return (_ORDER[trial.state], rescore_rank.get(trial.number, len(rescore_rank)),
                -(trial.last_step or 0) if trial.state == TrialState.PRUNED else 0,
                -(value if value is not None else -1.0), trial.number)

    rows = []
    rank = 0
    for trial in sorted(trials, key=order):
        if trial.state == TrialState.COMPLETE:
            rank += 1
        spec = graph_of(trial)
        value = last_value(trial)
        nodes = trial.user_attrs.get("node_accuracy")
        rows.append({
            "rank": rank if trial.state == TrialState.COMPLETE else "",
            "trial": trial.number,
            "state": trial.state.name.lower(),
            "baseline": rescore.baseline_of(trial) or "",
            "ensemble_accuracy": "" if value is None else round(value, 6),
            **_rescore_columns(rescored.get(trial.number)),
            "epochs": trial.last_step if trial.last_step is not None else 0,
            "mean_node_accuracy": round(trial.user_attrs["mean_node_accuracy"], 6)
            if "mean_node_accuracy" in trial.user_attrs else "",
            "node_accuracy": " ".join(f"{a:.6f}" for a in nodes) if nodes else "",
            "retry_of": trial.system_attrs.get(FAILED_TRIAL_ATTR, ""),
            "seconds": round(trial.duration.total_seconds(), 1) if trial.duration is not None else "",
            "note": _note(trial, retried_as),
            "graph": describe_graph(spec) if spec is not None else "",
            "graph_file": str(RunFolder(trial.user_attrs[RUN_DIR_ATTR]).graph_file)
            if RUN_DIR_ATTR in trial.user_attrs else "",
        })
    return rows


def _rescore_columns(rescored) -> dict[str, Any]:
    if rescored is None:
        return {"rescore_mean": "", "rescore_std": "", "rescore_runs": ""}
    return {"rescore_mean": "" if rescored.mean is None else round(rescored.mean, 6),
            "rescore_std": "" if rescored.std is None else round(rescored.std, 6),
            "rescore_runs": f"{len(rescored.accuracies)}/{rescored.seeds}"
                            + (f", {rescored.failed} failed" if rescored.failed else "")
                            + (f", dropped after {rescored.dropped_at}" if rescored.dropped_at is not None else "")}


def write_leaderboard(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Write leaderboard rows (see :func:`leaderboard`) as CSV, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def write_results(study: optuna.Study, out: str | Path) -> Path | None:
    """Rewrite ``OUT/leaderboard.csv``, ``OUT/best_graph.json`` and after a race ``OUT/verdict.json`` from the
    storage; returns the best graph's
    path (None while no trial has completed). Reading the storage and writing the files happen under the search
    folder's lock (:func:`_writers_take_turns`): a writer that read the storage earlier never renames its files
    over those of one that read it later."""
    out = Path(out)
    with _writers_take_turns(out):
        snapshot = Snapshot.of(study)  # read once: every file below is of the same moment
        write_leaderboard(leaderboard(snapshot), out / LEADERBOARD)
        found = rescore.verdict(snapshot)
        if found is not None:
            write_json(out / VERDICT, found.to_dict())
        if rescore.chosen(snapshot) is None:
            return None
        export_graph(snapshot, "best", out / BEST_GRAPH)
    return out / BEST_GRAPH


@contextlib.contextmanager
def _writers_take_turns(out: Path) -> Iterator[None]:
    """Hold ``OUT/results.lock`` exclusively. Each writer reads the storage after the writer before it has
    renamed its files, so the last files written are from the newest snapshot. flock excludes every other
    holder on this machine (processes and threads alike: each open is its own holder), and on Linux NFS, where
    the kernel maps it to a byte-range lock the server arbitrates, on other machines too; a filesystem that keeps
    locks per machine (Lustre mounted with ``localflock``) lets workers of different machines overlap, and the
    files may then lag the storage until the next rewrite. The kernel releases the lock of a killed process."""
    path = out / RESULTS_LOCK
    try:
        out.mkdir(parents=True, exist_ok=True)
        file = open(path, "a")
    except OSError as error:
        raise KTGError(f"cannot write {path}: {error.strerror or error}") from None
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX)
        except OSError as error:  # ENOLCK: a filesystem without file locks
            raise KTGError(f"cannot lock {path} ({error.strerror or error}), which the writers of the leaderboard "
                           f"take turns on: put the search folder (--out) on a filesystem with file locks") from None
        yield  # closing the file releases the lock


def export_graph(study: StudyReader, trial: int | str, path: str | Path) -> GraphSpec:
    """Write the graph of trial number ``trial`` (or ``"best"``: the one the study recommends, see
    :func:`ktg.search.rescore.chosen`) to ``path`` as a graph file for ``ktg train``; a graph chosen by
    ``--rescore-top`` is named for how it was chosen."""
    study = Snapshot.of(study)
    how = None
    if trial == "best":
        found = rescore.chosen(study)
        if found is None:
            raise KTGError(f"study {study.study_name!r} has no complete trial yet")
        chosen, how = found
    else:
        try:
            number = int(trial)
        except ValueError:
            raise KTGError(f"--export: expected a trial number or 'best', got {trial!r}") from None
        found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not found:
            raise KTGError(f"study {study.study_name!r} has no trial {number} "
                           f"(trials 0..{len(study.get_trials(deepcopy=False)) - 1})")
        chosen = found[0]
    spec = graph_of(chosen)
    if spec is None:
        raise KTGError(f"trial {chosen.number} has no graph: it failed before drawing one"
                       if chosen.state == TrialState.FAIL else
                       f"trial {chosen.number} has not drawn its graph yet ({chosen.state.name.lower()}); "
                       f"export it once it trains")
    if how is not None and how != rescore.ARGMAX:
        spec = dataclasses.replace(spec, name=f"{spec.name}, chosen by the {how}")
    spec.save(path)
    return spec


def format_table(rows: list[dict[str, Any]], top: int | None = None) -> str:
    """The leaderboard as an aligned text table (accuracies in %), at most ``top`` rows."""
    shown = rows if top is None else rows[:top]
    rescored = any(row.get("rescore_runs") for row in rows)
    header = ("rank", "trial", "state", "ensemble %", *(("raced %",) if rescored else ()), "epochs",
              "mean node %", "note / graph")

    def percent(value: float | str) -> str:  # "" marks an accuracy the trial never reported
        return f"{100 * value:.2f}" if value != "" else "-"

    def rescore_cell(row: dict[str, Any]) -> tuple[str, ...]:  # mean ± std (runs) of the rescore, if shown
        if not rescored:
            return ()
        if not row.get("rescore_runs"):
            return ("",)
        spread = f" ± {percent(row['rescore_std'])}" if row["rescore_std"] != "" else ""
        return (f"{percent(row['rescore_mean'])}{spread} ({row['rescore_runs']})",)

    lines = [header]
    for row in shown:
        lines.append((str(row["rank"]), str(row["trial"]), row["state"], percent(row["ensemble_accuracy"]),
                      *rescore_cell(row), str(row["epochs"]), percent(row["mean_node_accuracy"]),
                      row["note"] or (f"baseline {row['baseline']}: " if row["baseline"] else "") + row["graph"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    right = {0, 1, 3, 4, 5, 6} if rescored else {0, 1, 3, 4, 5}
    text = ["  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                      for i, (cell, width) in enumerate(zip(line[:-1], widths))) + "  " + line[-1]
            for line in lines]
    if top is not None and len(rows) > top:
        text.append(f"… {len(rows) - top} more trials (--top N, or the CSV)")
    return "\n".join(text)


def budget_spent(study: StudyReader, epochs: int) -> str:
    """How the study spent its training, counted in full training runs of ``epochs`` epochs: the trials (each
    counts the epochs up to its last evaluated one), the baselines among them, and the race's runs."""
    trials = study.get_trials(deepcopy=False)
    trained = sum(t.last_step or 0 for t in trials if t.state != TrialState.RUNNING)
    baselines = sum(t.last_step or 0 for t in trials if rescore.baseline_of(t) is not None)
    attrs = study.user_attrs
    raced = sum(key.startswith(RUN_PREFIX) for key in attrs)
    total = trained / epochs + raced
    return (f"{total:.1f} full training runs of {epochs} epochs: {len(trials)} trials trained {trained / epochs:.1f} "
            f"(the baselines {baselines / epochs:.1f} of them), the race {raced}")


def state_counts(study: StudyReader) -> dict[str, int]:
    """How many trials are in each state, by lower-case state name."""
    counts = {state.name.lower(): 0 for state in _ORDER}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    return counts
