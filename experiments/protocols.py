"""Experiment configs: one JSON file per protocol of the papers, expanded into ``ktg`` command lines.

A config (see ``experiments/README.md``) names one ``ktg`` command (``train`` or ``search``), its arguments, an
optional grid of variants (e.g. graph × nodes), the seeds to run, where each run goes, and the papers' numbers
for the tables. :func:`load_config` validates it; :func:`expand` turns it into :class:`Job` s, one per variant
and seed; :func:`dry_run_job` shrinks a job to a tiny budget on synthetic data so that it starts anywhere.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ktg.errors import KTGError
from ktg.io import read_json

COMMANDS = ("train", "search")
_FIELDS = {"name", "title", "protocol", "command", "args", "grid", "seeds", "seed_args", "out", "reference", "notes",
           "paired_with"}
_REQUIRED = ("name", "title", "command", "args", "seeds", "out")

#: What a dry run puts in place of the protocol's data and budget: one epoch (one trial) of narrow CIFAR-style
#: nodes on synthetic 16-pixel images, on the CPU.
DRY_RUN_ARGS = {
    "dataset": "synthetic", "image-size": 16,
    "dataset-option": {"train_size": 32, "test_size": 16, "num_classes": 4},
    "width": 4, "epochs": 1, "batch-size": 16, "eval-batch-size": 64, "device": "cpu", "no-progress": True,
}
_DRY_RUN_DROPPED = ("data-root", "cache-dir", "pretrained", "holdout")
_DRY_RUN_MODEL = "abn_resnet20"


class ConfigError(KTGError):
    """An experiment config that does not validate; the message names the file and the field."""


@dataclass(frozen=True)
class Config:
    """A validated experiment config (field meanings: ``experiments/README.md``)."""

    path: Path
    name: str
    title: str
    command: str
    args: dict[str, Any]
    grid: dict[str, list]
    seeds: tuple[int, ...]
    seed_args: tuple[str, ...]
    out: str
    reference: tuple[dict, ...] = ()
    protocol: str = ""
    notes: str = ""
    paired_with: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One command of an experiment: a variant of the grid (names, ``{"graph": "dml", "nodes": "3"}``), a seed,
    the ``ktg`` arguments and the run's folder."""

    config: Config
    variant: dict[str, Any]
    seed: int
    args: dict[str, Any]
    out: Path
    notes: list[str] = field(default_factory=list)

    @property
    def variant_name(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.variant.items()) or "-"

    def argv(self) -> list[str]:
        """The ``ktg`` command line (without the leading ``ktg``)."""
        return [self.config.command, *to_argv(self.args)]


