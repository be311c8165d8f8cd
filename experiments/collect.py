#!/usr/bin/env python
"""Collect finished experiment runs into the papers' tables: mean ± std over seeds, beside the papers' numbers.

    python experiments/collect.py runs/experiments                  # every config in experiments/configs
    python experiments/collect.py runs/experiments --configs experiments/configs/dogs_baselines.json

For every config, the run folders its ``out`` pattern matches under RUNS_DIR are found (so runs made with
``run.py --set nodes=4`` are found too) and grouped by everything but the seed. A training run counts once it has
``metrics.json``; its accuracies are those of the last epoch on the test split. The standard deviation is the
sample one (n − 1); with one seed only the mean is shown. A search shows its trials and best validation accuracy.
Every row names the precision its runs trained in (from their config.json: ``fp32`` or ``bf16 autocast``), beside
the papers' numbers, which trained in fp32.
The tables are printed as Markdown and written to RUNS_DIR/results.md; the training results, with the papers'
numbers, also to RUNS_DIR/results.csv.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import re
import statistics
import string
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocols import Config, find_configs, load_config  # noqa: E402

from ktg.cli import quiet_when_the_reader_leaves  # noqa: E402
from ktg.errors import KTGError  # noqa: E402
from ktg.io import write_text  # noqa: E402
from ktg.run_folder import RunFolder  # noqa: E402
from ktg.search.objective import TRIALS_DIR  # noqa: E402
from ktg.search.results import BEST_GRAPH, LEADERBOARD  # noqa: E402
from ktg.stats import PairedDifference, paired_difference  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Collect finished runs into the papers' tables (mean ± std over seeds).")
    parser.add_argument("runs", type=Path,
                        help="the folder run.py wrote into (its --runs; default there: runs/experiments)")
    parser.add_argument("--configs", type=Path, nargs="+", default=[CONFIGS],
                        help="config files or folders of them (default: experiments/configs)")
    parser.add_argument("--out", type=Path, help="folder for results.md and results.csv (default: RUNS)")
    return parser


def pattern(template: str, runs: Path) -> tuple[str, re.Pattern]:
    """A config's ``out`` template as a glob (every placeholder but ``{runs}`` → ``*``) and as a regular
    expression that recovers the placeholders' values from a matching folder."""
    wildcard, regex, seen = "", "", set()
    for literal, name, _, _ in string.Formatter().parse(template.replace("{runs}", str(runs).replace("{", "{{"))):
        wildcard += literal
        regex += re.escape(literal)
        if name:
            wildcard += "*"
            regex += f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)"
            seen.add(name)
    return wildcard, re.compile(regex + "$")


def find_runs(config: Config, runs: Path, done: Callable[[Path], bool]) -> list[tuple[dict[str, str], Path]]:
    """(placeholder values, folder) of every folder under ``runs`` matching the config's ``out`` for which
    ``done(folder)`` holds (a finished run, a search with a leaderboard)."""
    wildcard, regex = pattern(config.out, runs)
    found = []
    for name in sorted(glob.glob(wildcard)):
        match = regex.match(name)
        if match and done(Path(name)):
            found.append((match.groupdict(), Path(name)))
    return found


def _sort_key(values: dict[str, str]) -> tuple:
    return tuple((0, int(v), "") if v.isdigit() else (1, 0, v) for v in values.values())


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value), in the units given."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt(mean: float | None, std: float | None = None) -> str:
    if mean is None:
        return ""
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _reported(value: Any) -> tuple[float, float | None]:
    return (float(value[0]), float(value[1])) if isinstance(value, list) else (float(value), None)


def _matches(match: dict[str, Any], values: dict[str, str], config: Config) -> bool:
    return all(str(values[key]) == str(want) if key in values else config.args.get(key) == want
               for key, want in match.items())


def precision_of(run: RunFolder) -> str:
    """The precision a run trained in, from its config.json: ``fp32``, ``bf16 autocast``, or ``unrecorded`` for a
    run whose config left it to the device (made before runs recorded it)."""
    config = run.read_config().train
    return "unrecorded" if config.amp is None else config.precision


def training_groups(config: Config, runs: Path) -> list[dict[str, Any]]:
    """The finished runs of a training config grouped by everything but the seed, sorted: each group has the
    placeholder ``values``, ``ensemble`` and ``node_mean`` (mean, std) in %, ``seeds``, ``precision`` (its runs'
    precisions, see :func:`precision_of`, joined by " + " where seeds differ) and ``reference``
    ({source: {"ensemble": (mean, std), "node_mean": ...}}) from the config's papers' numbers, and ``paired``
    (see :func:`paired_against`)."""
    groups: dict[tuple, dict[str, Any]] = {}
    for values, folder in find_runs(config, runs, lambda folder: RunFolder(folder).is_finished()):
        seedless = {k: v for k, v in values.items() if k != "seed"}
        run = RunFolder(folder)
        metrics = run.read_metrics()
        group = groups.setdefault(tuple(seedless.items()), {"values": seedless, "by_seed": {}, "precision": []})
        group["by_seed"][values.get("seed")] = {"ensemble": 100 * metrics.ensemble_accuracy,
                                                "node_mean": 100 * metrics.mean_node_accuracy}
        group["precision"].append(precision_of(run))
    result = []
    for group in sorted(groups.values(), key=lambda g: _sort_key(g["values"])):
        reference = {}
        for entry in config.reference:
            if _matches(entry["match"], group["values"], config):
                reference[entry["source"]] = {key: _reported(entry[key]) for key in ("ensemble", "node_mean")
                                              if key in entry}
        result.append({"values": group["values"], "seeds": len(group["by_seed"]), "reference": reference,
                       "by_seed": group["by_seed"],
                       **{key: mean_std([run[key] for run in group["by_seed"].values()])
                          for key in ("ensemble", "node_mean")},
                       "precision": " + ".join(dict.fromkeys(group["precision"]))})
    for group in result:
        group["paired"] = paired_against(config, group, result)
    return result


