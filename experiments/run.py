#!/usr/bin/env python
"""Run one experiment config: print every ``ktg`` command it stands for, then run them one after the other.

    python experiments/run.py experiments/configs/dogs_baselines.json            # the whole protocol
    python experiments/run.py experiments/configs/dogs_search.json --set device=cuda:1
    python experiments/run.py CONFIG --seeds 0 --set nodes=4                      # part of it
    python experiments/run.py CONFIG --list                                       # print, run nothing
    python experiments/run.py CONFIG --dry-run                                    # tiny budget, synthetic data

Running a config again continues it: finished runs are skipped, interrupted ones
resume from their checkpoint, and a search joins its study (see ``ktg search --help``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocols import Job, check_argv, dry_run_job, expand, load_config  # noqa: E402

from ktg.cli import quiet_when_the_reader_leaves  # noqa: E402
from ktg.cli.options import key_value  # noqa: E402
from ktg.errors import KTGError  # noqa: E402
from ktg.run_folder import RunFolder  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Run the ktg commands of an experiment config (experiments/configs).")
    parser.add_argument("config", type=Path, help="a config file, e.g. experiments/configs/dogs_search.json")
    parser.add_argument("--runs", type=Path, help="folder that {runs} stands for in the config's paths "
                        "(default: runs/experiments; a new temporary folder with --dry-run)")
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="folder that {data} stands for: where the datasets are unpacked (default: data)")
    parser.add_argument("--seeds", type=int, nargs="+", help="run these seeds instead of the config's")
    parser.add_argument("--set", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="replace a ktg option of every command, e.g. device=cuda:1 or nodes=4 (repeatable; "
                        "VALUE is JSON when it parses as JSON)")
    parser.add_argument("--dry-run", action="store_true", help="a tiny budget on synthetic data (1 epoch, 1 trial, "
                        "narrow nodes, CPU) so the config can be tried anywhere; runs its first variant and seed")
    parser.add_argument("--all", action="store_true", help="with --dry-run: every variant, not only the first")
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    return parser


def shell_command(job: Job) -> str:
    return "ktg " + " ".join(shlex.quote(part) for part in job.argv())


def run_job(job: Job) -> int:
    """Run one job in this process; skip it if it finished as ktg would train it now, resume it if it was
    interrupted. A finished run trained otherwise (another graph, or options changed since, e.g. by --set) is
    an error: it is kept, and the config's results would mix two protocols."""
    from ktg.cli import main as ktg_main
    from ktg.cli import plan
    from ktg.runtime import resolve_device

    if job.config.command == "train":
        run = RunFolder(job.out)
        if run.is_finished():
            planned = plan(job.argv())
            if not planned.trained_in(run, resolve_device(planned.config.device).type):
                print(f"run.py: error: {job.out} holds a finished run trained otherwise than this command would "
                      "train (another graph, or other options); move it away or choose another --runs",
                      file=sys.stderr)
                return 2
            print(f"  finished already: {job.out}")
            return 0
        if run.holds_run():
            job = Job(job.config, job.variant, job.seed, {**job.args, "resume": True}, job.out, job.notes)
    return ktg_main(job.argv())


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        runs = args.runs or (
            Path(tempfile.mkdtemp(prefix="ktg-dry-run-")) if args.dry_run else Path("runs/experiments"))
        jobs = expand(config, runs, data=args.data, overrides=dict(args.set), seeds=args.seeds)
        for job in jobs:  # --set may have made a command line ktg rejects: say so before anything runs
            check_argv(job)
    except KTGError as error:
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        jobs = [dry_run_job(job) for job in jobs if job.seed == jobs[0].seed]
        jobs = jobs if args.all else jobs[:1]
    print(f"{config.title}\n{config.path}: {len(jobs)} command(s), runs under {runs}"
          + (" (dry run)" if args.dry_run else ""))
    if config.notes:
        print(f"note: {config.notes}")
    for number, job in enumerate(jobs, 1):
        print(f"\n[{number}/{len(jobs)}] {job.variant_name} seed {job.seed}")
        for note in job.notes:
            print(f"  note: {note}")
        print(f"  {shell_command(job)}", flush=True)
        if args.list:
            continue
        status = run_job(job)
        if status != 0:
            print(f"run.py: command {number} failed (exit status {status}); fix it and run the config again — "
                  "finished runs are kept", file=sys.stderr)
            return status
    return 0


if __name__ == "__main__":
    sys.exit(quiet_when_the_reader_leaves(main))
