"""Options several commands share (data, graph and models, training), and the values they turn into."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable

from ktg.config import COMPILE_MODES, EVAL_BATCH_SIZE, SCHEDULES, TrainConfig
from ktg.data import DataSource, dataset_defaults, dataset_record, list_datasets
from ktg.errors import KTGError
from ktg.graph import DEFAULT_NODES
from ktg.models import list_models, model_record
from ktg.plan import TrainingPlan, plan_training
from ktg.registry import RECIPES, recipe_names


def key_value(text: str) -> tuple[str, Any]:
    """An argparse type for ``KEY=VALUE``: VALUE as JSON when it parses as JSON (numbers, true, lists), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def at_least_one(text: str) -> int:
    """An argparse type for a count that must be 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def defaults(cls: type) -> dict[str, Any]:
    """The default of every field of the dataclass ``cls`` that has a plain one: the options' defaults."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose and load a dataset (shared by every command that trains)."""
    train = defaults(TrainConfig)
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", metavar="NAME", help=f"required: {dataset_choices()}")
    group.add_argument("--data-root", type=Path, help="the folder you unpacked the dataset into")
    group.add_argument("--cache-dir", type=Path,
                       help="where decoded images are cached (default: $KTG_CACHE_DIR or ~/.cache/ktg)")
    group.add_argument("--image-size", type=int, help="side of the model's input images (default: the dataset's)")
    group.add_argument("--dataset-option", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="extra loader option, e.g. train_size=256 for synthetic data (repeatable)")
    group.add_argument("--holdout", type=float, default=train["holdout"], help="hold out this fraction of the "
                       "training split (stratified) and evaluate on it instead of the test split")
    group.add_argument("--holdout-seed", type=int, help=f"with --holdout: seed of the held-out split (default: "
                       f"{train['holdout_seed']})")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose the graph's size and every node's model."""
    group = parser.add_argument_group("graph and models", description="--model, --width, --pretrained, "
                                      "--[no-]attention-residual and the node options of a --recipe are given for "
                                      "every node: a node of a graph file that sets another value is an error.")
    group.add_argument("--nodes", type=int, help=f"number of network nodes (named graphs; default {DEFAULT_NODES})")
    group.add_argument("--model", help=f"model of every node: {', '.join(list_models())} (default: abn_resnet20 "
                       "for images ≤ 64 px, else abn_resnet18)")
    group.add_argument("--width", type=int, help="base width of the models (narrow models for quick runs)")
    group.add_argument("--pretrained", help="'imagenet' (torchvision weights) or a local state-dict file")
    group.add_argument("--attention-residual", action=argparse.BooleanOptionalAction,
                       help="perception branch on (1+M)·g (official ABN, the default) or, with "
                       "--no-attention-residual, on M·g (the ensemble-KTG public code, --recipe paper)")


def add_training_arguments(parser: argparse.ArgumentParser, *, search: bool = False) -> None:
    """Options of :class:`~ktg.config.TrainConfig` and ``--recipe``. An option left out is None here: the
    recipe's value takes its place, else the dataset's suggestion (:class:`ktg.data.DatasetDefaults`), else
    TrainConfig's default, shown in the help (see :meth:`TrainConfig.from_recipe`). ``search``: the help also
    names the held-out fraction each dataset suggests for a search."""
    train = defaults(TrainConfig)
    group = parser.add_argument_group("training", description="An option given explicitly overrides the recipe's "
                                      "value (--recipe), which overrides what the dataset suggests, which "
                                      "overrides the default shown; config.json records the final values and the "
                                      "recipe's name (train.recipe). The datasets suggest: "
                                      + dataset_suggestions(search) + ".")

    def default(name: str) -> str:
        return f"(default: {train[name]})"

    group.add_argument("--recipe", choices=recipe_names(), help="a named recipe: "
                       + "; ".join(f"{name}: {record.describe()}" for name, record in RECIPES.items())
                       + " (default: none)")

    group.add_argument("--epochs", type=int, help=default("epochs"))
    group.add_argument("--batch-size", type=int, help=default("batch_size"))
    group.add_argument("--eval-batch-size", type=int, help=default("eval_batch_size"))
    group.add_argument("--lr", type=float, help=f"initial learning rate {default('lr')}")
    group.add_argument("--momentum", type=float, help=default("momentum"))
    group.add_argument("--weight-decay", type=float, help=default("weight_decay"))
    group.add_argument("--nesterov", action=argparse.BooleanOptionalAction,
                       help=f"Nesterov momentum {default('nesterov')}")
    group.add_argument("--schedule", choices=SCHEDULES, help=default("schedule"))
    group.add_argument("--milestones", type=int, nargs="+", help="--schedule step only: the epochs after which "
                       "the rate drops by --gamma, increasing, each below --epochs")
    group.add_argument("--gamma", type=float, help=f"step schedule factor {default('gamma')}")
    group.add_argument("--seed", type=int,
                       help=f"fixes initial weights, batch order, augmentation {default('seed')}")
    group.add_argument("--device", help=f"auto, cpu, cuda or cuda:N {default('device')}")
    group.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on for CUDA)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                       help="channels-last memory format (default: on for CUDA)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction,
                       help=f"torch.compile the nodes {default('compile')}; pays only when one process trains many "
                       "trials")
    group.add_argument("--compile-mode", choices=COMPILE_MODES,
                       help="with --compile: torch.compile's mode; reduce-overhead replays the nodes' forward and "
                            "backward as CUDA graphs, which removes the launch cost that dominates at small batches "
                            f"{default('compile_mode')}")
    group.add_argument("--deterministic", action=argparse.BooleanOptionalAction,
                       help="reproducible kernels, slower on CUDA; an operation without one stops the run "
                       f"{default('deterministic')}")
    add_progress_argument(parser)


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` and ``--device`` of a command that runs a trained graph, with the evaluation's defaults."""
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE,
                        help="images per batch (default: %(default)s, the batch size of evaluation during training)")
    add_device_argument(parser)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` of a command that runs a trained graph, with the training's default (auto)."""
    parser.add_argument("--device", default=defaults(TrainConfig)["device"],
                        help="auto, cpu, cuda or cuda:N (default: %(default)s)")


def check_inference_arguments(args: argparse.Namespace) -> None:
    """The checks of :func:`add_inference_arguments`' options that need no framework, before any run is loaded."""
    if args.batch_size < 1:
        raise KTGError(f"--batch-size must be at least 1, got {args.batch_size}")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: progress is bars on a terminal and one line per epoch (per trial in a search) in a log."""
    parser.add_argument("--no-progress", action="store_true", help="show no progress: no bars on a terminal, no "
                        "line per epoch or trial in a log")


def dataset_suggestions(search: bool = False) -> str:
    """What each dataset suggests where the user gives no value (:class:`ktg.data.DatasetDefaults`), for help
    texts: ``digits: batch_size 4, …; the others nothing``; with ``search``, the held-out fraction too."""
    parts, silent = [], []
    for name in list_datasets():
        suggested = dataset_defaults(name)
        values = {**suggested.train, **suggested.node_options,
                  **({"holdout": suggested.search_holdout} if search else {})}
        if values:
            parts.append(f"{name}: " + ", ".join(f"{key} {value}" for key, value in values.items()))
        else:
            silent.append(name)
    return "; ".join(parts + ([f"{', '.join(silent)}: nothing"] if silent else []))


def given_training(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~ktg.config.TrainConfig` fields the command line gave (options left out are absent)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if f.name != "recipe" and getattr(args, f.name, None) is not None}