def paired_against(config: Config, group: dict[str, Any], groups: list[dict[str, Any]]
                   ) -> dict[str, PairedDifference] | None:
    """The group minus the variant the config pairs it with (``paired_with``: the same values but those), seed by
    seed over the seeds both finished: {"ensemble": ..., "node_mean": ...} in points of %. None for that variant
    itself, without ``paired_with``, or before the two share a seed."""
    # The values of a run folder are named as in ``out``, where a grid key's dashes read as underscores.
    pairing = {key.replace("-", "_"): value for key, value in config.paired_with.items()}
    if not pairing or all(group["values"].get(key) == value for key, value in pairing.items()):
        return None
    wanted = {**group["values"], **pairing}
    baseline = next((other for other in groups if other["values"] == wanted), None)
    common = [seed for seed in group["by_seed"] if seed in (baseline or {}).get("by_seed", {})]
    if not common:
        return None
    return {key: paired_difference([group["by_seed"][seed][key] for seed in common],
                                   [baseline["by_seed"][seed][key] for seed in common])
            for key in ("ensemble", "node_mean")}


def paired_label(config: Config) -> str:
    """How the tables name the variant every other one is compared with (``independent``)."""
    return " ".join(config.paired_with.values())


def fmt_paired(difference: PairedDifference | None) -> str:
    """``+1.29 [-0.76, +3.34] over 5 paired seeds, better on 4`` (points of %), or nothing."""
    return "" if difference is None else f"{difference.describe(scale=1.0)}, better on {difference.wins}"


def training_rows(config: Config, groups: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, str]]]:
    """The table of a training config: one row per group of seeds, the papers' numbers beside it."""
    sources = list(dict.fromkeys(r["source"] for r in config.reference))
    header = ["variant", "seeds", "precision", "node mean %", "ensemble %"]
    paired = {f"{key.replace('_', ' ')} − {paired_label(config)}": key for key in ("ensemble", "node_mean")
              } if config.paired_with else {}
    header += list(paired)
    for source in sources:
        if any("node_mean" in r for r in config.reference if r["source"] == source):
            header.append(f"node mean % ({source})")
        header.append(f"ensemble % ({source})")
    rows = []
    for group in groups:
        row = {"variant": " ".join(f"{k}={v}" for k, v in group["values"].items()) or "-",
               "seeds": str(group["seeds"]), "precision": group["precision"], "node mean %": fmt(*group["node_mean"]),
               "ensemble %": fmt(*group["ensemble"]),
               **{column: fmt_paired((group["paired"] or {}).get(key)) for column, key in paired.items()}}
        for source, numbers in group["reference"].items():
            row.update({f"{key.replace('_', ' ')} % ({source})": fmt(*value) for key, value in numbers.items()})
        rows.append(row)
    return header, rows


#: The papers' tables, assembled across configs: (title, row key, [(column, config name, fixed values)]).
PAPER_TABLES = [
    ("Stanford Dogs, ensemble accuracy % by number of nodes (public code and table 1)", "nodes",
     [("independent", "dogs_baselines", {"graph": "independent"}), ("DML", "dogs_baselines", {"graph": "dml"}),
      ("optimised graph", "dogs_retrain", {})]),
    ("Graph found on Stanford Dogs, retrained on other datasets: ensemble accuracy % (table 2)", "nodes",
     [("CUB-200-2011", "cub_retrain", {}), ("Stanford Cars", "cars_retrain", {})]),
]


