"""Images per second of ktg's data pipeline against torchvision's DataLoader with PIL transforms, and with
``--photos`` how closely ktg's crops of real photos match torchvision's.

Both pipelines read the same JPEG tree (an image folder with ``train/`` and ``test/``; by default a
synthetic one of Stanford-Dogs-sized photos written to a temporary folder) and apply the reference recipe
(docs/method.md#reference-protocol): RandomResizedCrop(S, ratio=(1, 1.3)) + flip for training,
Resize(256/224·S) + CenterCrop(S) for evaluation.

- torchvision: ``ImageFolder`` + ``DataLoader(num_workers=--workers)``, decoding every JPEG every epoch,
  batches moved to ``--device``.
- ktg: the decode-once cache (built once, timed separately) and :class:`~ktg.data.loader.BatchLoader` with
  the batched device transforms.

Throughput is measured over ``--epochs`` epochs after one warm-up epoch. Example::

    python experiments/benchmark_data.py --device cpu --images 512 --json bench.json

``--photos`` instead caches the real photographs that scikit-learn and scikit-image ship (:func:`sample_photos`)
as the fine-grained datasets do by default, and compares ktg's crops with torchvision's on the original files
(:func:`photo_fidelity`): the evaluation crop's mean absolute error against Resize(256) + CenterCrop(224),
and the detail (mean gradient magnitude) of training crops against RandomResizedCrop(224, ratio=(1, 1.3)) +
flip for the same boxes and flips::

    python experiments/benchmark_data.py --photos
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from ktg.data import load_dataset
from ktg.data.cache import ImageList, cached_image_set
from ktg.data.loader import BatchLoader
from ktg.data.transforms import detail_side, eval_resize, reference_transforms, resample_boxes


def write_tree(root: Path, num_images: int, num_classes: int, seed: int = 0) -> None:
    """``num_images`` JPEGs of 300-500 × 330-500 pixels (Stanford Dogs' typical sizes), 20 % of them in ``test/``."""
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        split = "test" if index % 5 == 4 else "train"
        height, width = int(rng.integers(300, 501)), int(rng.integers(330, 501))
        # Smooth colour fields plus noise compress and decode like photos, unlike pure noise.
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
        path = root / split / f"class_{index % num_classes:02d}" / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def images_per_second(epoch: Callable[[], Iterable[torch.Tensor]], epochs: int, device: torch.device) -> float:
    """Images per second over ``epochs`` calls of ``epoch`` (an iterable of image batches), after one warm-up."""
    def run() -> int:
        count = 0
        for images in epoch():
            count += images.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return count

    run()
    start = time.perf_counter()
    count = sum(run() for _ in range(epochs))
    return count / (time.perf_counter() - start)


def torchvision_rates(root: Path, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Train and eval images/s of ImageFolder + DataLoader with PIL transforms."""
    from torchvision import datasets
    from torchvision import transforms as T

    train_tf = T.Compose([T.RandomResizedCrop(args.image_size, ratio=(1.0, 1.3)), T.RandomHorizontalFlip(),
                          T.ToTensor()])
    eval_tf = T.Compose([T.Resize(eval_resize(args.image_size)), T.CenterCrop(args.image_size), T.ToTensor()])
    rates = {}
    for name, folder, transform, shuffle in [("train", "train", train_tf, True), ("eval", "test", eval_tf, False)]:
        loader = torch.utils.data.DataLoader(
            datasets.ImageFolder(str(root / folder), transform=transform), batch_size=args.batch_size,
            shuffle=shuffle, drop_last=shuffle, num_workers=args.workers, pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
        )
        rates[name] = images_per_second(
            lambda loader=loader: (images.to(device, non_blocking=True) for images, _ in loader), args.epochs, device)
    return rates


def ktg_rates(root: Path, args: argparse.Namespace, device: torch.device, cache_dir: Path) -> dict[str, float]:
    """Images/s of building the cache once, then of training and evaluation epochs from it on ``device``."""
    start = time.perf_counter()
    dataset = load_dataset("imagefolder", root, args.image_size, cache_dir=cache_dir)
    build = (len(dataset.train) + len(dataset.test)) / (time.perf_counter() - start)
    train_tf, eval_tf = reference_transforms(args.image_size)
    train = BatchLoader(dataset.train, args.batch_size, train_tf, device, shuffle=True, drop_last=True)
    test = BatchLoader(dataset.test, args.batch_size, eval_tf, device, shuffle=False, drop_last=False)
    epochs = iter(range(1, 10**9))  # a new seeded epoch each time
    return {
        "cache_build": build,
        "train": images_per_second(lambda: (images for images, _ in train.epoch(next(epochs))), args.epochs, device),
        "eval": images_per_second(lambda: (images for images, _ in test.epoch(0)), args.epochs, device),
    }


#: The real colour photographs in scikit-image's data folder, ≥ 300 pixels on the shorter side (300×451 to
#: 1411×1411); its other pictures are grey, drawings (color.png, logo.png) or smaller.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                  "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")


def sample_photos() -> list[Path]:
    """scikit-learn's two sample photos (china.jpg, flower.jpg, 427×640: the files ``load_sample_images()``
    reads) and :data:`SKIMAGE_PHOTOS`, found without importing either package (that takes a second)."""
    folders = {}
    for package in ("sklearn", "skimage"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"--photos needs scikit-learn and scikit-image (pip install -e '.[test]'): {package} is "
                             "missing")
        folders[package] = Path(spec.submodule_search_locations[0])
    sklearn_images = folders["sklearn"] / "datasets" / "images"
    return [sklearn_images / "china.jpg", sklearn_images / "flower.jpg"] + [
        folders["skimage"] / "data" / name for name in SKIMAGE_PHOTOS]


def detail(images: torch.Tensor) -> torch.Tensor:
    """Mean gradient magnitude √(dx² + dy²) of every image of B×C×H×W floats (forward differences): B values."""
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    return (dx.square() + dy.square()).sqrt().flatten(1).mean(1)


def photo_fidelity(paths: list[Path], cache_dir: Path, *, image_size: int = 224, crops: int = 16,
                   seed: int = 0, cache_size: int | None = None) -> dict:
    """ktg's crops of ``paths`` against torchvision's on the original files, at the fine-grained datasets'
    defaults (the reference transforms, photos cached at their :func:`~ktg.data.transforms.detail_side`, or
    at most ``cache_size`` pixels on the shorter side).

    Returns per photo and overall: ``eval_mae`` (mean absolute error in [0, 1] units of the evaluation crop
    against Resize + CenterCrop + ToTensor), ``train_mae`` and ``detail_ratio`` (summed detail of ktg's
    training crops over torchvision's ``resized_crop`` + flip of the same ``crops`` boxes per photo).
    """
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF

    train_tf, eval_tf = reference_transforms(image_size)
    root = Path(os.path.commonpath([path.resolve() for path in paths]))
    files = [path.resolve().relative_to(root).as_posix() for path in paths]
    listed = ImageList(root, files, [0] * len(files), ["photo"], "the sample photos")
    side = detail_side([train_tf, eval_tf]) if cache_size is None else cache_size
    photos = cached_image_set("photos", "test", listed, side, cache_dir)
    reference_eval = T.Compose([T.Resize(eval_resize(image_size)), T.CenterCrop(image_size), T.ToTensor()])
    ours_eval = eval_tf(photos.images, original_sizes=photos.original_sizes)
    rows, ours_detail, reference_detail = [], 0.0, 0.0
    for index, path in enumerate(paths):
        original = photos.original_sizes[index : index + 1].repeat(crops, 1)
        generator = torch.Generator().manual_seed(seed + index)
        boxes = train_tf.sample_boxes(original, generator)
        flips = torch.rand(crops, generator=generator) < 0.5
        ours = resample_boxes(photos.images[[index] * crops], boxes / original.double().repeat(1, 2), flips,
                              image_size)
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        reference = torch.stack([TF.to_tensor(TF.hflip(crop) if flip else crop) for crop, flip in zip(
            (TF.resized_crop(rgb, *box, [image_size, image_size]) for box in boxes.tolist()), flips)])
        ours_detail += float(detail(ours).sum())
        reference_detail += float(detail(reference).sum())
        rows.append({"photo": path.name, "size": photos.original_sizes[index].tolist(),
                     "stored": photos.images.sizes[index].tolist(),
                     "eval_mae": float((ours_eval[index] - reference_eval(rgb)).abs().mean()),
                     "train_mae": float((ours - reference).abs().mean()),
                     "detail_ratio": float(detail(ours).sum() / detail(reference).sum())})
    return {"cache_side": side, "default": cache_size is None, "photos": rows,
            "eval_mae": sum(row["eval_mae"] for row in rows) / len(rows),
            "train_mae": sum(row["train_mae"] for row in rows) / len(rows),
            "detail_ratio": ours_detail / reference_detail}


def print_fidelity(results: dict) -> None:
    """The table of :func:`photo_fidelity`'s results."""
    default = " (the default)" if results["default"] else ""
    print(f"photos cached at ≤ {results['cache_side']} px on the shorter side{default}; "
          "ktg against torchvision on the original files")
    print(f"{'photo':<24}{'size':>11}{'stored':>11}{'eval MAE':>10}{'train MAE':>11}{'detail':>8}")
    for row in results["photos"]:
        size, stored = ("×".join(map(str, row[key])) for key in ("size", "stored"))
        print(f"{row['photo']:<24}{size:>11}{stored:>11}{row['eval_mae']:>10.4f}{row['train_mae']:>11.4f}"
              f"{row['detail_ratio']:>8.3f}")
    print(f"{'all':<46}{results['eval_mae']:>10.4f}{results['train_mae']:>11.4f}{results['detail_ratio']:>8.3f}")
    print(f"eval MAE {results['eval_mae']:.4f} (vs Resize(256) + CenterCrop(224)); train detail ratio "
          f"{results['detail_ratio']:.3f} (vs RandomResizedCrop(224, ratio=(1, 1.3)) + flip, same boxes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path,
                        help="an image folder tree with train/ and test/ (default: a synthetic one)")
    parser.add_argument("--images", type=int, default=512, help="images in the synthetic tree (default: 512)")
    parser.add_argument("--classes", type=int, default=8, help="classes in the synthetic tree (default: 8)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--image-size", type=int, default=224, help="(default: 224)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="torchvision DataLoader workers (default: all CPU cores)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up (default: 2)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--photos", action="store_true",
                        help="compare ktg's crops of real photos with torchvision's instead of timing")
    parser.add_argument("--crops", type=int, default=32, help="training crops per photo with --photos (default: 32)")
    parser.add_argument("--cache-size", type=int,
                        help="with --photos, cache at most this shorter side instead of the default detail side")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.photos:
        with tempfile.TemporaryDirectory(prefix="ktg-photos-") as scratch:
            fidelity = photo_fidelity(sample_photos(), Path(scratch), image_size=args.image_size, crops=args.crops,
                                      cache_size=args.cache_size)
        print_fidelity(fidelity)
        if args.json:
            args.json.write_text(json.dumps(fidelity, indent=2) + "\n")
        return 0

    with tempfile.TemporaryDirectory(prefix="ktg-bench-") as scratch:
        root = args.root
        if root is None:
            root = Path(scratch) / "tree"
            print(f"writing {args.images} synthetic JPEGs to {root}", file=sys.stderr)
            write_tree(root, args.images, args.classes)
        ktg = ktg_rates(root, args, device, Path(scratch) / "cache")
        reference = torchvision_rates(root, args, device)

    results = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "workers": args.workers,
        "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
        "images_per_second": {"torchvision": reference, "ktg": ktg},
        "ratio": {split: ktg[split] / reference[split] for split in ("train", "eval")},
    }
    print(f"\n{results['device']}, {args.workers} DataLoader workers, {torch.get_num_threads()} torch threads, "
          f"batch {args.batch_size}, {args.image_size}px")
    print(f"{'pipeline':<44}{'train img/s':>12}{'eval img/s':>12}")
    torchvision_name = f"torchvision DataLoader + PIL ({args.workers} workers)"
    print(f"{torchvision_name:<44}{reference['train']:>12.0f}{reference['eval']:>12.0f}")
    print(f"{'ktg cache + batched device transforms':<44}{ktg['train']:>12.0f}{ktg['eval']:>12.0f}")
    print(f"{'ratio ktg / torchvision':<44}{results['ratio']['train']:>11.1f}×{results['ratio']['eval']:>11.1f}×")
    print(f"ktg's decode-once cache was built at {ktg['cache_build']:.0f} images/s (once per dataset and size)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
