"""Each dataset read from a tiny tree in its authors' exact format; wrong roots and bad data give clear errors."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from dataset_trees import (
    dog_folder,
    write_cars_all_in_one,
    write_cars_torchvision,
    write_cifar,
    write_cub,
    write_dogs,
    write_dogs_list,
    write_imagefolder,
    write_jpeg,
)

from ktg.data import load_dataset
from ktg.errors import KTGError


def load(name: str, root: Path | None, tmp_path: Path, image_size: int | None = 32, **options):
    return load_dataset(name, root, image_size, cache_dir=tmp_path / "cache", **options)


PHOTO_TREES = [
    ("stanford_dogs", write_dogs, [f"Breed_{label}" for label in range(3)]),
    ("cub200", write_cub, [f"Bird_{label}" for label in range(3)]),
    ("stanford_cars", write_cars_torchvision, [f"Maker Model {label} 2012" for label in range(3)]),
    ("stanford_cars", write_cars_all_in_one, [f"Maker Model {label} 2012" for label in range(3)]),
    ("imagefolder", write_imagefolder, [f"class_{label}" for label in range(3)]),
]


@pytest.mark.parametrize("name, writer, classes", PHOTO_TREES, ids=[w.__name__ for _, w, _ in PHOTO_TREES])
def test_photo_datasets_read_classes_counts_and_sizes(tmp_path: Path, name: str, writer, classes: list[str]) -> None:
    root = writer(tmp_path / "data", num_classes=3, per_class=3, per_class_test=2)
    dataset = load(name, root, tmp_path, image_size=32)
    assert dataset.train.classes == dataset.test.classes == classes
    assert (len(dataset.train), len(dataset.test)) == (9, 6)
    assert dataset.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert dataset.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # write_jpeg makes image i of class c (40 + 7·(i mod 5)) × (48 + 11·((i + c) mod 4)) pixels.
    assert dataset.train.original_sizes[3].tolist() == [40, 48 + 11]
    assert dataset.test.original_sizes[0].tolist() == [40 + 7 * 3, 48 + 11 * 3]
    # At 32-pixel inputs photos are kept up to 129 (ratio (1, 1.3)) or 131 pixels on the shorter side: as they are.
    assert dataset.info["cache_size"] == (131 if name == "imagefolder" else 129)
    assert torch.equal(dataset.train.images.sizes, dataset.train.original_sizes)
    evaluated = dataset.eval_transform(dataset.test.images, original_sizes=dataset.test.original_sizes)
    assert evaluated.shape == (6, 3, 32, 32)
    # The first class is reddish-dark (R = 0): the cache kept the colours and the channel order.
    first = dataset.train.images.image(0).float()
    assert first[0].mean() < 40 and first[2].mean() > 120


@pytest.mark.parametrize("where", ["parent", "itself"])
def test_roots_may_be_the_dataset_folder_or_its_parent(tmp_path: Path, where: str) -> None:
    for name, writer, folder in [("cub200", write_cub, "CUB_200_2011"),
                                 ("stanford_cars", write_cars_torchvision, "stanford_cars")]:
        root = writer(tmp_path / name)
        assert len(load(name, root if where == "parent" else root / folder, tmp_path).train) == 9
    dogs = write_dogs(tmp_path / "dogs" / "stanford_dogs")
    for lst in ("train_list.mat", "test_list.mat"):  # lists.tar unpacks the lists next to Images/
        shutil.move(dogs / "lists" / lst, dogs / lst)
    assert len(load("stanford_dogs", dogs.parent if where == "parent" else dogs, tmp_path).train) == 9


def test_cifar_pickles(tmp_path: Path) -> None:
    cifar10 = load_dataset("cifar10", write_cifar(tmp_path / "c10", classes=10, per_class=4, per_class_test=2))
    assert cifar10.train.classes[:2] == ["thing_0", "thing_1"] and len(cifar10.train.classes) == 10
    assert (len(cifar10.train), len(cifar10.test)) == (10 * 4 * 5, 10 * 2)  # five data batches
    assert cifar10.train.images.shape[1:] == (3, 32, 32) and cifar10.train.original_sizes is None
    c100 = write_cifar(tmp_path / "c100", classes=100, per_class=2, per_class_test=1)
    cifar100 = load_dataset("cifar100", c100 / "cifar-100-python")
    assert len(cifar100.train.classes) == 100 and (len(cifar100.train), len(cifar100.test)) == (200, 100)
    assert torch.bincount(cifar100.train.labels).tolist() == [2] * 100
    with pytest.raises(KTGError, match="32×32"):
        load_dataset("cifar10", tmp_path / "c10", image_size=64)


def test_cifar_label_out_of_range(tmp_path: Path) -> None:
    root = write_cifar(tmp_path, classes=10)
    path = root / "cifar-10-batches-py" / "data_batch_3"
    batch = pickle.loads(path.read_bytes(), encoding="latin1")
    batch["labels"][5] = 10
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(KTGError, match=r"data_batch_3 gives label 10 to entry 5, outside 0\.\.9"):
        load_dataset("cifar10", root)


class RunsCode:
    """Unpickles by running a shell command, as a malicious batch file could."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    root = write_cifar(tmp_path, classes=10, per_class=1, per_class_test=1)
    path, marker = root / "cifar-10-batches-py" / "data_batch_2", tmp_path / "marker"
    path.write_bytes(pickle.dumps({"labels": [0], "data": RunsCode(f"touch {marker}")}))
    with pytest.raises(KTGError) as error:
        load_dataset("cifar10", root)
    assert str(error.value) == (f"cifar10: cannot read {path}: it names posix.system, which a CIFAR batch never "
                                "holds; unpickling it could run code, so it was not loaded")
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the file does run code when unpickled plainly
    assert marker.exists()


