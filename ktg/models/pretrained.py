"""Pretrained backbone weights for ABN-ResNets: torchvision's ImageNet weights or a local state-dict file.

A backbone state dict (a plain torchvision ResNet's) fills every tensor whose key and shape match; the
attention branch's copy of the last stage is filled from that stage. Nothing is dropped quietly: every
key that was not loaded is named in a :class:`LoadReport` and in a warning on the ``ktg`` logger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ktg.errors import KTGError

if TYPE_CHECKING:
    from ktg.models.abn_resnet import ABNResNet

log = logging.getLogger("ktg")

IMAGENET = "imagenet"
"""The ``pretrained`` value that selects the registered model's torchvision ImageNet weights."""


@dataclass
class LoadReport:
    """What :func:`load_backbone_weights` did with each key.

    Attributes:
        loaded: model keys that received a tensor (attention-stage keys included when filled from the
            perception stage).
        skipped_shape: keys present in both whose shapes differ (e.g. ``fc`` for another class count);
            the model keeps its initialisation there.
        missing: model keys the state dict had no tensor for (the attention head, for a plain ResNet).
        unexpected: state-dict keys the model has no place for.
    """

    loaded: list[str] = field(default_factory=list)
    skipped_shape: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: how many keys were loaded, then every key that was not."""
        parts = [f"loaded {len(self.loaded)} tensors"]
        for title, keys in (
            ("skipped (shape differs, kept at initialisation)", self.skipped_shape),
            ("missing (kept at initialisation)", self.missing),
            ("unexpected (unused)", self.unexpected),
        ):
            if keys:
                parts.append(f"{title}: {', '.join(keys)}")
        return "; ".join(parts)


def read_pretrained(pretrained: str, imagenet_weights: str) -> dict[str, torch.Tensor]:
    """The state dict that ``pretrained`` names.

    Args:
        pretrained: ``"imagenet"`` for torchvision's weights, otherwise the path of a local file holding a
            state dict, plainly or under a ``"state_dict"`` or ``"model"`` key.
        imagenet_weights: the torchvision weights enum name to use for ``"imagenet"``,
            e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``.

    Raises:
        KTGError: the weights cannot be fetched, the file is missing or unreadable, or it holds no state dict.
    """
    if pretrained == IMAGENET:
        import torchvision  # only here: importing it costs a process about 1.6 s (see ktg.models.abn_resnet)

        weights = torchvision.models.get_weight(imagenet_weights)
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
        try:
            # torchvision reads its cache before it tries the network, so a copy placed there works offline.
            return weights.get_state_dict(progress=True, map_location="cpu", weights_only=True)
        except Exception as err:  # network errors, a truncated cache file, ...: all mean "not available"
            raise KTGError(
                f"cannot load torchvision's {imagenet_weights} weights ({err}); without internet, "
                f"copy {weights.url} to {cached} or pass pretrained=<path of a local state-dict file>"
            ) from err
    if not os.path.isfile(pretrained):
        raise KTGError(
            f"pretrained weights file not found: {pretrained} (use pretrained='{IMAGENET}' for torchvision's weights)"
        )
    try:
        checkpoint = torch.load(pretrained, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a file that is not a tensor checkpoint
        raise KTGError(f"cannot read pretrained weights from {pretrained}: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping) or not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise KTGError(f"{pretrained} holds no state dict (a mapping of names to tensors)")
    return dict(checkpoint)


def load_backbone_weights(model: ABNResNet, state_dict: Mapping[str, torch.Tensor],
                          source: str = "state dict") -> LoadReport:
    """Copy the tensors of ``state_dict`` into ``model`` where key and shape match, and report the rest.

    The attention branch's stage (``att_layer4``/``att_layer3``) takes its own keys when the state dict has
    them (an ABN checkpoint) and otherwise the perception stage's (a plain ResNet), so both branches start
    from the same pretrained features. The report is also logged on the ``ktg`` logger, as a warning when
    any key was skipped, missing or unexpected; ``source`` names the weights in that message.

    Raises:
        KTGError: not one parameter matched, so the weights belong to another architecture or width.
    """
    own = model.state_dict()
    report = LoadReport()
    selected: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    attention_prefix = f"{model.attention_stage}."
    for key, target in own.items():
        source_key = key
        if key not in state_dict and key.startswith(attention_prefix):
            source_key = f"{model.perception_stage}.{key[len(attention_prefix):]}"
        if source_key not in state_dict:
            report.missing.append(key)
            continue
        used.add(source_key)
        if state_dict[source_key].shape != target.shape:
            report.skipped_shape.append(key)
            continue
        selected[key] = state_dict[source_key]
        report.loaded.append(key)
    report.unexpected = [key for key in state_dict if key not in used]

    # Counters such as BatchNorm's num_batches_tracked fit any model; only a parameter shows the weights do.
    if not any(name in selected for name, _ in model.named_parameters()):
        raise KTGError(f"no parameter of {source} fits the model: {report.summary()}")
    model.load_state_dict(selected, strict=False)
    message = f"pretrained weights from {source}: {report.summary()}"
    if report.skipped_shape or report.missing or report.unexpected:
        log.warning(message)
    else:
        log.info(message)
    return report
