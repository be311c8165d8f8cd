"""Where a study lives: one database that every worker joins, with heartbeats so killed workers are noticed.

The default is a SQLite file ``OUT/study.db`` opened through Optuna's ``RDBStorage``, the same code path as a
PostgreSQL URL. Only ``RDBStorage`` has heartbeats (journal files do not), and heartbeats are what turns the
trial of a killed worker from RUNNING into FAIL and queues it again, so the default storage has them too.

A ``grpc://HOST:PORT`` URL joins a study served by ``ktg storage serve`` through Optuna's gRPC proxy
(:mod:`ktg.search.proxy`).

SQLite allows one writer at a time. Several workers on one file would otherwise hit "database is locked" when
two read-then-write transactions collide, so every transaction on a SQLite file takes the write lock when it
begins (``BEGIN IMMEDIATE``) and waits up to a generous timeout for it.
"""

from __future__ import annotations

import datetime
import random
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Union

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ktg.config import differences
from ktg.errors import KTGError
from ktg.run_folder import RunFolder
from ktg.search.keys import (
    BASELINE_ATTR,
    FAILED_TRIAL_ATTR,
    GRPC_SCHEME,
    RETRY_HISTORY_ATTR,
    RETRY_OF_ATTR,
    RUN_DIR_ATTR,
    SETTINGS_ATTR,
    WORKER_ATTR,
)

#: The states of trials that trained to their end: they count towards the budget and each stores its graph.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SQLITE_LOCK_TIMEOUT_S = 120
CREATE_ATTEMPTS = 5
#: Database connections one storage keeps open to PostgreSQL, and how many more it may open at a burst. A worker
#: uses two at once (its loop, its heartbeat thread); SQLAlchemy's default (5 + 10 overflow) would let every
#: storage of a large search hold 15 (Optuna issue #1347). A ``ktg search`` command opens two storages (its own
#: and its worker's), so a database server sees at most 8 connections per command.
POOL_SIZE = 2
POOL_OVERFLOW = 2
#: How long a reader (``ktg study show``) waits for a ``ktg storage serve`` that does not answer; a search
#: worker waits its grace period instead.
SERVER_WAIT_S = 10.0


def display_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: it will fail to open with its own message
        return url