def test_cifar_batches_rewritten_by_python_3_load(tmp_path: Path) -> None:
    root = write_cifar(tmp_path, classes=10, per_class=1, per_class_test=1)
    original = load_dataset("cifar10", root).train
    for path in (root / "cifar-10-batches-py").iterdir():  # numpy 2 names numpy._core; strings become unicode
        path.write_bytes(pickle.dumps(pickle.loads(path.read_bytes(), encoding="latin1")))
    rewritten = load_dataset("cifar10", root).train
    assert torch.equal(rewritten.images, original.images) and torch.equal(rewritten.labels, original.labels)


WRONG_ROOT = [
    ("stanford_dogs", "lists/train_list.mat", "Images/<wnid>-<breed>"),
    ("cub200", "CUB_200_2011/images.txt", "image_class_labels.txt"),
    ("stanford_cars", "stanford_cars/devkit/cars_meta.mat", "car_ims/*.jpg, cars_annos.mat"),
    ("cifar10", "cifar-10-batches-py/batches.meta", "data_batch_1"),
    ("cifar100", "cifar-100-python/meta", "train"),
    ("imagefolder", "train", "<root>/train/<class>/<image>"),
]


@pytest.mark.parametrize("name, expected, layout", WRONG_ROOT, ids=[w[0] for w in WRONG_ROOT])
def test_wrong_root_names_the_expected_file_and_layout(tmp_path: Path, name: str, expected: str, layout: str) -> None:
    (tmp_path / "something_else").mkdir()
    with pytest.raises(KTGError) as error:
        load_dataset(name, tmp_path)
    message = str(error.value)
    assert str(tmp_path / expected) in message and layout in message and "\n" not in message
    with pytest.raises(KTGError, match="give --data-root"):
        load_dataset(name, None)


def test_unknown_option_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KTGError, match="has no option 'colour'; its options are: cache_dir, cache_size, normalize"):
        load_dataset("cub200", tmp_path, colour=1)