def paper_tables(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The :data:`PAPER_TABLES` that have at least one finished run: each cell reads "ours (papers)", the
    papers' numbers from every source that reports that cell."""
    tables = []
    for title, row_key, columns in PAPER_TABLES:
        columns = [c for c in columns if c[1] in results]
        cells: dict[str, dict[str, str]] = {}
        for column, name, fixed in columns:
            for group in results[name]:
                values = group["values"]
                if row_key in values and all(values.get(k) == v for k, v in fixed.items()):
                    papers = " / ".join(fmt(*numbers["ensemble"]) for numbers in group["reference"].values())
                    cells.setdefault(values[row_key], {})[column] = (
                        f"{fmt(*group['ensemble'])} {group['precision']}" + (f" ({papers})" if papers else ""))
        if cells:
            header = [row_key] + list(dict.fromkeys(c[0] for c in columns))
            rows = [{row_key: key, **cells[key]} for key in sorted(cells, key=lambda k: _sort_key({"k": k}))]
            tables.append(f"## {title}\n\nours, mean ± std over seeds, and the precision we trained in (papers' "
                          f"numbers, trained in fp32, in brackets)\n\n"
                          + markdown(header, rows) + "\n")
    return tables


def search_rows(config: Config, runs: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The table of a search config: trials by state and the best graph's validation accuracy."""
    header = ["variant", "precision", "complete", "pruned", "failed", "best val ensemble %", "best graph"]
    rows = []
    for values, folder in find_runs(config, runs, lambda folder: (folder / LEADERBOARD).is_file()):
        with open(folder / LEADERBOARD, newline="", encoding="utf-8") as file:
            trials = list(csv.DictReader(file))
        complete = [t for t in trials if t["state"] == "complete" and t["ensemble_accuracy"]]
        best = max((100 * float(t["ensemble_accuracy"]) for t in complete), default=None)
        # One study trains every trial in one precision (its identity), so any trial's config.json tells.
        configs = sorted((folder / TRIALS_DIR).glob("*/config.json"))
        rows.append({"variant": " ".join(f"{k}={v}" for k, v in values.items() if k != "seed") or "-",
                     "precision": precision_of(RunFolder(configs[0].parent)) if configs else "",
                     "complete": str(len(complete)),
                     "pruned": str(sum(t["state"] == "pruned" for t in trials)),
                     "failed": str(sum(t["state"] == "fail" for t in trials)),
                     "best val ensemble %": fmt(best),
                     "best graph": str(folder / BEST_GRAPH) if (folder / BEST_GRAPH).exists() else ""})
    return header, rows


def markdown(header: list[str], rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row.get(column, "") for column in header) + " |" for row in rows]
    return "\n".join(lines)


#: Columns of results.csv: one row per group of seeds and paper source, numbers in %.
CSV_COLUMNS = ("config", "variant", "seeds", "node_mean", "node_std", "ensemble_mean", "ensemble_std", "precision",
               "paper", "paper_node_mean", "paper_node_std", "paper_ensemble_mean", "paper_ensemble_std",
               "paired_with", "paired_seeds", "ensemble_diff_mean", "ensemble_diff_low", "ensemble_diff_high",
               "ensemble_diff_wins", "node_diff_mean", "node_diff_low", "node_diff_high")


def csv_rows(config: Config, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups of a training config as CSV rows (see :data:`CSV_COLUMNS`), one per paper source (or one
    without a source)."""
    rows = []
    for group in groups:
        ours = {"config": config.name, "variant": " ".join(f"{k}={v}" for k, v in group["values"].items()) or "-",
                "seeds": group["seeds"], "node_mean": group["node_mean"][0], "node_std": group["node_mean"][1],
                "ensemble_mean": group["ensemble"][0], "ensemble_std": group["ensemble"][1],
                "precision": group["precision"]}
        if group["paired"]:
            ensemble, node = (group["paired"][key].to_dict(scale=1.0) for key in ("ensemble", "node_mean"))
            ours.update({"paired_with": paired_label(config), "paired_seeds": ensemble["seeds"],
                         "ensemble_diff_wins": ensemble["wins"],
                         **{f"{name}_diff_{part}": difference[part] for name, difference in
                            (("ensemble", ensemble), ("node", node)) for part in ("mean", "low", "high")}})
        papers = [{"paper": source, **{f"paper_{key.removesuffix('_mean')}_{part}": value
                                       for key, (mean, std) in numbers.items()
                                       for part, value in (("mean", mean), ("std", std))}}
                  for source, numbers in group["reference"].items()] or [{}]
        rows += [{**ours, **paper} for paper in papers]
    return rows


def collect(config_paths: Sequence[Path], runs: Path) -> tuple[str, list[dict[str, Any]]]:
    """Markdown of the papers' tables and of every config's table, and the CSV rows of every training config."""
    sections, flat, results = [], [], {}
    for path in config_paths:
        config = load_config(path)
        if config.command == "search":
            header, rows = search_rows(config, runs)
        else:
            results[config.name] = training_groups(config, runs)
            header, rows = training_rows(config, results[config.name])
            flat += csv_rows(config, results[config.name])
        sections.append(f"## {config.title}\n\n`{config.name}` ({path.name})\n")
        sections.append((markdown(header, rows) if rows else f"no finished runs under {runs} yet") + "\n")
    return "\n".join(paper_tables(results) + sections), flat


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    paths = [p for given in args.configs for p in (find_configs(given) if given.is_dir() else [given])]
    try:
        text, flat = collect(paths, args.runs)
    except KTGError as error:
        print(f"collect.py: error: {error}", file=sys.stderr)
        return 2
    print(text)
    out = args.out or args.runs
    write_text(out / "results.md", f"# Results under {args.runs}\n\n{text}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in flat)
    write_text(out / "results.csv", buffer.getvalue())
    print(f"written to {out / 'results.md'} and {out / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(quiet_when_the_reader_leaves(main))
