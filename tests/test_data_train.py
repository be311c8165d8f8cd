"""One training epoch through ``ktg train --dataset NAME --data-root DIR`` from each dataset's own format: its classes,
its splits' images, and ``ktg eval`` scoring the run as the trainer did."""

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
from ktg.evaluate import evaluate_run
from ktg.run_folder import RunFolder

PHOTO = ["--model", "abn_resnet18", "--image-size", "64", "--batch-size", "4"]
CIFAR = ["--model", "abn_resnet20"]
# (dataset, tree writer, options, class names as the format spells them, train images, test images). The photo
# trees hold 3 classes of 3 train and 2 test images; CIFAR's five data batches hold one image per class each.
# Two training steps each.
TREES = [
    pytest.param("stanford_dogs", write_dogs, PHOTO, [f"Breed_{c}" for c in range(3)], 9, 6, id="dogs"),
    pytest.param("cub200", write_cub, PHOTO, [f"Bird_{c}" for c in range(3)], 9, 6, id="cub"),
    pytest.param("stanford_cars", write_cars_torchvision, PHOTO, [f"Maker Model {c} 2012" for c in range(3)], 9, 6,
                 id="cars-torchvision"),
    pytest.param("stanford_cars", write_cars_all_in_one, PHOTO, [f"Maker Model {c} 2012" for c in range(3)], 9, 6,
                 id="cars-all-in-one"),
    pytest.param("imagefolder", write_imagefolder, PHOTO, [f"class_{c}" for c in range(3)], 9, 6, id="imagefolder"),
    pytest.param("cifar10", lambda root: write_cifar(root, classes=10, per_class=1, per_class_test=1),
                 [*CIFAR, "--batch-size", "25"], [f"thing_{c}" for c in range(10)], 50, 10, id="cifar10"),
    pytest.param("cifar100", lambda root: write_cifar(root, classes=100, per_class=1, per_class_test=1),
                 [*CIFAR, "--batch-size", "50"], [f"thing_{c}" for c in range(100)], 100, 100, id="cifar100"),
]


@pytest.mark.parametrize("name, writer, options, classes, train_images, test_images", TREES)
def test_train_one_epoch_from_the_authors_format(tmp_path: Path, name: str, writer, options: list[str],
                                                 classes: list[str], train_images: int, test_images: int) -> None:
    root = writer(tmp_path / "data")
    out = tmp_path / "run"
    status = main(["train", "--graph", "dml", "--nodes", "2", *options, "--width", "4", "--dataset", name,
                   "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1",
                   "--device", "cpu", "--out", str(out), "--no-progress"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == name and metrics["epochs"] == 1
    assert list(RunFolder(out).read_config().classes) == classes
    # The run reads its data again from what it recorded: the same images, scored as the trainer scored them.
    test = evaluate_run(out, split="test", device="cpu", progress=False)
    assert test["num_images"] == test_images and test["node_accuracy"] == metrics["node_accuracy"]
    assert test["ensemble_accuracy"]["mean_logits"] == metrics["ensemble_accuracy"]
    assert evaluate_run(out, split="train", device="cpu", progress=False)["num_images"] == train_images


def test_a_wrong_root_is_one_line_and_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["train", "--dataset", "stanford_dogs", "--data-root", str(tmp_path), "--epochs", "1",
                   "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error
    assert f"expected {tmp_path / 'lists' / 'train_list.mat'}, which does not exist" in error
