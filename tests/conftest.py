"""Tests marked ``cuda`` run only where PyTorch sees a CUDA GPU (CI has none: they are skipped there).
``pytest -m cuda`` selects exactly them; ``experiments/gpu_check.py`` runs them on the GPU machine."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
