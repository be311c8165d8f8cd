"""Every name a study stores: the study's and its trials' attribute keys, and the URL scheme of a served study.

They are what other processes read (workers on other machines, ``ktg study show``, optuna-dashboard, the
experiment scripts), so each is spelled once, here, in a module that imports nothing: a reader that needs no
PyTorch, Optuna or gRPC can name them.
"""

from __future__ import annotations

# -- the study's user attributes ------------------------------------------------------------------------------

#: What the study searches (space, training, data); workers that join must agree with it.
SETTINGS_ATTR = "ktg.search"
#: The race last asked for, ``{"top": K, "seeds": S, "split_per_run": true, "min_gain": G, "sequential": true,
#: "reading": "growing-shares"}`` (:mod:`ktg.search.rescore`).
RESCORE_ATTR = "ktg.rescore"
#: One per race run (``<prefix><trial>/<index>``): its result, and the claim of the worker training it.
RUN_PREFIX = "ktg.rescore.run/"
CLAIM_PREFIX = "ktg.rescore.claim/"

# -- a trial's user attributes (visible in optuna-dashboard) ---------------------------------------------------

#: The graph the trial trains, why it failed, and its run folder, absolute (a retry shares its original's).
GRAPH_ATTR = "graph"
FAIL_REASON_ATTR = "fail_reason"
RUN_DIR_ATTR = "run_dir"
#: A queued retry: the number of the original trial it runs again. Optuna keeps the same number in the system
#: attribute :data:`FAILED_TRIAL_ATTR`, which a running trial cannot read; the objective derives the trial's seed
#: from it, so a retry trains with the original trial's seed.
RETRY_OF_ATTR = "retry_of"
#: A baseline trial (``ktg search --baseline``): the baseline's name. Its retries carry it too.
BASELINE_ATTR = "baseline"
#: Set by a worker right after its first heartbeat (:func:`ktg.search.storage.fail_stale_trials`).
WORKER_ATTR = "worker"
#: What a finished trial's run measured, beside its value (the ensemble's accuracy).
RESULT_ATTRS = ("epochs", "node_accuracy", "mean_node_accuracy", "best_ensemble_accuracy", "best_epoch")

# -- a trial's system attributes -------------------------------------------------------------------------------

#: A retry's chain, as Optuna's ``RetryHeartbeatStaleTrialCallback`` records it, so Optuna's helpers read it: the
#: first trial of the chain, and every trial of it.
FAILED_TRIAL_ATTR = "failed_trial"
RETRY_HISTORY_ATTR = "retry_history"
#: Through which a worker behind ``ktg storage serve`` records a heartbeat; the server records it as the trial's
#: heartbeat and stores no attribute.
HEARTBEAT_ATTR = "ktg:heartbeat"

# -- where a study lives ---------------------------------------------------------------------------------------

#: A storage URL with this scheme is a study served by ``ktg storage serve`` (:mod:`ktg.search.proxy`).
GRPC_SCHEME = "grpc://"
