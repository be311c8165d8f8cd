"""Attention Branch Networks on ResNet backbones (``docs/method.md#nodes``), ImageNet style and CIFAR style.

Both styles are one class, :class:`ABNResNet`: a shared trunk (stem and all stages but the last), an
attention branch built on a stride-1 copy of the last stage, and a perception branch that runs the last
stage on the trunk's features weighted by the attention map. Module names follow torchvision's ResNet
(``conv1, bn1, relu, maxpool, layer1.., fc``) so torchvision state dicts load by key.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import torch
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3×3 convolution without bias that keeps the size at stride 1."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 1×1 convolution without bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


# The two residual blocks of He et al. (2016), written here rather than imported from torchvision: importing
# torchvision imports torch._dynamo (about 1.6 s on this project's CPU machine), which a process that evaluates,
# predicts or exports would pay for before its first image (a training process imports it anyway, with its
# torch.optim optimizer). Their module names and the order in which they create their parameters are torchvision's,
# so torchvision's ResNet weights load by key and a seed initialises the same weights.


class BasicBlock(nn.Module):
    """Two 3×3 convolutions (the first strides) and a shortcut; ``downsample`` projects the shortcut when the
    shapes differ. Output channels: ``planes``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strides, as in torchvision's "ResNet v1.5"), 1×1 expand by 4, and a shortcut; ``downsample``
    projects the shortcut when the shapes differ. Output channels: ``4 · planes``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


class ABNOutput(NamedTuple):
    """What an ABN returns for a batch of B images and C classes.

    Attributes:
        att_logits: B×C attention-branch logits (``z_att``).
        logits: B×C perception-branch logits (``z``).
        attention: B×1×H×W attention map ``M`` in [0, 1] (sigmoid output), float32 even under autocast (see
            :meth:`ABNResNet.attention_map`); H×W is the trunk's output resolution (14×14 at 224 input,
            ImageNet style; 16×16 at 32 input, CIFAR style).
    """

    att_logits: torch.Tensor
    logits: torch.Tensor
    attention: torch.Tensor


