"""``ktg study show`` and ``ktg study fidelity``: what a search found, and how well its early epochs predicted it,
read from its storage alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from ktg.errors import KTGError
from ktg.search.settings import resolve_storage_url


def add_parser(commands) -> None:
    """Add ``study`` (with ``show`` and ``fidelity``) to the ``ktg`` subcommands."""
    study = commands.add_parser("study", help="what a search found (ktg study show --help, ktg study fidelity "
                                "--help)",
                                description="Read a search's study from its storage.")
    actions = study.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", help="summary table of a study; export any trial's graph",
        description="Print a study's trials, best first, from its storage alone (any machine that reaches the "
        "database), and export the graph of any trial as a graph file for ktg train --graph.")
    show.add_argument("--storage", required=True, help="database URL, a study.db file, or a search folder")
    show.add_argument("--study", help="study name (default: the only study in the storage)")
    show.add_argument("--top", type=int, default=20, help="rows to print (default: 20; 0 for all)")
    show.add_argument("--export", nargs=2, metavar=("TRIAL", "FILE"), help="write the graph of trial number TRIAL "
                      "(or 'best') to FILE")
    show.add_argument("--csv", type=Path, help="also write the full leaderboard to this CSV file")
    show.set_defaults(handler=run_show)
    fidelity = actions.add_parser(
        "fidelity", help="how well each epoch's ranking of trials predicts the final ranking",
        description="For each epoch at which a study's trials reported their held-out accuracy, how well the "
        "ranking of the complete trials at that epoch predicts their final ranking: Spearman's rho, and how many of "
        "the final top k (k = max(1, n // 4)) were in the top k at that epoch. Pruned trials have no final value "
        "and are left out, running ones skipped. A search with --pruner none evaluates every trial after every "
        "epoch: it measures where a pruner's rungs can decide (ktg search --first-rung).")
    fidelity.add_argument("--storage", required=True, help="database URL, a study.db file, or a search folder")
    fidelity.add_argument("--study", help="study name (default: the only study in the storage)")
    fidelity.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    fidelity.set_defaults(handler=run_fidelity)


def run_show(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise KTGError(f"--top must be 0 (all) or more, got {args.top}")
    url = resolve_storage_url(args.storage)

    from ktg.search.keys import SETTINGS_ATTR
    from ktg.search.rescore import chosen, judge, standings
    from ktg.search.results import export_graph, format_table, leaderboard, state_counts, write_leaderboard
    from ktg.search.storage import Snapshot, display_url, load_study  # after the checks that need no framework

    study = Snapshot(load_study(url, args.study))  # read once: every line below is of the same moment
    counts = state_counts(study)
    settings = study.user_attrs.get(SETTINGS_ATTR, {})
    described = ""
    if settings:
        data, train = settings.get("data", {}), settings.get("train", {})
        described = (f", {settings['space']['num_nodes']} nodes ({settings['space'].get('name', 'paper')} space) on "
                     f"{data.get('name')}, {train.get('epochs')} epochs, holdout {train.get('holdout')}, "
                     f"{settings.get('sampler', 'random')} sampler")
    print(f"study {study.study_name!r} in {display_url(url)}{described}")
    print("trials: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
    rows = leaderboard(study)
    best = chosen(study)
    race = standings(study)
    found = judge(race)
    if best is not None:
        how = "race over common fresh seeds" if found is not None else best[1]
        print(f"best: trial {best[0].number}, ensemble {100 * best[0].value:.2f} % in the search, chosen by the {how}")
    if race is not None:
        print(race.describe())
    if found is not None:
        print("verdict, in the search's own regime:\n" + "\n".join(f"  {line}" for line in found.lines()))
    print(format_table(rows, top=args.top or None))
    if args.csv is not None:
        write_leaderboard(rows, args.csv)
        print(f"leaderboard written to {args.csv}")
    if args.export is not None:
        trial, path = args.export
        spec = export_graph(study, trial, path)
        print(f"{spec.name}'s graph written to {path}; retrain it with: ktg train --graph {path} --dataset NAME")
    return 0


def run_fidelity(args: argparse.Namespace) -> int:
    url = resolve_storage_url(args.storage)

    from ktg.search.fidelity import fidelity, format_report, write_csv
    from ktg.search.keys import SETTINGS_ATTR
    from ktg.search.storage import display_url, load_study  # after the checks that need no framework

    study = load_study(url, args.study)
    result = fidelity(study.get_trials(deepcopy=False))
    if not result.complete:
        raise KTGError(f"study {study.study_name!r} has no complete trial yet: each epoch's ranking is compared with "
                       f"the final one, a complete trial's")
    settings = study.user_attrs.get(SETTINGS_ATTR, {})
    pruner = f", {settings['pruner']} pruner" if "pruner" in settings else ""
    rung = f", first rung {settings['first_rung']}" if "first_rung" in settings else ""
    print(f"study {study.study_name!r} in {display_url(url)}{pruner}{rung}: {result.complete} complete trials, "
          f"final = held-out accuracy at the last epoch")
    print(format_report(result))
    if args.csv is not None:
        write_csv(result, args.csv)
        print(f"rows written to {args.csv}")
    return 0