def open_storage(url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int = 2, server_wait: float = SERVER_WAIT_S,
                 pool_size: int = POOL_SIZE) -> BaseStorage:
    """Open (creating tables if needed) the study database at ``url``.

    With ``heartbeat_interval`` (seconds) every running trial records a heartbeat; a RUNNING trial silent for
    ``grace_period`` seconds is failed by the next worker that looks and queued again (at most ``max_retry``
    times per original trial; see :class:`RequeueTrial`). A ``grpc://`` URL is a study served by ``ktg storage
    serve``, whose own grace period and retries apply; every call waits up to ``server_wait`` seconds for the
    server. ``pool_size``: connections kept open to a database server (:data:`POOL_SIZE`).
    """
    if url.startswith(GRPC_SCHEME):
        return import_proxy().ServedStorage(url, wait=server_wait)
    import sqlalchemy

    is_sqlite = url.startswith("sqlite")
    engine_kwargs: dict[str, Any] = ({"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}} if is_sqlite else
                                     {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": POOL_OVERFLOW})
    if is_sqlite:
        database = sqlalchemy.engine.make_url(url).database
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise KTGError(f"cannot create the storage {display_url(url)}: {error.strerror or error}") from None
    heartbeat = {} if heartbeat_interval is None else {
        "heartbeat_interval": heartbeat_interval, "grace_period": grace_period,
        "heartbeat_stale_trial_callback": RequeueTrial(max_retry)}
    try:
        for attempt in range(CREATE_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                    sqlalchemy.exc.OperationalError) as error:
                # Workers started together on an empty database race to create Optuna's tables; the losers
                # see "duplicate key" or "already exists" (from SQLite, an OperationalError, like every other
                # SQLite error) and find the tables in place when they try again.
                other = isinstance(error, sqlalchemy.exc.OperationalError) and "already exists" not in str(error)
                if other or attempt == CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.5, 2.0))
    except ImportError as error:  # Optuna re-raises a missing database driver as a plain ImportError
        driver = error.name or sqlalchemy.engine.make_url(url).get_driver_name()
        raise KTGError(f"the storage {display_url(url)} needs the Python package {driver!r}, which is not installed; "
                       f"for PostgreSQL install ktg with the postgres extra: pip install 'ktg[postgres]'") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise KTGError(f"cannot open the storage {display_url(url)}: {reason}") from None
    if is_sqlite:
        _lock_on_begin(storage.engine)
    return storage


def import_proxy() -> ModuleType:
    """:mod:`ktg.search.proxy`, which imports gRPC: only a served study needs it, and its extra may be missing."""
    try:
        import ktg.search.proxy
    except ImportError as error:
        raise KTGError(f"a study served by ktg storage serve needs the Python package {error.name!r}, which is not "
                       f"installed: pip install 'ktg[grpc]'") from None
    return ktg.search.proxy


def serve_storage(url: str, *, host: str, port: int, grace_period: int, max_retry: int,
                  on_start: Callable[[str], None] | None = None) -> None:
    """Serve the study database at ``url`` on ``host:port`` until KeyboardInterrupt (``ktg storage serve``).

    Every ``grace_period / 4`` seconds the server fails the RUNNING trials of every study whose heartbeat is older
    than ``grace_period`` seconds and queues each again, at most ``max_retry`` times per original trial
    (:func:`fail_stale_trials`). ``on_start`` receives the address the workers use (port 0 picks a free port)
    once the server listens.
    """
    if url.startswith(GRPC_SCHEME):
        raise KTGError(f"--storage {url}: that study is served already; serve its database itself")
    proxy = import_proxy()
    check_every = max(1, grace_period // 4)

    def open_database() -> RDBStorage:
        database = open_storage(url, heartbeat_interval=check_every, grace_period=grace_period, max_retry=max_retry,
                                pool_size=proxy.SERVER_THREADS)
        assert isinstance(database, RDBStorage)
        return database

    proxy.serve(open_database, fail_stale_trials, host=host, port=port, check_every=check_every, on_start=on_start)


def _lock_on_begin(engine) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE`` (SQLAlchemy's documented pysqlite recipe)."""
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN of its own; the hook below does

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the tables were created lack the hooks


#: Settings that studies stored before ktg had them imply: such a study trained every trial with one seed,
#: drew its graphs with the random sampler, kept no trial's weights (its trials kept them all, which deleting
#: none now respects), had its first rung at epoch 1 (whatever the default of --first-rung is now) and ran no
#: baseline.
_IMPLIED_BY_OLDER_STUDIES = {"same_seed": True, "sampler": "random", "keep_weights": 0, "first_rung": 1,
                             "baselines": []}
#: The same for its space's description: it searched the papers' space, the only one there was.
_IMPLIED_BY_OLDER_SPACES = {"name": "paper"}


def open_study(storage: BaseStorage, name: str, *, sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None, settings: dict[str, Any] | None = None) -> optuna.Study:
    """Create the study ``name`` (maximising) or join it if it exists.

    ``settings`` describe what the study searches, the study's identity; the first worker stores them, every
    later worker must bring the same (fields that may differ between workers, such as the device, are left out
    by the caller: :meth:`ktg.search.settings.SearchSettings.shared`), or it is refused naming the difference.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                    direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise KTGError(f"study {name!r} minimises its objective; it was not created by ktg search")
    if settings is not None:
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is None:
            study.set_user_attr(SETTINGS_ATTR, settings)
        elif (stored := {**_IMPLIED_BY_OLDER_STUDIES, **stored,
                         "space": {**_IMPLIED_BY_OLDER_SPACES, **stored["space"]}}) != settings:
            changed = differences(stored, settings, stored_as="study has", given_as="you gave")
            # Studies whose trials trained --epochs epochs (the papers' protocol, ktg's before --trial-length) are
            # joined by asking for that length again.
            length = (". A trial trains --epochs / (1 − --holdout) epochs by default (--trial-length steps); add "
                      "--trial-length epochs to join a study whose trials train --epochs epochs"
                      if any(line.startswith("train.epochs:") for line in changed) else "")
            raise KTGError(f"study {name!r} searches with other settings ({'; '.join(changed)}); use the same options "
                           f"to join it, or another --study{length}")
    return study


def load_study(url: str, name: str | None) -> optuna.Study:
    """An existing study for reading; ``name`` may be omitted when the storage holds exactly one study."""
    storage = open_storage(url)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage=storage)]
    if name is None:
        if len(names) != 1:
            raise KTGError(f"{display_url(url)} holds {len(names)} studies"
                           f"{' (' + ', '.join(names) + ')' if names else ''}; choose one with --study NAME")
        name = names[0]
    if name not in names:
        raise KTGError(f"no study {name!r} in {display_url(url)}; it holds: {', '.join(names) or 'no studies'}")
    return optuna.load_study(study_name=name, storage=storage)


class Snapshot:
    """A study read once: its trials and user attributes at one moment of the storage.

    It answers ``get_trials`` and ``user_attrs`` as the :class:`optuna.Study` it was read from did, so every
    reader of a study (the leaderboard, the race, its verdict, the graph the study recommends) takes it instead.
    A writer that needs all of them reads the storage once instead of once for each: every worker rewrites them
    after every trial, and on a database server with thousands of trials each read is a round trip of all of
    them. They also agree with each other, as no write can fall between their reads.
    """

    def __init__(self, study: optuna.Study) -> None:
        self.study_name = study.study_name
        self.user_attrs = study.user_attrs
        self._trials = study.get_trials(deepcopy=False)

    @classmethod
    def of(cls, study: StudyReader) -> Snapshot:
        """``study`` read once, or the snapshot it already is."""
        return study if isinstance(study, Snapshot) else cls(study)

    def get_trials(self, deepcopy: bool = False, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        """The trials read (``deepcopy`` is accepted for the Study's signature; they are never copied)."""
        return [t for t in self._trials if states is None or t.state in states]


#: What a reader of a study takes: the study, or a :class:`Snapshot` of it.
StudyReader = Union[optuna.Study, Snapshot]


def queue_again(study: optuna.Study, trial: FrozenTrial, history: list[int] | None) -> None:
    """Add a WAITING trial with ``trial``'s graph (parameters); ``history`` lists the trials of its retry chain,
    the original first (None: a queued trial handed back before it ran, queued again as it was). A baseline
    stays a baseline."""
    retry = {"system_attrs": {FAILED_TRIAL_ATTR: history[0], RETRY_HISTORY_ATTR: history}} if history else {}
    user_attrs = {**({RETRY_OF_ATTR: history[0]} if history else {}),
                  **({BASELINE_ATTR: trial.user_attrs[BASELINE_ATTR]} if BASELINE_ATTR in trial.user_attrs else {})}
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=trial.params,
                                        distributions=trial.distributions, user_attrs=user_attrs, **retry))


def queue_baseline(study: optuna.Study, name: str, params: dict[str, Any],
                   distributions: dict[str, optuna.distributions.BaseDistribution]) -> None:
    """Add a WAITING trial of the baseline ``name`` whose graph is ``params`` unless the study holds one."""
    if any(t.user_attrs.get(BASELINE_ATTR) == name for t in study.get_trials(deepcopy=False)):
        return
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=params, distributions=distributions,
                                        user_attrs={BASELINE_ATTR: name}))


