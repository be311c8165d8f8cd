"""Options several commands share (data, graph and models, training), and the values they turn into."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ktg.config import COMPILE_MODES, SCHEDULES, TrainConfig
from ktg.registry import resolve


def key_value(text: str) -> tuple[str, Any]:
    """An argparse type for ``KEY=VALUE``: VALUE as JSON when it parses as JSON (numbers, true, lists), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class Registered:
    """The names a registry lists, looked up only when turned into text: the dataset and model registries
    import torch, which a parser must not need until a help text is printed."""

    def __init__(self, lister: str) -> None:
        self.lister = lister  # "module:function" returning the names

    def __str__(self) -> str:
        return ", ".join(resolve(self.lister)())


def with_registered(action: argparse.Action, lister: str) -> None:
    """Let the help text of ``action`` say ``%(registered)s``: the names of a registry (see :class:`Registered`)."""
    action.registered = Registered(lister)


def defaults(cls: type) -> dict[str, Any]:
    """The default of every field of the dataclass ``cls`` that has a plain one: the options' defaults."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose and load a dataset (shared by every command that trains)."""
    train = defaults(TrainConfig)
    group = parser.add_argument_group("data")
    with_registered(group.add_argument("--dataset", default="digits", help="one of: %(registered)s (default: "
                                       "%(default)s)"), "ktg.data:list_datasets")
    group.add_argument("--data-root", type=Path, help="the folder you unpacked the dataset into")
    group.add_argument("--cache-dir", type=Path,
                       help="where decoded images are cached (default: $KTG_CACHE_DIR or ~/.cache/ktg)")
    group.add_argument("--image-size", type=int, help="side of the model's input images (default: the dataset's)")
    group.add_argument("--dataset-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="extra loader option, e.g. train_size=256 for synthetic data (repeatable)")
    group.add_argument("--holdout", type=float, default=train["holdout"], help="hold out this fraction of the "
                       "training split (stratified) and evaluate on it instead of the test split")
    group.add_argument("--holdout-seed", type=int, default=train["holdout_seed"],
                       help="seed of the held-out split (default: %(default)s)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose the graph's size and every node's model."""
    group = parser.add_argument_group("graph and models")
    group.add_argument("--nodes", type=int, help="number of network nodes (named graphs; default 3)")
    with_registered(group.add_argument("--model", help="model of every node: %(registered)s (default: abn_resnet20 "
                                       "for images ≤ 64 px, else abn_resnet18)"), "ktg.models:list_models")
    group.add_argument("--width", type=int, help="base width of the models (narrow models for quick runs)")
    group.add_argument("--pretrained", help="'imagenet' (torchvision weights) or a local state-dict file")
    group.add_argument("--no-attention-residual", action="store_true",
                       help="perception branch on M·g instead of (1+M)·g (the ensemble-KTG public code)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of :class:`~ktg.config.TrainConfig`, with its defaults."""
    train = defaults(TrainConfig)
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=train["epochs"], help="(default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=train["batch_size"], help="(default: %(default)s)")
    group.add_argument("--eval-batch-size", type=int, default=train["eval_batch_size"], help="(default: %(default)s)")
    group.add_argument("--lr", type=float, default=train["lr"], help="initial learning rate (default: %(default)s)")
    group.add_argument("--momentum", type=float, default=train["momentum"], help="(default: %(default)s)")
    group.add_argument("--weight-decay", type=float, default=train["weight_decay"], help="(default: %(default)s)")
    group.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=train["nesterov"],
                       help="Nesterov momentum (default: %(default)s)")
    group.add_argument("--schedule", choices=SCHEDULES, default=train["schedule"], help="(default: %(default)s)")
    group.add_argument("--milestones", type=int, nargs="+", default=list(train["milestones"]),
                       help="epochs where the step schedule drops")
    group.add_argument("--gamma", type=float, default=train["gamma"],
                       help="step schedule factor (default: %(default)s)")
    group.add_argument("--seed", type=int, default=train["seed"],
                       help="fixes initial weights, batch order, augmentation (default: %(default)s)")
    group.add_argument("--device", default=train["device"], help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, default=train["amp"],
                       help="bf16 autocast (default: on for CUDA)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=train["channels_last"],
                       help="channels-last memory format (default: on for CUDA)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=train["compile"],
                       help="torch.compile the nodes (default: %(default)s; pays only when one process trains many "
                       "trials)")
    group.add_argument("--compile-mode", choices=COMPILE_MODES, default=train["compile_mode"],
                       help="with --compile: torch.compile's mode; reduce-overhead replays the nodes' forward and "
                            "backward as CUDA graphs, which removes the launch cost that dominates at small batches")
    group.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=train["deterministic"],
                       help="reproducible kernels, slower on CUDA (default: %(default)s)")
    add_progress_argument(parser)


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: progress is bars on a terminal and one line per epoch (per trial in a search) in a log."""
    parser.add_argument("--no-progress", action="store_true", help="show no progress: no bars on a terminal, no "
                        "line per epoch or trial in a log")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`~ktg.config.TrainConfig` the training options describe (fields without an option keep their
    defaults)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**given, "milestones": tuple(given["milestones"])})


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
