"""``ktg storage serve``: one process serves a study database to workers on any number of machines."""

from __future__ import annotations

import argparse
import signal
import sys

from ktg.cli.options import defaults
from ktg.errors import KTGError
from ktg.search.settings import SearchSettings, resolve_storage_url

#: Optuna's own default port for its gRPC proxy.
DEFAULT_PORT = 13000


def add_parser(commands) -> None:
    """Add ``storage`` (with ``serve``) to the ``ktg`` subcommands."""
    storage = commands.add_parser("storage", help="serve a study database to many workers (ktg storage serve --help)",
                                  description="Serve the database that holds search studies.")
    actions = storage.add_subparsers(dest="storage_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve", help="serve a study database over gRPC: ktg search --storage grpc://HOST:PORT joins it",
        description="Serve a study database (a SQLite file, or a PostgreSQL URL) over Optuna's gRPC proxy until "
        "Ctrl-C or SIGTERM. Workers on any machine join with ktg search --storage grpc://HOST:PORT, and ktg study "
        "show --storage grpc://HOST:PORT reads it, while only this process opens the database: SQLite is then safe "
        "on a shared filesystem, and PostgreSQL sees one connection pool however many workers run. The server "
        "fails the trials of workers whose heartbeats stop and queues them again. Calls are neither authenticated "
        "nor encrypted: listen only on a network you trust.")
    settings = defaults(SearchSettings)
    serve.add_argument("--storage", required=True, help="the database: a URL (sqlite:///FILE, "
                       "postgresql+psycopg2://USER:PASS@HOST/DB), a SQLite file (created if missing) or a search "
                       "folder (its study.db)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on: 0.0.0.0 for every machine that "
                       "reaches this one (default: %(default)s, this machine only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 picks a free one, "
                       "printed at the start (default: %(default)s)")
    serve.add_argument("--grace-period", type=int, default=settings["grace_period"], help="a running trial whose "
                       "worker sent no heartbeat for this long is failed and queued again; checked every quarter "
                       "of it (default: %(default)s s; the workers' own --grace-period is how long they wait for "
                       "this server when it does not answer)")
    serve.add_argument("--max-retry", type=int, default=settings["max_retry"], help="how often the trial of a dead "
                       "worker is queued again (default: %(default)s)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if args.grace_period < 4:
        raise KTGError(f"--grace-period must be at least 4 s, got {args.grace_period}")
    if not 0 <= args.port <= 65535:
        raise KTGError(f"--port must be between 0 and 65535, got {args.port}")
    url = resolve_storage_url(args.storage, new_file=True)

    from ktg.search.storage import display_url, serve_storage

    def announce(address: str) -> None:
        print(f"serving {display_url(url)} at {address}: join with ktg search --storage {address} (Ctrl-C or "
              f"SIGTERM stops the server)", flush=True)

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # a batch system's stop is a Ctrl-C
    try:
        serve_storage(url, host=args.host, port=args.port, grace_period=args.grace_period,
                      max_retry=args.max_retry, on_start=announce)
    except KeyboardInterrupt:
        print(f"ktg storage serve: stopped; the studies are kept in {display_url(url)}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