def given_model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model options the command line gave for every node (``--width``, ``--pretrained``,
    ``--[no-]attention-residual``), without the recipe's."""
    given = {"base_width": args.width, "pretrained": args.pretrained, "attention_residual": args.attention_residual}
    return {key: value for key, value in given.items() if value is not None}


def training_plan_from_args(args: argparse.Namespace) -> TrainingPlan:
    """The run a ``ktg train`` command line describes (:func:`ktg.plan.plan_training`, the one rule)."""
    return plan_training(data_source_from_args(args), args.graph, nodes=args.nodes, model=args.model,
                         recipe=args.recipe, given=given_training(args), node_options=given_model_options(args))


def dataset_choices() -> str:
    """The names ``--dataset`` takes, for its help and its errors."""
    return f"one of {', '.join(list_datasets())}"


def data_source_from_args(args: argparse.Namespace) -> DataSource:
    """The :class:`ktg.data.DataSource` the data options describe, as saved with a run. ``--dataset`` has no
    default: one would read its own data whatever ``--data-root`` points at, without a word."""
    if args.dataset is None:
        raise KTGError(f"--dataset is required (--data-root alone does not say how to read it): {dataset_choices()}")
    record = dataset_record(args.dataset)  # an unknown name is the first thing a command reports
    if args.data_root is not None and not record.reads_root:
        raise KTGError(f"--data-root {args.data_root}: dataset {args.dataset!r} is built in and reads no folder; drop "
                       "--data-root")
    options = dict(args.dataset_option)
    if args.cache_dir is not None:
        options["cache_dir"] = str(args.cache_dir)
    return DataSource(args.dataset, str(args.data_root) if args.data_root else None, args.image_size, options)


def check_models(names: Iterable[str | None]) -> None:
    """Raise KTGError for a name that is not a registered model (None, a node left to the default, passes)."""
    for name in names:
        if name is not None:
            model_record(name)
