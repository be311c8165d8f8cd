"""Tests marked ``cuda`` run only where PyTorch sees a CUDA GPU (CI has none: they are skipped there).
``pytest -m cuda`` selects exactly them; ``experiments/gpu_check.py`` runs them on the GPU machine.

Tests marked ``slow`` (end-to-end runs of the experiment scripts) are left out of ``make test`` and run by
``make test-slow``; CI runs both. Under ``pytest -n N`` (pytest-xdist) each worker computes on one thread, and
so do the processes its tests start: N workers share N cores instead of each spreading over all of them."""

import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_runs import narrow

from ktg.config import TrainConfig
from ktg.data import load_dataset
from ktg.graph import dml
from ktg.train import train


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


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> tuple[Path, Path]:
    """(a 2-node DML run of three short epochs on a fifth of the digits at 16 px, a folder with the test split
    as PNG files ``<index in the split>-<class>.png``): a few seconds, once per session (per worker under -n).
    Tests that write into the run (ktg eval's report) write only what every reader may find there."""
    run, images = tmp_path_factory.mktemp("digits-run"), tmp_path_factory.mktemp("digits-test")
    data = load_dataset("digits", image_size=16)
    train(narrow(dml(2)), data, TrainConfig(epochs=3, batch_size=16, lr=0.05, holdout=0.8, device="cpu"), run,
          progress=False)
    for index, (image, label) in enumerate(zip(data.test.images, data.test.labels)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(images / f"{index:03d}-{label}.png")
    return run, images
