"""One training epoch through ``ktg train --dataset NAME --data-root DIR`` from each dataset's own format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset_trees import write_cars_all_in_one, write_cars_torchvision, write_cifar, write_cub, write_dogs, write_imagefolder
from ktg.cli import main

TREES = [
    ("stanford_dogs", write_dogs, ["--model", "abn_resnet18", "--image-size", "64"]),
    ("cub200", write_cub, ["--model", "abn_resnet18", "--image-size", "64"]),
    ("stanford_cars", write_cars_torchvision, ["--model", "abn_resnet18", "--image-size", "64"]),
    ("stanford_cars", write_cars_all_in_one, ["--model", "abn_resnet18", "--image-size", "64"]),
    ("imagefolder", write_imagefolder, ["--model", "abn_resnet18", "--image-size", "64"]),
    ("cifar10", lambda root: write_cifar(root, classes=10, per_class=1, per_class_test=1), ["--model", "abn_resnet20"]),
    ("cifar100", lambda root: write_cifar(root, classes=100, per_class=1, per_class_test=1), ["--model", "abn_resnet20"]),
]


@pytest.mark.parametrize("name, writer, model", TREES, ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(TREES)])
def test_train_one_epoch_from_the_authors_format(tmp_path: Path, name: str, writer, model: list[str]) -> None:
    root = writer(tmp_path / "data")
    out = tmp_path / "run"
    status = main(["train", "--graph", "dml", "--nodes", "2", *model, "--width", "4", "--dataset", name,
                   "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
                   "--batch-size", "4", "--device", "cpu", "--out", str(out), "--no-progress"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == name and metrics["epochs"] == 1


def test_a_wrong_root_is_one_line_and_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["train", "--dataset", "stanford_dogs", "--data-root", str(tmp_path), "--epochs", "1",
                   "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error and f"expected the file {tmp_path / 'lists' / 'train_list.mat'}" in error