def test_corrupt_image_names_the_file_and_leaves_no_cache(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "data")
    victim = sorted((root / "CUB_200_2011" / "images").glob("002.*/*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG
    with pytest.raises(KTGError, match=rf"cub200: cannot decode {victim} \(train split"):
        load("cub200", root, tmp_path)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.suffix in (".npy", ".json", ".tmp")]


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    root = write_cars_torchvision(tmp_path / "data")
    (root / "stanford_cars" / "cars_test" / "00004.jpg").unlink()
    with pytest.raises(KTGError, match=r"stanford_cars: 1 image\(s\) listed in .*cars_test_annos_withlabels.mat are "
                                       r"missing .* e\.g\. .*cars_test/00004\.jpg"):
        load("stanford_cars", root, tmp_path)


def test_dogs_labels_out_of_range_and_lists_that_disagree(tmp_path: Path) -> None:
    root = write_dogs(tmp_path / "data")
    entries = [(f"{dog_folder(c)}/{dog_folder(c).split('-')[0]}_{i}.jpg", c + 1) for c in range(3) for i in range(3)]
    for bad_label, pattern in [(0, r"gives label 0 to .*_0\.jpg, outside 1\.\.3"), (4, "gives label 4 to"),
                               (2, r"label 1 to n02000000-Breed_0/n02000000_1.jpg, "
                                   r"but other images of 'n02000000-Breed_0' have label 2")]:
        write_dogs_list(root / "lists" / "train_list.mat", [(entries[0][0], bad_label)] + entries[1:])
        with pytest.raises(KTGError, match=pattern):
            load("stanford_dogs", root, tmp_path)
    write_dogs_list(root / "lists" / "train_list.mat", entries[:6])  # no training image of the third breed
    with pytest.raises(KTGError, match="class 'Breed_2' has no images in .*train_list.mat"):
        load("stanford_dogs", root, tmp_path)
    scipy.io.savemat(root / "lists" / "train_list.mat", {"file_list": np.array([[1.0]])})
    with pytest.raises(KTGError, match="has no variable 'labels'"):
        load("stanford_dogs", root, tmp_path)


def test_cub_lists_that_disagree(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "data")
    folder = root / "CUB_200_2011"
    labels = (folder / "image_class_labels.txt").read_text()
    (folder / "image_class_labels.txt").write_text(labels.replace("\n6 2\n", "\n6 7\n"))
    with pytest.raises(KTGError,
                       match=r"image_class_labels.txt gives label 7 to 002\.Bird_1/Bird_1_0000_6\.jpg, outside 1\.\.3"):
        load("cub200", root, tmp_path)
    (folder / "image_class_labels.txt").write_text(labels.replace("\n6 2\n", "\n"))
    with pytest.raises(KTGError, match=r"image_class_labels.txt and .*images.txt list different image ids "
                                       r"\(1 differ, e.g. id 6\)"):
        load("cub200", root, tmp_path)
    (folder / "image_class_labels.txt").write_text(labels)
    (folder / "classes.txt").write_text((folder / "classes.txt").read_text() + "4 004.Bird_3\n")
    with pytest.raises(KTGError, match="class 'Bird_3' has no images"):
        load("cub200", root, tmp_path)
    (folder / "classes.txt").write_text("".join(f"{c + 1} {c + 1:03d}.Bird_{c}\n" for c in range(3)))
    split = (folder / "train_test_split.txt").read_text()
    for flag, pattern in [("yes", "flags in .*train_test_split.txt are not numbers"), ("2", "must be 0 or 1, found 2")]:
        (folder / "train_test_split.txt").write_text(split.replace("\n2 1\n", f"\n2 {flag}\n"))
        with pytest.raises(KTGError, match=pattern):
            load("cub200", root, tmp_path)
    (folder / "train_test_split.txt").write_text(split + "oops\n")
    with pytest.raises(KTGError, match=r"line 16 of .*train_test_split.txt should read '<id> <value>', got 'oops'"):
        load("cub200", root, tmp_path)


def test_cars_class_out_of_range(tmp_path: Path) -> None:
    root = write_cars_all_in_one(tmp_path / "data")
    content = scipy.io.loadmat(root / "cars_annos.mat")
    content["annotations"][0, 2]["class"] = np.array([[200]], dtype=np.uint8)
    scipy.io.savemat(root / "cars_annos.mat", {k: v for k, v in content.items() if not k.startswith("__")})
    with pytest.raises(KTGError, match=r"cars_annos.mat gives label 200 to car_ims/000003\.jpg, outside 1\.\.3"):
        load("stanford_cars", root, tmp_path)


def test_imagefolder_class_folders_must_agree(tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "data")
    write_jpeg(root / "test" / "class_9" / "0.jpg", 9, 0)
    with pytest.raises(KTGError, match="class_9 is a class folder that .*train does not have"):
        load("imagefolder", root, tmp_path)
    shutil.rmtree(root / "test" / "class_9")
    for image in (root / "train" / "class_1").iterdir():
        image.unlink()
    with pytest.raises(KTGError, match="class 'class_1' has no images"):
        load("imagefolder", root, tmp_path)
    with pytest.raises(KTGError, match="expected .*valid, which does not exist.*option test_dir"):
        load("imagefolder", root, tmp_path, test_dir="valid")
