"""Tests marked ``cuda`` run only where PyTorch sees a CUDA GPU (CI has none: they are skipped there).
``pytest -m cuda`` selects exactly them; ``experiments/gpu_check.py`` runs them on the GPU machine.

Tests marked ``slow`` (end-to-end runs of the experiment scripts) are left out of ``make test`` and run by
``make test-slow``; CI runs both. Under ``pytest -n N`` (pytest-xdist) each worker computes on one thread, and
so do the processes its tests start: N workers share N cores instead of each spreading over all of them."""

import os

import pytest
import torch


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
