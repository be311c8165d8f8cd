"""Network nodes: a registry of model constructors by name and one function that builds any of them.

Constructors register themselves with :func:`register_model`; whether a model has ImageNet weights is a
property of its registry entry, so :func:`create_model` is the only place that loads pretrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ktg.errors import KTGError
from ktg.models.pretrained import LoadReport, load_backbone_weights, read_pretrained

ModelConstructor = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Entry:
    constructor: ModelConstructor
    imagenet_weights: str | None


_MODELS: dict[str, _Entry] = {}


def register_model(name: str, *, imagenet_weights: str | None = None) -> Callable[[ModelConstructor], ModelConstructor]:
    """Register a constructor ``fn(num_classes: int, **options) -> nn.Module`` under ``name``.

    ``imagenet_weights`` names the torchvision weights (e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``) that
    ``pretrained="imagenet"`` loads; models without it take no pretrained weights.
    """

    def decorator(fn: ModelConstructor) -> ModelConstructor:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = _Entry(fn, imagenet_weights)
        return fn

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


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
    entry = _MODELS.get(name)
    if entry is None:
        raise KTGError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    if pretrained is not None and entry.imagenet_weights is None:
        with_weights = [known for known in list_models() if _MODELS[known].imagenet_weights is not None]
        raise KTGError(f"model {name!r} takes no pretrained weights; models that do: {', '.join(with_weights)}")
    if base_width is not None:
        options["base_width"] = base_width
    try:
        model = entry.constructor(num_classes, attention_residual=attention_residual, **options)
    except TypeError as error:
        # Options usually come from a graph file's node "options": name the culprit instead of a traceback.
        if "unexpected keyword argument" not in str(error):
            raise
        raise KTGError(f"model {name!r} does not take that option ({error}); check the node options") from None
    if pretrained is not None:
        state_dict = read_pretrained(pretrained, entry.imagenet_weights)
        load_backbone_weights(model, state_dict, source=f"{pretrained!r} into {name}")
    return model


# Built-in models register themselves on import; they need register_model, defined above.
from ktg.models.abn_resnet import ABNOutput, ABNResNet  # noqa: E402

__all__ = [
    "ABNOutput",
    "ABNResNet",
    "LoadReport",
    "create_model",
    "list_models",
    "load_backbone_weights",
    "read_pretrained",
    "register_model",
]
