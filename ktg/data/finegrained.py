"""Photo datasets in their authors' layouts: Stanford Dogs, CUB-200-2011, Stanford Cars, and any image folder tree.

Class names and counts come from each dataset's metadata files; images are decoded once into the cache
(:mod:`ktg.data.cache`), at most ``cache_size`` pixels on the shorter side (default: the transforms'
:func:`~ktg.data.transforms.detail_side`, 903 for 224-pixel inputs, so that crops keep the original's
detail), and augmented on the device with the reference recipe (docs/method.md#reference-protocol,
:func:`ktg.data.transforms.reference_transforms`), or another of :data:`~ktg.data.transforms.AUGMENTATIONS`.
Bounding boxes in the metadata are not used: like the papers, ktg trains on whole images.

Options common to these loaders: ``cache_dir`` (default ``$KTG_CACHE_DIR`` or ``~/.cache/ktg``),
``cache_size`` (the longest shorter side kept; larger photos are reduced to it), ``normalize`` (ImageNet
mean/std; off in the reference code) and ``augment`` (a recipe of :data:`~ktg.data.transforms.AUGMENTATIONS`;
default: the dataset's :data:`PRESETS` entry). The options are saved with a run, so ``ktg eval``, ``ktg predict``
and ``ktg export`` prepare images with the run's own evaluation transform.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ktg.data.cache import ImageList, cached_image_set
from ktg.data.images import Dataset
from ktg.data.metadata import (
    flags,
    image_list,
    integers,
    load_mat,
    locate,
    mat_field,
    missing,
    read_table,
    require_every_class,
    require_root,
    strings,
)
from ktg.data.preprocess import Preprocessing
from ktg.data.transforms import AUGMENTATIONS, BatchTransform, detail_side
from ktg.errors import KTGError

DOGS_LAYOUT = (
    "<root>/Images/<wnid>-<breed>/<wnid>_<n>.jpg (images.tar) and <root>/lists/{train_list,test_list}.mat "
    "(lists.tar; the .mat files may also sit directly in <root>); <root> may also contain stanford_dogs/"
)
CUB_LAYOUT = (
    "<root>/CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, "
    "images/<id>.<name>/*.jpg} (CUB_200_2011.tgz); --data-root may also be CUB_200_2011 itself"
)
CARS_LAYOUT = (
    "either torchvision's <root>/stanford_cars/{cars_train/*.jpg, cars_test/*.jpg, devkit/cars_meta.mat, "
    "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat} or the all-in-one <root>/{car_ims/*.jpg, "
    "cars_annos.mat}; --data-root may also be the stanford_cars folder itself"
)
IMAGEFOLDER_LAYOUT = "<root>/train/<class>/<image> and <root>/test/<class>/<image> (one folder per class)"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


#: The augmentation recipe (:data:`~ktg.data.transforms.AUGMENTATIONS`) of each photo dataset where the
#: ``augment`` option names none: the ensemble-KTG paper's (docs/method.md#reference-protocol) for the fine-grained
#: benchmarks, torchvision's ImageNet defaults for any image folder tree.
PRESETS: dict[str, str] = {
    "stanford_dogs": "finegrained",
    "cub200": "finegrained",
    "stanford_cars": "finegrained",
    "imagefolder": "imagenet",
}
DEFAULT_IMAGE_SIZE = 224


def _photo_pipeline(
    name: str, image_size: int, cache_size: int | None, normalize: bool, augment: str | None
) -> tuple[BatchTransform, Preprocessing]:
    """(training transform, evaluation preprocessing) of photo dataset ``name`` at ``image_size`` with the recipe
    ``augment`` (None: the dataset's :data:`PRESETS` entry), its images cached at most ``cache_size`` pixels on the
    shorter side (default: the transforms' :func:`~ktg.data.transforms.detail_side`, 903 for 224-pixel inputs)."""
    recipe = PRESETS[name] if augment is None else augment
    if recipe not in AUGMENTATIONS:
        raise KTGError(f"{name}: unknown augment={recipe!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    train_transform, eval_transform = AUGMENTATIONS[recipe](image_size, normalize=normalize)
    size = detail_side([train_transform, eval_transform]) if cache_size is None else cache_size
    if size < 1:
        raise KTGError(f"{name}: cache_size must be a positive number of pixels, got {size}")
    return train_transform, Preprocessing(size, eval_transform, photos=True)


def _photo_preprocessing(
    name: str, image_size: int | None, *, cache_size: int | None = None, normalize: bool = False,
    augment: str | None = None, **options
) -> Preprocessing:
    return _photo_pipeline(name, image_size or DEFAULT_IMAGE_SIZE, cache_size, normalize, augment)[1]


# Each photo dataset's preprocessing of new images, as its record in ktg.data names it.
stanford_dogs_preprocessing = partial(_photo_preprocessing, "stanford_dogs")
cub200_preprocessing = partial(_photo_preprocessing, "cub200")
stanford_cars_preprocessing = partial(_photo_preprocessing, "stanford_cars")
imagefolder_preprocessing = partial(_photo_preprocessing, "imagefolder")


def _image_dataset(
    name: str,
    train: ImageList,
    test: ImageList,
    image_size: int | None,
    *,
    cache_dir: str | Path | None,
    cache_size: int | None,
    normalize: bool,
    augment: str | None,
    info: dict,
) -> Dataset:
    """Cache both splits (training must show every class) and pair them with the transforms of the recipe
    ``augment`` (None: the dataset's :data:`PRESETS` entry) at ``image_size`` (default 224)."""
    require_every_class(name, train.labels, train.classes, train.source)
    image_size = image_size or DEFAULT_IMAGE_SIZE
    train_transform, preprocessing = _photo_pipeline(name, image_size, cache_size, normalize, augment)
    size = preprocessing.stored_size
    return Dataset(
        name=name,
        train=cached_image_set(name, "train", train, size, cache_dir),
        test=cached_image_set(name, "test", test, size, cache_dir),
        train_transform=train_transform,
        eval_transform=preprocessing.transform,
        info={**info, "root": str(train.root), "image_size": image_size, "cache_size": size,
              "train_images": len(train.files), "test_images": len(test.files)},
    )


def load_stanford_dogs(
    root: Path | None, image_size: int | None, *, cache_dir: str | Path | None = None,
    cache_size: int | None = None, normalize: bool = False, augment: str | None = None,
) -> Dataset:
    """Stanford Dogs (120 breeds, 12,000 train / 8,580 test) from ``Images/`` and the lists' ``.mat`` files.

    The lists hold ``file_list`` (paths under ``Images/``) and 1-based ``labels``; a class is named after its
    folder (``n02085620-Chihuahua`` → ``Chihuahua``), and every label must stand for exactly one folder.
    """
    name = "stanford_dogs"
    found = locate(root, name, ["lists/train_list.mat", "train_list.mat"], ["stanford_dogs"])
    if found is None:
        raise missing(name, root / "lists" / "train_list.mat", DOGS_LAYOUT)
    folder, marker = found
    lists = {split: folder / marker.replace("train_list", f"{split}_list") for split in ("train", "test")}
    raw = {}
    for split, path in lists.items():
        mat = load_mat(path, name, DOGS_LAYOUT, ["file_list", "labels"])
        raw[split] = (strings(mat["file_list"]), integers(mat["labels"], "labels", path, name))
    # There are as many classes as breed folders; labels are range-checked against that count first, and
    # must then pair one to one with the folders.
    breed_folders = sorted({file.split("/")[0] for files, _ in raw.values() for file in files})
    train, test = (image_list(name, folder / "Images", *raw[split], breed_folders, str(lists[split]), base=1)
                   for split in ("train", "test"))
    folder_of: dict[int, str] = {}
    label_of: dict[str, int] = {}
    for images in (train, test):
        for file, label in zip(images.files, images.labels):
            breed = file.split("/")[0]
            if label_of.setdefault(breed, label) != label:
                conflict = f"other images of {breed!r} have label {label_of[breed] + 1}"
            elif folder_of.setdefault(label, breed) != breed:
                conflict = f"label {label + 1} already stands for {folder_of[label]!r}"
            else:
                continue
            raise KTGError(f"{name}: {images.source} gives label {label + 1} to {file}, but {conflict}; "
                           "the lists disagree with the images")
    train.classes = test.classes = [folder_of[label].split("-", 1)[-1] for label in range(len(breed_folders))]
    return _image_dataset(name, train, test, image_size, cache_dir=cache_dir, cache_size=cache_size,
                          normalize=normalize, augment=augment, info={"layout": "stanford_dogs"})


def load_cub200(
    root: Path | None, image_size: int | None, *, cache_dir: str | Path | None = None,
    cache_size: int | None = None, normalize: bool = False, augment: str | None = None,
) -> Dataset:
    """CUB-200-2011 (200 species, 5,994 train / 5,794 test) from its text lists; ids and labels are 1-based.

    ``images.txt``, ``image_class_labels.txt`` and ``train_test_split.txt`` must list the same image ids;
    ``classes.txt`` numbers the classes 1..200 (``001.Black_footed_Albatross`` → ``Black_footed_Albatross``).
    """
    name = "cub200"
    found = locate(root, name, ["images.txt"], ["CUB_200_2011"])
    if found is None:
        raise missing(name, root / "CUB_200_2011" / "images.txt", CUB_LAYOUT)
    folder = found[0]
    tables = {file: read_table(folder / file, name, CUB_LAYOUT)
              for file in ("classes.txt", "images.txt", "image_class_labels.txt", "train_test_split.txt")}
    class_table = tables.pop("classes.txt")
    if sorted(class_table) != list(range(1, len(class_table) + 1)):
        raise KTGError(f"{name}: {folder / 'classes.txt'} must number its classes 1..{len(class_table)} without gaps")
    classes = [class_table[c].split(".", 1)[-1] for c in range(1, len(class_table) + 1)]
    ids = sorted(tables["images.txt"])
    for file, table in tables.items():
        if sorted(table) != ids:
            odd = sorted(set(table).symmetric_difference(ids))
            raise KTGError(f"{name}: {folder / file} and {folder / 'images.txt'} list different image ids "
                           f"({len(odd)} differ, e.g. id {odd[0]}); the lists disagree with each other")
    source = f"{folder / 'images.txt'} and image_class_labels.txt"
    labels = integers([tables["image_class_labels.txt"][i] for i in ids], "labels",
                      folder / "image_class_labels.txt", name)
    is_train = flags([tables["train_test_split.txt"][i] for i in ids], "flags", folder / "train_test_split.txt", name)
    files = np.array([tables["images.txt"][i] for i in ids], dtype=object)
    train, test = (image_list(name, folder / "images", files[mask].tolist(), labels[mask], classes, source, base=1)
                   for mask in (is_train, ~is_train))
    return _image_dataset(name, train, test, image_size, cache_dir=cache_dir, cache_size=cache_size,
                          normalize=normalize, augment=augment, info={"layout": "CUB_200_2011"})


def load_stanford_cars(
    root: Path | None, image_size: int | None, *, cache_dir: str | Path | None = None,
    cache_size: int | None = None, normalize: bool = False, augment: str | None = None,
) -> Dataset:
    """Stanford Cars (196 models, 8,144 train / 8,041 test), in torchvision's layout or the all-in-one one.

    torchvision's: ``devkit/cars_meta.mat`` (``class_names``), ``devkit/cars_train_annos.mat`` and
    ``cars_test_annos_withlabels.mat`` (struct arrays ``annotations`` with ``fname`` and 1-based ``class``),
    images in ``cars_train/`` and ``cars_test/``. All-in-one: ``cars_annos.mat`` (``class_names`` and
    ``annotations`` with ``relative_im_path``, ``class`` and ``test``), images in ``car_ims/``.
    """
    name = "stanford_cars"
    found = locate(root, name, ["devkit/cars_meta.mat", "cars_annos.mat"], ["stanford_cars"])
    if found is None:
        raise missing(name, root / "stanford_cars" / "devkit" / "cars_meta.mat", CARS_LAYOUT)
    folder, marker = found
    if marker == "cars_annos.mat":
        path = folder / marker
        mat = load_mat(path, name, CARS_LAYOUT, ["annotations", "class_names"])
        classes = strings(mat["class_names"])
        annotations = mat["annotations"]
        files = np.array(strings(mat_field(annotations, "relative_im_path", path, name)), dtype=object)
        labels = integers(mat_field(annotations, "class", path, name), "classes", path, name)
        is_test = flags(mat_field(annotations, "test", path, name), "test flags", path, name)
        train, test = (image_list(name, folder, files[mask].tolist(), labels[mask], classes, str(path), base=1)
                       for mask in (~is_test, is_test))
        layout = "car_ims"
    else:
        classes = strings(load_mat(folder / marker, name, CARS_LAYOUT, ["class_names"])["class_names"])
        test_annos = folder / "cars_test_annos_withlabels.mat"
        if not test_annos.is_file() and (folder / "devkit" / test_annos.name).is_file():
            test_annos = folder / "devkit" / test_annos.name  # some copies keep it with the other devkit files
        train, test = (
            _cars_split(name, folder, annos, images, classes)
            for annos, images in ((folder / "devkit" / "cars_train_annos.mat", "cars_train"), (test_annos, "cars_test"))
        )
        layout = "torchvision"
    return _image_dataset(name, train, test, image_size, cache_dir=cache_dir, cache_size=cache_size,
                          normalize=normalize, augment=augment, info={"layout": layout})


def _cars_split(name: str, folder: Path, annos: Path, images: str, classes: list[str]) -> ImageList:
    """One split of torchvision's Stanford Cars layout: ``annos`` names files in ``folder/images``."""
    annotations = load_mat(annos, name, CARS_LAYOUT, ["annotations"])["annotations"]
    files = [f"{images}/{file}" for file in strings(mat_field(annotations, "fname", annos, name))]
    labels = integers(mat_field(annotations, "class", annos, name), "classes", annos, name)
    return image_list(name, folder, files, labels, classes, str(annos), base=1)


def load_imagefolder(
    root: Path | None, image_size: int | None, *, test_dir: str = "test", cache_dir: str | Path | None = None,
    cache_size: int | None = None, normalize: bool = False, augment: str | None = None,
) -> Dataset:
    """Any tree with one folder per class under ``root/train`` and ``root/<test_dir>``; classes sorted by name.

    Files with an image extension are taken, in sub-folders too; a class folder of the test split must also
    exist under ``train``. Transforms: the recipe ``augment`` names (:data:`~ktg.data.transforms.AUGMENTATIONS`),
    by default torchvision's ImageNet defaults, RandomResizedCrop(image_size) + flip and
    Resize(eval_resize(image_size)) + CenterCrop(image_size), at ``image_size`` 224 by default.
    """
    name = "imagefolder"
    root = require_root(root, name)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise missing(name, train_dir, IMAGEFOLDER_LAYOUT)
    classes = sorted(entry.name for entry in train_dir.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise KTGError(f"{name}: {train_dir} has no class folders; the dataset is usually laid out as "
                       f"{IMAGEFOLDER_LAYOUT}")
    train = _folder_split(name, root, "train", classes)
    if not (root / test_dir).is_dir():
        raise missing(name, root / test_dir, f"{IMAGEFOLDER_LAYOUT} (option test_dir names another test folder)")
    test = _folder_split(name, root, test_dir, classes)
    return _image_dataset(name, train, test, image_size, cache_dir=cache_dir, cache_size=cache_size,
                          normalize=normalize, augment=augment, info={"layout": "imagefolder"})


def _folder_split(name: str, root: Path, split: str, classes: list[str]) -> ImageList:
    """The images of ``root/split/<class>/``; a class folder that is not in ``classes`` is an error."""
    folder = root / split
    extra = sorted(entry.name for entry in folder.iterdir()
                   if entry.is_dir() and not entry.name.startswith(".") and entry.name not in classes)
    if extra:
        raise KTGError(f"{name}: {folder / extra[0]} is a class folder that {root / 'train'} does not have")
    files, labels = [], []
    for label, cls in enumerate(classes):
        members = (sorted(path for path in (folder / cls).rglob("*")
                          if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
                   if (folder / cls).is_dir() else [])
        files += [path.relative_to(root).as_posix() for path in members]
        labels += [label] * len(members)
    return image_list(name, root, files, labels, classes, str(folder), base=0)
