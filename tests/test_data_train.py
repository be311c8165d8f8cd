"""One training epoch through ``ktg train --dataset NAME --data-root DIR`` from each dataset's own format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataset_trees import (
    write_cars_all_in_one,
    write_cars_torchvision,
    write_cifar,
    write_cub,
    write_dogs,
    write_imagefolder,
)

from ktg.cli import main

PHOTO = ["--model", "abn_resnet18", "--image-size", "64", "--batch-size", "4"]
# Two training steps each: CIFAR's five data batches hold one image per class each.
TREES = [
    pytest.param("stanford_dogs", write_dogs, PHOTO, id="dogs"),
    pytest.param("cub200", write_cub, PHOTO, id="cub"),
    pytest.param("stanford_cars", write_cars_torchvision, PHOTO, id="cars-torchvision"),
    pytest.param("stanford_cars", write_cars_all_in_one, PHOTO, id="cars-all-in-one"),
    pytest.param("imagefolder", write_imagefolder, PHOTO, id="imagefolder"),
    pytest.param("cifar10", lambda root: write_cifar(root, classes=10, per_class=1, per_class_test=1),
                 ["--model", "abn_resnet20", "--batch-size", "25"], id="cifar10"),
    pytest.param("cifar100", lambda root: write_cifar(root, classes=100, per_class=1, per_class_test=1),
                 ["--model", "abn_resnet20", "--batch-size", "50"], id="cifar100"),
]


@pytest.mark.parametrize("name, writer, options", TREES)
def test_train_one_epoch_from_the_authors_format(tmp_path: Path, name: str, writer, options: list[str]) -> None:
    root = writer(tmp_path / "data")
    out = tmp_path / "run"
    status = main(["train", "--graph", "dml", "--nodes", "2", *options, "--width", "4", "--dataset", name,
                   "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
                   "--device", "cpu", "--out", str(out), "--no-progress"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == name and metrics["epochs"] == 1


def test_a_wrong_root_is_one_line_and_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["train", "--dataset", "stanford_dogs", "--data-root", str(tmp_path), "--epochs", "1",
                   "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error
    assert f"expected {tmp_path / 'lists' / 'train_list.mat'}, which does not exist" in error
