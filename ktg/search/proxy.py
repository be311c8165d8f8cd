"""A study served over Optuna's gRPC proxy: ``ktg storage serve`` (:func:`serve`) and its workers' client
(:class:`ServedStorage`, what a ``grpc://HOST:PORT`` storage opens).

One server process holds the database (a SQLite file, or PostgreSQL through one connection pool) and any number
of workers on any machines reach it over gRPC, so a lab without a database server can still run workers on many
machines: SQLite on a shared filesystem is unsafe when processes on several machines write it, a single server
process writing it is not.

Optuna's proxy has no heartbeat calls. A worker records its heartbeat as the trial system attribute
:data:`~ktg.search.keys.HEARTBEAT_ATTR`; the server records it as ``RDBStorage``'s heartbeat instead of storing
it, and it is the server, the one process that holds the database, that fails the trials of dead workers and
queues them again, by the same rule as a worker on a database (:func:`ktg.search.storage.fail_stale_trials`,
which the caller passes), with its own grace period and retries.

Every call of the client waits for a server that does not answer (restarting, unreachable) and retries for a
stated time, then raises :class:`~ktg.errors.KTGError`; from then on every call fails at once, so a worker stops
with what the server has recorded instead of waiting again at every step of its way out.
"""

from __future__ import annotations

import collections
import socket
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import grpc
import optuna
from optuna.storages import GrpcStorageProxy, RDBStorage

# Optuna's proxy offers no public hook for a channel's options, the server's storage or its bound port; these are
# the pieces its own GrpcStorageProxy._setup and make_server put together (tests/test_storage_server.py runs them).
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._grpc.auto_generated import api_pb2_grpc
from optuna.storages._grpc.client import GrpcClientCache
from optuna.storages._grpc.servicer import OptunaStorageProxyService

from ktg.errors import KTGError
from ktg.search.keys import GRPC_SCHEME, HEARTBEAT_ATTR

#: How the server fails the trials of dead workers in one study (:func:`ktg.search.storage.fail_stale_trials`):
#: given the study, the database and the study's id. The caller passes it, so that this module, below the
#: storage module that opens it, imports nothing of it.
StaleTrialCheck = Callable[[optuna.Study, RDBStorage, int], None]
#: Threads of the server answering calls, and so its connections to the database (one pool, however many workers).
SERVER_THREADS = 8
#: The longest pause between the client's attempts to reconnect to a server that went away (gRPC's default grows
#: to 120 s, which would leave a worker idle long after its server is back).
RECONNECT_MAX_MS = 2000


