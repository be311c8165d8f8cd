"""A new image becomes exactly the model input its dataset's evaluation makes of it; odd images are converted or
named in one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_trees import write_cifar, write_imagefolder
from PIL import Image

from ktg.data import DataSource, load_dataset
from ktg.data.preprocess import UnreadableImageError
from ktg.errors import KTGError


def write_pngs(images: torch.Tensor, folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = [folder / f"{i:03d}.png" for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return paths


@pytest.mark.parametrize("name, options", [
    ("digits", {}),
    ("synthetic", {"train_size": 8, "test_size": 6, "num_classes": 2}),
    ("cifar10", {"normalize": True}),
])
def test_image_files_of_in_memory_datasets_become_their_evaluation_inputs(tmp_path, name, options):
    root = write_cifar(tmp_path / "data") if name == "cifar10" else None
    dataset = load_dataset(name, root, 16 if name == "synthetic" else None, **options)
    test = dataset.test.subset(torch.arange(6), "first six")
    paths = write_pngs(test.images, tmp_path / "png")
    preprocessing = DataSource(name, image_size=16 if name == "synthetic" else None, options=options).preprocessing()
    assert torch.equal(preprocessing(paths), dataset.eval_transform(test.images))


def test_photo_files_become_their_evaluation_inputs(tmp_path):
    root = write_imagefolder(tmp_path / "data", num_classes=2, per_class=2, per_class_test=3)
    options = {"cache_dir": str(tmp_path / "cache"), "normalize": True}
    dataset = load_dataset("imagefolder", root, 24, **options)
    # the loader lists class folders in name order and the files of each sorted
    files = sorted((root / "test").rglob("*.jpg"))
    preprocessing = DataSource("imagefolder", image_size=24, options=options).preprocessing()
    expected = dataset.eval_transform(dataset.test.images, original_sizes=dataset.test.original_sizes)
    assert torch.equal(preprocessing(files), expected)
    # Photos up to 98 pixels on the shorter side (the detail side of ImageNet crops at 24) are kept as they are.
    assert expected.shape == (6, 3, 24, 24) and preprocessing.stored_size == 98 and preprocessing.photos


def test_pil_images_and_uint8_tensors_equal_their_files(tmp_path):
    preprocessing = DataSource("imagefolder", image_size=24).preprocessing()
    path = tmp_path / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    from_file = preprocessing(path)
    assert torch.equal(preprocessing(Image.open(path)), from_file)
    assert torch.equal(preprocessing(torch.from_numpy(pixels).permute(2, 0, 1)), from_file)
    assert torch.equal(preprocessing(torch.from_numpy(pixels).permute(2, 0, 1)[None].repeat(2, 1, 1, 1))[1],
                       from_file[0])
    with pytest.raises(KTGError, match="uint8 tensor"):
        preprocessing(torch.zeros(3, 8, 8))


def odd_images(folder: Path) -> dict[str, Path]:
    """Grey, CMYK, RGBA and palette (with a transparent colour) images of the same picture."""
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    folder.mkdir()
    paths = {}
    for mode, suffix in [("L", "png"), ("CMYK", "jpg"), ("RGBA", "png"), ("P", "png"), ("LA", "png")]:
        image = rgb.convert(mode) if mode != "P" else rgb.quantize(16)
        paths[mode] = folder / f"{mode}.{suffix}"
        image.save(paths[mode], **({"transparency": 0} if mode == "P" else {}))
    return paths


def test_grey_cmyk_rgba_and_palette_images_are_converted_to_rgb(tmp_path, recwarn):
    preprocessing = DataSource("imagefolder", image_size=16).preprocessing()
    for mode, path in odd_images(tmp_path / "odd").items():
        batch = preprocessing(path)
        assert batch.shape == (1, 3, 16, 16), mode
    grey = preprocessing(tmp_path / "odd" / "L.png")
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    assert not [str(w.message) for w in recwarn], "converting must not warn"


def test_unreadable_files_are_named_in_one_line(tmp_path):
    preprocessing = DataSource("digits").preprocessing()
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(tmp_path / "whole.jpg")
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    for path, reason in [(text, "not an image"), (truncated, "(?i)truncated"), (tmp_path / "gone.png", "no such file")]:
        with pytest.raises(UnreadableImageError, match=reason) as caught:
            preprocessing(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_20_megapixel_photo_works_and_a_decompression_bomb_is_one_clear_error(tmp_path, monkeypatch):
    photo = tmp_path / "big.jpg"
    gradient = np.linspace(0, 255, 5472, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(gradient[None, :, None], (3648, 5472, 3)).copy()).save(photo, quality=70)
    preprocessing = DataSource("imagefolder", image_size=16).preprocessing()
    assert preprocessing(photo).shape == (1, 3, 16, 16)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # the photo is now 10× past PIL's limit
    with pytest.raises(UnreadableImageError, match="exceeds limit") as caught:
        preprocessing(photo)
    assert str(photo) in str(caught.value)


@pytest.mark.parametrize("source, summary", [
    ({"name": "digits"}, "RGB, resize to 32×32 (bilinear), divide by 255 (N×3×H×W, RGB)"),
    ({"name": "stanford_dogs", "image_size": 224},
     "RGB, resize the shorter side to 256 (bilinear), center-crop 224×224, divide by 255 (N×3×H×W, RGB)"),
    ({"name": "imagefolder", "image_size": 32, "options": {"normalize": True, "cache_dir": "/nowhere"}},
     "RGB, resize the shorter side to 37 (bilinear), center-crop 32×32, divide by 255 (N×3×H×W, RGB), "
     "subtract the mean and divide by the std per channel"),
])
def test_the_pipeline_is_described_for_deployers(source, summary):
    description = DataSource.from_dict(source).preprocessing().describe()
    assert description["summary"] == summary
    assert description["steps"][0]["op"] == "decode"
    if source["name"] == "stanford_dogs":
        assert description["torchvision"] == "transforms.Compose([Resize(256), CenterCrop(224), ToTensor()])"