def to_argv(args: dict[str, Any]) -> list[str]:
    """Arguments as a command line: ``true`` → a flag, ``false``/``null`` → left out, a list → several values,
    an object → one ``--key K=V`` per entry (``dataset-option``); keys are option names without ``--``."""
    argv: list[str] = []
    for key, value in args.items():
        option = f"--{key}"
        if value is True:
            argv.append(option)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            argv += [option, *map(str, value)]
        elif isinstance(value, dict):
            for name, item in value.items():
                argv += [option, f"{name}={item if isinstance(item, str) else json.dumps(item)}"]
        else:
            argv += [option, str(value)]
    return argv


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; every job it expands to must parse as a ``ktg`` command line."""
    path = Path(path)
    data = read_json(path, "experiment config", ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    missing = [key for key in _REQUIRED if key not in data]
    unknown = sorted(set(data) - _FIELDS)
    if missing or unknown:
        raise ConfigError(f"{path}: " + "; ".join(
            ([f"missing field(s) {', '.join(missing)}"] if missing else [])
            + ([f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}"] if unknown else [])))
    if data["command"] not in COMMANDS:
        raise ConfigError(f"{path}: command: {data['command']!r} is not one of {', '.join(COMMANDS)}")
    if not isinstance(data["args"], dict):
        raise ConfigError(f"{path}: args: expected an object of ktg options")
    grid = data.get("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, (list, dict)) and v for v in grid.values()):
        raise ConfigError(f"{path}: grid: expected an object of non-empty lists or of {{name: value}} objects, "
                          f"e.g. {{\"nodes\": [2, 3]}}")
    if "out" in data["args"]:
        raise ConfigError(f"{path}: args: leave out 'out'; the config's top-level 'out' sets it")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{path}: seeds: expected a non-empty list of integers")
    reference = data.get("reference", [])
    if not isinstance(reference, list) or not all(
            isinstance(r, dict)
            and {"match", "source", "ensemble"} <= set(r) <= {"match", "source", "ensemble", "node_mean"}
            and isinstance(r["match"], dict) for r in reference):
        raise ConfigError(f"{path}: reference: expected a list of {{match, source, ensemble[, node_mean]}} objects")
    for r in reference:
        unknown_keys = sorted(set(r["match"]) - set(data["args"]) - set(grid))
        if unknown_keys:
            raise ConfigError(f"{path}: reference: match on {', '.join(unknown_keys)}, which is neither an argument "
                              f"nor a grid key")
        for key in ("ensemble", "node_mean"):
            if key in r and not _is_reported_number(r[key]):
                raise ConfigError(f"{path}: reference: {key} must be a number or [mean, std], got {r[key]!r}")
    paired_with = data.get("paired_with", {})
    if not isinstance(paired_with, dict) or not all(
            key in grid and str(value) in map(str, grid[key]) for key, value in paired_with.items()):
        raise ConfigError(f"{path}: paired_with: expected an object naming, for one or more grid keys, the "
                          f"variant every other one is compared with, e.g. {{\"graph\": \"independent\"}}; "
                          f"got {paired_with!r}")
    config = Config(
        path=path, name=data["name"], title=data["title"], command=data["command"], args=data["args"], grid=grid,
        seeds=tuple(seeds), seed_args=tuple(data.get("seed_args", ["seed"])), out=data["out"],
        reference=tuple(reference), protocol=data.get("protocol", ""), notes=data.get("notes", ""),
        paired_with={key: str(value) for key, value in paired_with.items()})
    for job in expand(config, runs="runs"):
        check_argv(job)
    return config


def check_argv(job: Job) -> None:
    """Parse the job's command line with ktg's own parser: a wrong option is an error now, not hours later."""
    from ktg.cli import parse

    try:
        parse(job.argv())
    except KTGError as error:
        raise ConfigError(f"{job.config.path}: variant {job.variant_name}: ktg rejects the command line: "
                          f"{error}") from None


def _fill(value: Any, context: dict[str, Any], where: str) -> Any:
    if isinstance(value, str):
        try:
            return value.format(**context)
        except (KeyError, IndexError) as error:
            raise ConfigError(f"{where}: unknown placeholder {error} in {value!r}; "
                              f"known: {', '.join(sorted(context))}") from None
    if isinstance(value, list):
        return [_fill(item, context, where) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, context, where) for key, item in value.items()}
    return value


def _is_reported_number(value: Any) -> bool:
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    return number(value) or (isinstance(value, list) and len(value) == 2 and all(map(number, value)))


def expand(config: Config, runs: str | Path, *, data: str | Path = "data", overrides: dict[str, Any] | None = None,
           seeds: list[int] | None = None) -> list[Job]:
    """Every (variant, seed) job of ``config``: grid variants in order, seeds inner.

    ``runs`` and ``data`` replace ``{runs}`` and ``{data}``; ``overrides`` replace arguments (an overridden grid
    key has that one value); ``seeds`` replace the config's seeds. Placeholders ``{runs}``, ``{data}``,
    ``{seed}``, ``{name}`` and any argument (``{nodes}``, ``{dataset}``, …; dashes read as underscores) are filled
    in ``out`` and in string arguments; in ``out``, a grid key given as ``{name: value}`` stands for the name.
    """
    overrides = overrides or {}
    grid = {key: values for key, values in config.grid.items() if key not in overrides}
    named = {key: values if isinstance(values, dict) else {str(v): v for v in values} for key, values in grid.items()}
    jobs = []
    for names in itertools.product(*named.values()):
        variant = dict(zip(named, names))
        values = {key: named[key][name] for key, name in variant.items()}
        where = f"{config.path}: variant {' '.join(f'{k}={v}' for k, v in variant.items()) or '-'}"
        for seed in seeds if seeds is not None else config.seeds:
            raw = {**config.args, **values, **overrides, **{name: seed for name in config.seed_args}}
            context = {"runs": str(runs), "data": str(data), "seed": seed, "name": config.name,
                       **{key.replace("-", "_"): value for key, value in raw.items()}}
            args = _fill(raw, context, where)
            out = Path(_fill(config.out, {**context, **{k.replace("-", "_"): v for k, v in variant.items()}}, where))
            jobs.append(Job(config, {**variant}, seed, {**args, "out": str(out)}, out))
    return jobs


def dry_run_job(job: Job) -> Job:
    """The same job on a tiny budget: synthetic data, narrow nodes, one epoch, one trial and no race, CPU.

    A graph file that does not exist yet (the best graph of a search that has not run) is replaced by the named
    graph ``dml``, with a note.
    """
    args = {key: value for key, value in job.args.items() if key not in _DRY_RUN_DROPPED}
    args.update(DRY_RUN_ARGS)
    if "model" in args:
        args["model"] = _DRY_RUN_MODEL
    notes = list(job.notes)
    if job.config.command == "search":
        # 16-pixel inputs give 8×8 attention maps, too small for the 11×11 crops.
        args.update({"trials": 1, "crop-sizes": [3, 5], "rescore-top": 0})
        notes.append("dry run: no race of the best graphs and the baselines (--rescore-top 0); the real run races")
    graph = args.get("graph")
    if isinstance(graph, str) and graph not in ("independent", "dml") and not Path(graph).exists():
        notes.append(f"dry run: graph file {graph} does not exist yet; using the named graph dml instead")
        args["graph"] = "dml"
    # A milestone must lie before the last epoch: one epoch has room for none. Which schedule the job trains with
    # (its own --schedule, else its recipe's) is ktg's to say, asked at the job's own number of epochs.
    if _planned_schedule(job.config.command, {**args, "epochs": job.args.get("epochs")}) == "step":
        notes.append("dry run: one epoch leaves no room for the step schedule's milestones; constant learning rate")
        args = {key: value for key, value in args.items() if key not in ("milestones", "gamma")}
        args["schedule"] = "constant"
    return Job(job.config, job.variant, job.seed, args, job.out, notes)


def _planned_schedule(command: str, args: dict[str, Any]) -> str:
    """The learning-rate schedule ``ktg COMMAND ARGS`` would train with (an argument that is None is left out)."""
    from ktg.cli import plan

    try:
        return plan([command, *to_argv(args)]).config.schedule
    except KTGError as error:
        raise ConfigError(f"ktg rejects the dry run's command line: {error}") from None


def find_configs(folder: str | Path) -> list[Path]:
    """The config files of a folder, sorted by name."""
    return sorted(Path(folder).glob("*.json"))