def parse_grpc_url(url: str) -> tuple[str, int]:
    """(host, port) of a ``grpc://HOST:PORT`` URL; KTGError if it is not one."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not url.startswith(GRPC_SCHEME) or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise KTGError(f"--storage {url!r}: a study served by ktg storage serve is reached as grpc://HOST:PORT")
    return parts.hostname, port


_CallDetails = collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials",
                                                       "wait_for_ready", "compression"))


class _Patience(grpc.UnaryUnaryClientInterceptor):
    """Make every call wait up to ``wait`` seconds for the server, retrying while it is unavailable; then raise
    KTGError, and at once for every later call."""

    def __init__(self, url: str, wait: float) -> None:
        self.url, self.wait = url, wait
        self.answered = False
        self.gone: str | None = None

    def intercept_unary_unary(self, continuation, details, request):
        if self.gone is not None:
            raise KTGError(self.gone)
        deadline = time.monotonic() + self.wait
        while True:
            remaining = max(deadline - time.monotonic(), 0.001)
            outcome = continuation(_CallDetails(details.method, remaining, details.metadata, details.credentials,
                                                True, details.compression), request)
            code = outcome.code()
            if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline - 1:
                time.sleep(1)  # it answered "unavailable" (going down, or a connection cut mid-call): try again
                continue
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self.gone = self._gone_message(outcome.details())
                raise KTGError(self.gone)
            if code == grpc.StatusCode.UNKNOWN:  # the server raised: its own log has the traceback
                raise KTGError(f"the storage server {self.url} failed a request: {outcome.details()}")
            self.answered = self.answered or code == grpc.StatusCode.OK
            return outcome

    def _gone_message(self, details: str | None) -> str:
        why = f" ({details})" if details else ""
        if not self.answered:
            return (f"the storage server {self.url} did not answer within {self.wait:g} s{why}; is ktg storage "
                    f"serve running there, and can this machine reach the port?")
        return (f"the storage server {self.url} stopped answering and did not come back within {self.wait:g} s"
                f"{why}; what it recorded is kept in its database: start ktg storage serve again and rerun "
                f"this command to resume")


class ServedStorage(GrpcStorageProxy):
    """The storage of a study served by ``ktg storage serve`` at ``url`` (``grpc://HOST:PORT``).

    Optuna's :class:`~optuna.storages.GrpcStorageProxy`, whose calls wait up to ``wait`` seconds for the server
    (then raise KTGError), and which records heartbeats through the server
    (:data:`~ktg.search.keys.HEARTBEAT_ATTR`).
    """

    def __init__(self, url: str, *, wait: float) -> None:
        host, port = parse_grpc_url(url)
        self.url = url
        self._patience = _Patience(url, wait)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(host=host, port=port)

    def _setup(self) -> None:
        # GrpcStorageProxy._setup, on a channel that reconnects promptly and whose calls are patient.
        channel = grpc.insecure_channel(f"{self._host}:{self._port}", options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
            ("grpc.initial_reconnect_backoff_ms", min(1000, RECONNECT_MAX_MS))])
        self._channel = grpc.intercept_channel(channel, self._patience)
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)

    def record_heartbeat(self, trial_id: int) -> None:
        """Record that trial ``trial_id`` is alive (the server keeps it as the trial's heartbeat)."""
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, True)


class _HeartbeatRelay(_CachedStorage):
    """The server's storage: Optuna's cached RDB storage (what its proxy server is meant to serve), recording a
    worker's :data:`~ktg.search.keys.HEARTBEAT_ATTR` as the trial's heartbeat."""

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_ATTR:
            self.record_heartbeat(trial_id)
        else:
            super().set_trial_system_attr(trial_id, key, value)


def serve(open_database: Callable[[], RDBStorage], fail_stale: StaleTrialCheck, *, host: str, port: int,
          check_every: int, on_start: Callable[[str], None] | None = None) -> None:
    """Serve the studies of the database ``open_database`` opens on ``host:port`` until KeyboardInterrupt.

    The port is bound before the database is opened (or created): a server that cannot listen leaves no database
    behind. Every ``check_every`` seconds the server applies ``fail_stale`` to every study: the trials of dead
    workers are failed and queued again. ``on_start`` receives the address the workers use (port 0 picks a free
    port) once the server listens.
    """
    # Without SO_REUSEPORT (gRPC's default on Linux) a second server on the same port would share it silently.
    server = grpc.server(ThreadPoolExecutor(SERVER_THREADS, thread_name_prefix="ktg-serve"),
                         options=[("grpc.so_reuseport", 0)])
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpc could not bind the address; its message adds nothing
        bound = 0
    if not bound:
        raise KTGError(f"cannot serve on {host}:{port}: the port is taken, or the host is not this machine's; "
                       f"choose another --port or --host")
    try:
        database = open_database()
    except BaseException:
        server.stop(None)  # give the port back
        raise
    storage = _HeartbeatRelay(database)
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
    server.start()
    try:
        if on_start is not None:
            on_start(f"{GRPC_SCHEME}{_reachable_host(host)}:{bound}")
        while True:
            time.sleep(check_every)
            _fail_stale_trials(storage, database, fail_stale)
    finally:
        server.stop(grace=5).wait()
        database.engine.dispose()


def _fail_stale_trials(storage: _HeartbeatRelay, database: RDBStorage, fail_stale: StaleTrialCheck) -> None:
    """``fail_stale`` on every study; a failed check is reported and tried again."""
    try:
        for study in storage.get_all_studies():
            fail_stale(optuna.load_study(study_name=study.study_name, storage=storage), database, study._study_id)
    except Exception as error:  # the database may be briefly unreachable; the server keeps serving
        print(f"ktg storage serve: warning: stale trials not checked ({error}); trying again", file=sys.stderr)


def _reachable_host(host: str) -> str:
    """The host name that workers on other machines use when the server listens on every address."""
    return socket.gethostname() if host in ("0.0.0.0", "::", "[::]", "") else host