def _make_stage(block: Block, inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` residual blocks of width ``planes``, the first one striding by ``stride``.

    The first block projects its shortcut (1×1 conv + BN) whenever its input and output shapes differ,
    with torchvision's module layout so that pretrained weights keep their keys.
    """
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_channels:
        downsample = nn.Sequential(conv1x1(inplanes, out_channels, stride), nn.BatchNorm2d(out_channels))
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ABNResNet(nn.Module):
    """An Attention Branch Network on a ResNet (Fukui et al., CVPR 2019; ``docs/method.md#nodes``).

    Args:
        block: the residual block type, :class:`BasicBlock` or :class:`Bottleneck`.
        stage_blocks: blocks per stage; the last stage is the one the attention branch copies
            (4 stages ImageNet style, 3 stages CIFAR style).
        num_classes: C, the number of classes of both branches.
        stem: ``"imagenet"`` (7×7/2 conv + 3×3/2 max-pool) or ``"cifar"`` (3×3/1 conv, no pooling).
        base_width: channels of the first stage; stage i has ``base_width · 2^i`` (times the block's expansion).
        attention_residual: perception input g' = (1 + M)·g when True (official ABN), M·g when False
            (what the ensemble-KTG public code trains).

    Attributes:
        perception_stage: the name of the last stage (``"layer4"`` or ``"layer3"``).
        attention_stage: the name of its stride-1 copy in the attention branch (``"att_layer4"`` or ``"att_layer3"``).
    """

    def __init__(
        self,
        block: Block,
        stage_blocks: Sequence[int],
        num_classes: int,
        *,
        stem: Literal["imagenet", "cifar"],
        base_width: int,
        attention_residual: bool = True,
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if len(stage_blocks) < 2:
            raise ValueError(f"an ABN needs at least two stages, got {len(stage_blocks)}")
        self.attention_residual = attention_residual

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, base_width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        # CIFAR's 32×32 images enter the first stage at full resolution.
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        widths = [base_width * 2**index for index in range(len(stage_blocks))]
        inplanes = base_width
        trunk = []
        for index, (width, blocks) in enumerate(zip(widths[:-1], stage_blocks[:-1]), start=1):
            trunk.append(f"layer{index}")
            self.add_module(trunk[-1], _make_stage(block, inplanes, width, blocks, stride=1 if index == 1 else 2))
            inplanes = width * block.expansion
        # Stage names, not module references: a module held twice would appear twice in the state dict.
        self.trunk_stages = tuple(trunk)
        self.perception_stage = f"layer{len(stage_blocks)}"
        self.attention_stage = f"att_{self.perception_stage}"
        self.add_module(self.perception_stage, _make_stage(block, inplanes, widths[-1], stage_blocks[-1], stride=2))
        # Stride 1 keeps the attention map at the trunk's resolution, fine enough to point at object parts.
        self.add_module(self.attention_stage, _make_stage(block, inplanes, widths[-1], stage_blocks[-1], stride=1))

        features = widths[-1] * block.expansion
        self.bn_att = nn.BatchNorm2d(features)
        self.att_conv = conv1x1(features, num_classes)
        self.bn_att2 = nn.BatchNorm2d(num_classes)
        self.att_conv2 = conv1x1(num_classes, num_classes)
        self.att_conv3 = nn.Conv2d(num_classes, 1, kernel_size=3, padding=1, bias=False)
        self.bn_att3 = nn.BatchNorm2d(1)
        self.fc = nn.Linear(features, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> ABNOutput:
        """Both branches on a B×3×H×W float batch (any memory format)."""
        g = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.trunk_stages:
            g = getattr(self, name)(g)

        a = self.bn_att(getattr(self, self.attention_stage)(g))
        a = self.relu(self.bn_att2(self.att_conv(a)))
        att_logits = global_average(self.att_conv2(a))
        attention = self.attention_map(a)

        # The perception branch weights the trunk's features at the trunk's precision; only the crops need fp32.
        weight = attention.to(g.dtype)
        g = g * (1 + weight) if self.attention_residual else g * weight
        z = getattr(self, self.perception_stage)(g)
        logits = self.fc(global_average(z))
        return ABNOutput(att_logits, logits, attention)

    def attention_map(self, a: torch.Tensor) -> torch.Tensor:
        """The attention map M = σ(BN(conv3×3(a))) of the head's B×C×H×W features ``a``: B×1×H×W, float32.

        Computed in float32 under any autocast. The argmax of M centres the attention crops
        (docs/method.md#attention-crops), and in bf16 values in [0.5, 1) lie 2⁻⁸ apart and everything above
        about 0.998 rounds to 1: peaks would tie on plateaus and the argmax would jump to the plateau's first
        position.
        """
        with torch.autocast(a.device.type, enabled=False):
            return torch.sigmoid(self.bn_att3(self.att_conv3(a.float())))


def global_average(x: torch.Tensor) -> torch.Tensor:
    """B×C×H×W → B×C. A mean rather than adaptive average pooling, whose CUDA backward has no deterministic
    kernel, so ``--deterministic`` runs repeat exactly on a GPU too."""
    return x.mean(dim=(2, 3))


def _imagenet_abn(
    block: Block, stage_blocks: Sequence[int], num_classes: int, *, base_width: int = 64,
    attention_residual: bool = True,
) -> ABNResNet:
    return ABNResNet(
        block, stage_blocks, num_classes, stem="imagenet", base_width=base_width, attention_residual=attention_residual
    )


def _cifar_abn(depth: int, num_classes: int, *, base_width: int = 16, attention_residual: bool = True) -> ABNResNet:
    # He et al.'s CIFAR ResNets: depth = 6n + 2 (stem conv, 3 stages of n two-conv blocks, fc).
    blocks = (depth - 2) // 6
    return ABNResNet(
        BasicBlock, (blocks,) * 3, num_classes, stem="cifar", base_width=base_width,
        attention_residual=attention_residual,
    )


def abn_resnet18(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-18, ImageNet style (BasicBlock ×2-2-2-2). Options: ``base_width``, ``attention_residual``."""
    return _imagenet_abn(BasicBlock, (2, 2, 2, 2), num_classes, **options)


def abn_resnet34(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-34, ImageNet style (BasicBlock ×3-4-6-3). Options: ``base_width``, ``attention_residual``."""
    return _imagenet_abn(BasicBlock, (3, 4, 6, 3), num_classes, **options)


def abn_resnet50(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-50, ImageNet style (Bottleneck ×3-4-6-3). Options: ``base_width``, ``attention_residual``."""
    return _imagenet_abn(Bottleneck, (3, 4, 6, 3), num_classes, **options)


def abn_resnet101(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-101, ImageNet style (Bottleneck ×3-4-23-3). Options: ``base_width``, ``attention_residual``."""
    return _imagenet_abn(Bottleneck, (3, 4, 23, 3), num_classes, **options)


def abn_resnet152(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-152, ImageNet style (Bottleneck ×3-8-36-3). Options: ``base_width``, ``attention_residual``."""
    return _imagenet_abn(Bottleneck, (3, 8, 36, 3), num_classes, **options)


def abn_resnet20(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-20, CIFAR style (3 stages of 3 BasicBlocks). Options: ``base_width``, ``attention_residual``."""
    return _cifar_abn(20, num_classes, **options)


def abn_resnet32(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-32, CIFAR style (3 stages of 5 BasicBlocks). Options: ``base_width``, ``attention_residual``."""
    return _cifar_abn(32, num_classes, **options)


def abn_resnet56(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-56, CIFAR style (3 stages of 9 BasicBlocks). Options: ``base_width``, ``attention_residual``."""
    return _cifar_abn(56, num_classes, **options)


def abn_resnet110(num_classes: int, **options) -> ABNResNet:
    """ABN-ResNet-110, CIFAR style (3 stages of 18 BasicBlocks). Options: ``base_width``, ``attention_residual``."""
    return _cifar_abn(110, num_classes, **options)
