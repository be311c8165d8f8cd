"""Network nodes: a registry of models by name and one function that builds any of them.

A model is one :class:`ModelRecord`: its constructor, named as ``"module:function"`` and imported when a model
is built, and the torchvision ImageNet weights it can start from. This module imports no framework, so the
command line can list the models before it loads torch (the pattern of :mod:`ktg.registry`). A new model
registers its constructor with :func:`register_model`; whether a model has ImageNet weights is a property of
its record, so :func:`create_model` is the only place that loads pretrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ktg.errors import KTGError
from ktg.registry import FunctionRef, add_record, lazy_attributes, resolve

if TYPE_CHECKING:
    from torch import nn

    from ktg.models.abn_resnet import ABNOutput, ABNResNet  # noqa: F401
    from ktg.models.pretrained import LoadReport, load_backbone_weights, read_pretrained  # noqa: F401

#: Public names defined in the modules that import torch, imported from there when first used.
_LAZY = {"ABNOutput": "ktg.models.abn_resnet", "ABNResNet": "ktg.models.abn_resnet",
         "LoadReport": "ktg.models.pretrained", "load_backbone_weights": "ktg.models.pretrained",
         "read_pretrained": "ktg.models.pretrained"}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


ModelConstructor = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class ModelRecord:
    """A model a node can be.

    Attributes:
        name: the name graph files and ``--model`` use.
        constructor: ``fn(num_classes: int, **options) -> nn.Module``, as ``"module:function"`` or a callable.
        imagenet_weights: the torchvision weights (e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``) that
            ``pretrained="imagenet"`` loads; None for a model without them.
        options: the constructor's own keyword options beyond :data:`NODE_OPTIONS`, with their types.
    """

    name: str
    constructor: FunctionRef
    imagenet_weights: str | None = None
    options: Mapping[str, type] = field(default_factory=dict)


_MODELS: dict[str, ModelRecord] = {}


def _register(record: ModelRecord) -> ModelRecord:
    return add_record(_MODELS, record, "model")


def register_model(name: str, *, imagenet_weights: str | None = None,
                   options: Mapping[str, type] | None = None) -> Callable[[ModelConstructor], ModelConstructor]:
    """Register a constructor ``fn(num_classes: int, **options) -> nn.Module`` under ``name``.

    ``imagenet_weights`` names the torchvision weights (e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``) that
    ``pretrained="imagenet"`` loads; models without it take no pretrained weights. ``options``: the keyword
    options the constructor takes beyond :data:`NODE_OPTIONS`, with their types (checked before it is called).
    """

    def decorator(fn: ModelConstructor) -> ModelConstructor:
        _register(ModelRecord(name, fn, imagenet_weights, dict(options or {})))
        return fn

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def model_record(name: str) -> ModelRecord:
    """The record of model ``name``; KTGError naming the registered ones if there is none."""
    if name not in _MODELS:
        raise KTGError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _MODELS[name]


#: The options every model takes (:func:`create_model`'s keyword arguments), with their types: a graph file's node
#: "options" are checked against these and the model's own (:attr:`ModelRecord.options`) before a model is built.
NODE_OPTIONS: dict[str, type] = {"attention_residual": bool, "pretrained": str, "base_width": int}


def check_node_options(name: str | None, options: Mapping[str, Any], where: str = "options") -> None:
    """Raise KTGError naming ``where`` and the option unless every one of ``options`` is an option of model
    ``name`` (None: a model not chosen yet, which takes :data:`NODE_OPTIONS`) with a value of its type (``null``
    for ``pretrained`` and ``base_width`` keeps the model's default; ``base_width`` is at least 1)."""
    accepted = {**NODE_OPTIONS, **(model_record(name).options if name is not None else {})}
    for key, value in options.items():
        if key not in accepted:
            raise KTGError(f"{where}.{key}: model {name or 'of the node'} takes no option {key!r}; its options are: "
                           f"{', '.join(accepted)}")
        kind = accepted[key]
        if value is None and key in ("pretrained", "base_width"):
            continue
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise KTGError(f"{where}.{key}: expected {_KIND_NAMES.get(kind, kind.__name__)}, got "
                           f"{type(value).__name__} {value!r}")
        if key == "base_width" and value < 1:
            raise KTGError(f"{where}.base_width: must be at least 1, got {value}")


_KIND_NAMES = {bool: "true or false", str: "a string", int: "an integer", float: "a number"}


def create_model(
    name: str,
    num_classes: int,
    *,
    attention_residual: bool = True,
    pretrained: str | None = None,
    base_width: int | None = None,
    **options,
) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` outputs per branch.

    Args:
        name: one of :func:`list_models`.
        num_classes: C, the width of both logit vectors.
        attention_residual: perception input (1 + M)·g when True (official ABN), M·g when False.
        pretrained: ``None`` (random initialisation), ``"imagenet"`` (torchvision's weights, from the
            torch hub cache or the internet) or the path of a local state-dict file. Keys that do not
            fit are reported on the ``ktg`` logger (see :func:`load_backbone_weights`).
        base_width: channels of the first stage; ``None`` keeps the model's default (64 ImageNet style,
            16 CIFAR style).
        **options: further keyword arguments of the constructor.

    Raises:
        KTGError: unknown name, pretrained weights for a model that has none, or weights that cannot be read.
    """
    record = model_record(name)
    check_node_options(name, {"attention_residual": attention_residual, "pretrained": pretrained,
                              "base_width": base_width, **options})
    if pretrained is not None and record.imagenet_weights is None:
        with_weights = [known for known in list_models() if _MODELS[known].imagenet_weights is not None]
        raise KTGError(f"model {name!r} takes no pretrained weights; models that do: {', '.join(with_weights)}")
    if base_width is not None:
        options["base_width"] = base_width
    model = resolve(record.constructor)(num_classes, attention_residual=attention_residual, **options)
    if pretrained is not None:
        from ktg.models.pretrained import load_backbone_weights, read_pretrained

        state_dict = read_pretrained(pretrained, record.imagenet_weights)
        load_backbone_weights(model, state_dict, source=f"{pretrained!r} into {name}")
    return model


# -- the built-in models ---------------------------------------------------------------------------------------

for _depth in (18, 34, 50, 101, 152):  # ImageNet style
    _register(ModelRecord(f"abn_resnet{_depth}", f"ktg.models.abn_resnet:abn_resnet{_depth}",
                          f"ResNet{_depth}_Weights.IMAGENET1K_V1"))
for _depth in (20, 32, 56, 110):  # CIFAR style
    _register(ModelRecord(f"abn_resnet{_depth}", f"ktg.models.abn_resnet:abn_resnet{_depth}"))

__all__ = [
    "ABNOutput",
    "ABNResNet",
    "LoadReport",
    "ModelRecord",
    "NODE_OPTIONS",
    "check_node_options",
    "create_model",
    "list_models",
    "load_backbone_weights",
    "model_record",
    "read_pretrained",
    "register_model",
]