class RequeueTrial:
    """Queue a failed trial again as a new WAITING trial with the same graph (parameters) and the same seed.

    Used for trials whose worker stopped sending heartbeats (killed, machine lost) and for trials
    interrupted with Ctrl-C. The queued trial records the chain (:data:`~ktg.search.keys.FAILED_TRIAL_ATTR`,
    :data:`~ktg.search.keys.RETRY_HISTORY_ATTR`) as Optuna's ``RetryHeartbeatStaleTrialCallback`` does; of the
    dead run's user attributes only :data:`RETRY_OF_ATTR` is carried over: the retry continues the original's run
    folder from its last checkpoint, and its pruner hears the finished epochs again from there (see
    :class:`ktg.search.objective.Objective`). After ``max_retry`` retries of one original trial it stops
    queueing, and the trial, failed for good, has its checkpoints deleted.
    """

    def __init__(self, max_retry: int = 2) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = [*trial.system_attrs.get(RETRY_HISTORY_ATTR, []), trial.number]
        if len(history) <= self.max_retry:
            queue_again(study, trial, history)
        elif RUN_DIR_ATTR in trial.user_attrs:  # failed for good: no retry will continue its run
            RunFolder(trial.user_attrs[RUN_DIR_ATTR]).delete_checkpoints()


def fail_stale_trials(study: optuna.Study, storage: BaseStorage, study_id: int) -> None:
    """Fail (and queue again) RUNNING trials whose worker is gone.

    Optuna's check covers trials whose last heartbeat is older than the grace period. A worker killed between
    starting a trial and its first heartbeat leaves a RUNNING trial without any heartbeat, which Optuna never
    fails. Workers set :data:`WORKER_ATTR` right after the first heartbeat, so a RUNNING trial without it that
    started more than a grace period ago is such an orphan and is failed here as well.
    """
    if not isinstance(storage, RDBStorage) or storage.get_heartbeat_interval() is None:
        return  # no heartbeats, or a study behind ktg storage serve, whose server fails stale trials itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    grace = datetime.timedelta(seconds=storage.grace_period or 2 * storage.get_heartbeat_interval())
    now = datetime.datetime.now()
    callback = storage.get_heartbeat_stale_trial_callback()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if WORKER_ATTR in trial.user_attrs or trial.datetime_start is None or now - trial.datetime_start < grace:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if storage.set_trial_state_values(trial_id, TrialState.FAIL) and callback is not None:
                callback(study, storage.get_trial(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished or failed meanwhile by its worker or another one
