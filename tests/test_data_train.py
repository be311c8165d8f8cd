"""One training epoch through ``ktg train --dataset NAME --data-root DIR`` from each dataset's own format: its classes,
its splits' images, and ``ktg eval`` scoring the run as the trainer did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from dataset_trees import (
    write_cars_all_in_one,
    write_cars_torchvision,
    write_cifar,
    write_cub,
    write_dogs,
    write_imagefolder,
    write_jpeg,
)

from ktg.cli import main
from ktg.data.images import ImageSet, fingerprint
from ktg.data.packed import PackedImages
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
    assert test.num_images == test_images and list(test.node_accuracy) == metrics["node_accuracy"]
    assert test.ensemble_accuracy["mean_logits"] == metrics["ensemble_accuracy"]
    assert evaluate_run(out, split="train", device="cpu", progress=False).num_images == train_images


def test_a_wrong_root_is_one_line_and_exit_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["train", "--dataset", "stanford_dogs", "--data-root", str(tmp_path), "--epochs", "1",
                   "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in error
    assert f"expected {tmp_path / 'lists' / 'train_list.mat'}, which does not exist" in error


def test_eval_and_resume_refuse_a_held_out_split_whose_images_changed(tmp_path: Path, capsys) -> None:
    root = write_imagefolder(tmp_path / "data")
    out = tmp_path / "run"
    command = ["train", "--graph", "dml", "--nodes", "2", "--model", "abn_resnet20", "--image-size", "16", "--width",
               "4", "--batch-size", "2", "--dataset", "imagefolder", "--data-root", str(root), "--cache-dir",
               str(tmp_path / "cache"), "--holdout", "0.34", "--epochs", "1", "--device", "cpu", "--out", str(out),
               "--no-progress"]
    assert main(command) == 0
    assert main(["eval", "--run", str(out), "--split", "val", "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    # One more photo of class 0 under the same root: the indices of split.json now point at other images.
    write_jpeg(root / "train" / "class_0" / "0a.jpg", 0, 9)
    for argv in (["eval", "--run", str(out), "--split", "val", "--device", "cpu", "--no-progress"],
                 [*command, "--resume"]):
        assert main(argv) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # (and the cache's line)
        assert len(errors) == 1 and errors[0].startswith("ktg: error: ") and "held-out split saved in" in errors[0]
        assert "indexes other images than imagefolder/train holds now" in errors[0]
    assert RunFolder(out).load_checkpoint().epoch == 1  # the refused resume lost nothing


def test_a_fingerprint_follows_the_images_and_labels_and_reads_few_pixels() -> None:
    pixels = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    images = ImageSet(pixels, labels, ["a", "b"], "t")
    same = fingerprint(images)
    assert fingerprint(ImageSet(pixels.clone(), labels.clone(), ["a", "b"], "other name")) == same
    assert fingerprint(ImageSet(pixels, labels.flip(0), ["a", "b"], "t")) != same
    assert fingerprint(images.subset(torch.tensor([1, 0, 2, 3, 4, 5]), "t")) != same
    assert fingerprint(ImageSet(pixels[:5], labels[:5], ["a", "b"], "t")) != same
    moved = pixels.clone()
    moved.view(6, -1)[3, 0] += 1  # the first byte of each image is among those hashed
    assert fingerprint(ImageSet(moved, labels, ["a", "b"], "t")) != same
    packed = PackedImages.pack([image.permute(1, 2, 0).numpy() for image in pixels])
    assert fingerprint(ImageSet(packed, labels, ["a", "b"], "t")) != fingerprint(ImageSet(packed, labels.flip(0),
                                                                                             ["a", "b"], "t"))
    # Photos read from files are their files: the pixels (the decoder's) do not enter.
    files = tuple(f"train/{i}.jpg" for i in range(6))
    named = fingerprint(ImageSet(packed, labels, ["a", "b"], "t", files=files))
    assert fingerprint(ImageSet(packed[torch.arange(6)], labels, ["a", "b"], "t", files=files)) == named
    assert fingerprint(ImageSet(packed, labels, ["a", "b"], "t", files=(*files[:5], "train/x.jpg"))) != named
