"""Options several commands share (data, graph and models, training), and the values they turn into."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def key_value(text: str) -> tuple[str, Any]:
    """An argparse type for ``KEY=VALUE``: VALUE as JSON when it parses as JSON (numbers, true, lists), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose and load a dataset (shared by every command that trains)."""
    from ktg.data import list_datasets

    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="digits", help=f"one of: {', '.join(list_datasets())} (default: digits)")
    group.add_argument("--data-root", type=Path, help="the folder you unpacked the dataset into")
    group.add_argument("--cache-dir", type=Path,
                       help="where decoded images are cached (default: $KTG_CACHE_DIR or ~/.cache/ktg)")
    group.add_argument("--image-size", type=int, help="side of the model's input images (default: the dataset's)")
    group.add_argument("--dataset-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="extra loader option, e.g. train_size=256 for synthetic data (repeatable)")
    group.add_argument("--holdout", type=float, help="hold out this fraction of the training split (stratified) and "
                       "evaluate on it instead of the test split")
    group.add_argument("--holdout-seed", type=int, default=0, help="seed of the held-out split (default: 0)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose the graph's size and every node's model."""
    from ktg.models import list_models

    group = parser.add_argument_group("graph and models")
    group.add_argument("--nodes", type=int, help="number of network nodes (named graphs; default 3)")
    group.add_argument("--model", help=f"model of every node: {', '.join(list_models())} "
                       "(default: abn_resnet20 for images ≤ 64 px, else abn_resnet18)")
    group.add_argument("--width", type=int, help="base width of the models (narrow models for quick runs)")
    group.add_argument("--pretrained", help="'imagenet' (torchvision weights) or a local state-dict file")
    group.add_argument("--no-attention-residual", action="store_true",
                       help="perception branch on M·g instead of (1+M)·g (the ensemble-KTG public code)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of :class:`~ktg.config.TrainConfig`."""
    from ktg.config import COMPILE_MODES, SCHEDULES

    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=30, help="(default: 30)")
    group.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    group.add_argument("--eval-batch-size", type=int, default=256, help="(default: 256)")
    group.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default: 0.1)")
    group.add_argument("--momentum", type=float, default=0.9, help="(default: 0.9)")
    group.add_argument("--weight-decay", type=float, default=5e-4, help="(default: 5e-4)")
    group.add_argument("--nesterov", action="store_true")
    group.add_argument("--schedule", choices=SCHEDULES, default="cosine", help="(default: cosine)")
    group.add_argument("--milestones", type=int, nargs="+", default=[], help="epochs where the step schedule drops")
    group.add_argument("--gamma", type=float, default=0.1, help="step schedule factor (default: 0.1)")
    group.add_argument("--seed", type=int, default=0, help="fixes initial weights, batch order, augmentation")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 autocast (default: on for CUDA)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="channels-last memory format (default: on for CUDA)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="torch.compile the nodes (default: off; pays only when one process trains many trials)")
    group.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                       help="with --compile: torch.compile's mode; reduce-overhead replays the nodes' forward and "
                            "backward as CUDA graphs, which removes the launch cost that dominates at small batches")
    group.add_argument("--deterministic", action="store_true", help="reproducible kernels (slower on CUDA)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_config_from_args(args: argparse.Namespace):
    """The :class:`~ktg.config.TrainConfig` the training options describe."""
    from ktg.config import TrainConfig

    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, nesterov=args.nesterov, schedule=args.schedule,
        milestones=tuple(args.milestones), gamma=args.gamma, seed=args.seed, device=args.device, amp=args.amp,
        channels_last=args.channels_last, compile=args.compile, compile_mode=args.compile_mode,
        deterministic=args.deterministic, holdout=args.holdout, holdout_seed=args.holdout_seed,
    )


def data_source_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`ktg.data.load_dataset` needs, as saved with a run."""
    options = dict(args.dataset_option)
    if args.cache_dir is not None:
        options["cache_dir"] = str(args.cache_dir)
    return {"name": args.dataset, "root": str(args.data_root) if args.data_root else None,
            "image_size": args.image_size, "options": options}


def node_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Model options given to every node that does not set them itself."""
    options: dict[str, Any] = {}
    if args.width is not None:
        options["base_width"] = args.width
    if args.pretrained is not None:
        options["pretrained"] = args.pretrained
    if args.no_attention_residual:
        options["attention_residual"] = False
    return options
