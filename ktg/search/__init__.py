"""Graph search (``docs/method.md#search``): Optuna draws graphs, :func:`ktg.train.train` scores them, a database
keeps every trial.

- :mod:`ktg.search.space`: the search space and the exact translation Optuna parameters ↔ graph files.
- :mod:`ktg.search.objective`: one trial = one training run, reported and pruned epoch by epoch.
- :mod:`ktg.search.storage`: the study database (SQLite file or PostgreSQL), heartbeats, retries.
- :mod:`ktg.search.pruners`, :mod:`ktg.search.sampler`: the pruners and samplers (registered by name in
  :mod:`ktg.registry`).
- :mod:`ktg.search.rescore`: the best graphs retrained with fresh seeds, the winner chosen by its mean.
- :mod:`ktg.search.worker`: the worker loop (global budget, faults), with :mod:`ktg.search.heartbeat` (a running
  trial's sign of life) and :mod:`ktg.search.signals` (Ctrl-C and SIGTERM stop cleanly).
- :mod:`ktg.search.processes`: several workers per device, each in its own process; how many by default.
- :mod:`ktg.search.display`: the lines and progress bar a running search shows.
- :mod:`ktg.search.run`: ``ktg search`` on one machine: the checks, then the workers, then the results.
- :mod:`ktg.search.results`: leaderboard, best graph and graph export, from the storage alone.

Nothing is imported here eagerly: ``ktg train`` must not pay for importing Optuna.
"""
