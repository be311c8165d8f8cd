#!/usr/bin/env python
"""What bf16 autocast changes: the same ``ktg train`` run in fp32 and under bf16 autocast, seed by seed.

    python experiments/precision.py --seeds 0 1 2 --out runs/precision -- \
        --dataset digits --graph dml --epochs 3 --device cpu

Everything after ``--`` is passed to every ``ktg train`` (a recipe, say: ``--recipe paper``); this script adds
``--seed S``, ``--amp`` or ``--no-amp`` and ``--out OUT/<fp32|bf16>-seed<S>``. Both precisions of a seed start
from the same initial weights, batch order and augmentation, so their difference is paired: the table shows each
seed's ensemble and mean-node accuracy (last epoch, the evaluated split) in both precisions, the bf16 − fp32
difference, and the training seconds per epoch; the last line the mean difference ± its sample standard deviation
over seeds. A run that finished already (``metrics.json``) is read, not trained again.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Sequence

from ktg.cli import main as ktg_main
from ktg.run_folder import RunFolder

PRECISIONS = {"fp32": "--no-amp", "bf16": "--amp"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train the same runs in fp32 and bf16 autocast and compare them "
                                     "seed by seed. Options after -- go to every ktg train.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("runs/precision"),
                        help="folder of the runs (default: %(default)s)")
    return parser


def train_both(seed: int, out: Path, train_args: list[str]) -> dict[str, RunFolder]:
    """The fp32 and the bf16 run of ``seed`` (trained unless finished already)."""
    runs = {}
    for name, flag in PRECISIONS.items():
        run = RunFolder(out / f"{name}-seed{seed}")
        if not run.is_finished():
            status = ktg_main(["train", *train_args, "--seed", str(seed), flag, "--out", str(run.path),
                               "--no-progress", *(["--restart"] if run.holds_run() else [])])
            if status != 0:
                raise SystemExit(f"precision.py: ktg train failed for {name}, seed {seed} (exit status {status})")
        runs[name] = run
    return runs


def seconds_per_epoch(run: RunFolder) -> float:
    return statistics.fmean(record.train_seconds for record in run.read_epochs())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = get_args_parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    rows, differences = [], []
    for seed in args.seeds:
        runs = train_both(seed, args.out, train_args)
        metrics = {name: run.read_metrics() for name, run in runs.items()}
        ensemble = {name: 100 * m.ensemble_accuracy for name, m in metrics.items()}
        node = {name: 100 * m.mean_node_accuracy for name, m in metrics.items()}
        differences.append(ensemble["bf16"] - ensemble["fp32"])
        rows.append(f"| {seed} | {ensemble['fp32']:.2f} | {ensemble['bf16']:.2f} | {differences[-1]:+.2f} | "
                    f"{node['fp32']:.2f} | {node['bf16']:.2f} | {seconds_per_epoch(runs['fp32']):.1f} | "
                    f"{seconds_per_epoch(runs['bf16']):.1f} |")
    print(f"ktg train {' '.join(train_args)}, fp32 (--no-amp) vs bf16 autocast (--amp), runs in {args.out}\n")
    print("| seed | ensemble % fp32 | ensemble % bf16 | bf16 − fp32 | mean node % fp32 | mean node % bf16 "
          "| s/epoch fp32 | s/epoch bf16 |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    spread = f" ± {statistics.stdev(differences):.2f}" if len(differences) > 1 else ""
    print(f"\nbf16 − fp32, ensemble accuracy: {statistics.fmean(differences):+.2f}{spread} points "
          f"(mean ± sample std over {len(differences)} seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
