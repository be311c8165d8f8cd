"""Images per second of ktg's data pipeline against torchvision's DataLoader with PIL transforms.

Both pipelines read the same JPEG tree (an image folder with ``train/`` and ``test/``; by default a
synthetic one of Stanford-Dogs-sized photos written to a temporary folder) and apply the SPEC §5 recipe:
RandomResizedCrop(S, ratio=(1, 1.3)) + flip for training, Resize(256/224·S) + CenterCrop(S) for evaluation.

- torchvision: ``ImageFolder`` + ``DataLoader(num_workers=--workers)``, decoding every JPEG every epoch,
  batches moved to ``--device``.
- ktg: the decode-once cache (built once, timed separately) and :class:`~ktg.data.loader.BatchLoader` with
  the batched device transforms.

Throughput is measured over ``--epochs`` epochs after one warm-up epoch. Example::

    python experiments/benchmark_data.py --device cpu --images 512 --json bench.json
"""

from __future__ import annotations

import argparse
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
from ktg.data.loader import BatchLoader
from ktg.data.transforms import eval_resize, reference_transforms


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
    from torchvision import datasets, transforms as T

    train_tf = T.Compose([T.RandomResizedCrop(args.image_size, ratio=(1.0, 1.3)), T.RandomHorizontalFlip(), T.ToTensor()])
    eval_tf = T.Compose([T.Resize(eval_resize(args.image_size)), T.CenterCrop(args.image_size), T.ToTensor()])
    rates = {}
    for name, folder, transform, shuffle in [("train", "train", train_tf, True), ("eval", "test", eval_tf, False)]:
        loader = torch.utils.data.DataLoader(
            datasets.ImageFolder(str(root / folder), transform=transform), batch_size=args.batch_size,
            shuffle=shuffle, drop_last=shuffle, num_workers=args.workers, pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
        )
        rates[name] = images_per_second(
            lambda: (images.to(device, non_blocking=True) for images, _ in loader), args.epochs, device)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="an image folder tree with train/ and test/ (default: a synthetic one)")
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
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

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
    print(f"{f'torchvision DataLoader + PIL ({args.workers} workers)':<44}{reference['train']:>12.0f}{reference['eval']:>12.0f}")
    print(f"{'ktg cache + batched device transforms':<44}{ktg['train']:>12.0f}{ktg['eval']:>12.0f}")
    print(f"{'ratio ktg / torchvision':<44}{results['ratio']['train']:>11.1f}×{results['ratio']['eval']:>11.1f}×")
    print(f"ktg's decode-once cache was built at {ktg['cache_build']:.0f} images/s (once per dataset and size)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
