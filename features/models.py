"""The encoder: a torchvision ResNet trunk plus lightly's MoCo v2 projection head.

Only the glue lives here: the stem is swapped for small images (a 3x3 stride-1 conv and
no max-pool, as CIFAR-style ResNets do, so 28 px digits are not shrunk to 7 px at once)
and for 1-channel input, and the stage widths can be narrowed for CPU budgets by rebuilding
the stages with torchvision's own blocks.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from lightly.models.modules import MoCoProjectionHead
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

SMALL_IMAGE_MAX = 32
_BLOCKS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}


def use_small_stem(small_images: bool | None, image_size: int) -> bool:
    """Auto (None) picks the small-image stem for inputs of at most 32 px."""
    return image_size <= SMALL_IMAGE_MAX if small_images is None else bool(small_images)


def _init_weights(net: nn.Module) -> None:
    """torchvision's ResNet initialisation, re-applied to the replaced layers."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_backbone(name: str, width: int = 64, in_channels: int = 3,
                   small_images: bool = False) -> tuple[nn.Module, int]:
    """A torchvision ResNet without its classifier; returns (trunk, feature size)."""
    net = getattr(torchvision.models, name)(weights=None)
    block, layers = _BLOCKS[name]
    if small_images:
        net.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
    if width != 64:
        net.bn1 = nn.BatchNorm2d(width)
        net.inplanes = width
        net.layer1 = net._make_layer(block, width, layers[0])
        net.layer2 = net._make_layer(block, width * 2, layers[1], stride=2)
        net.layer3 = net._make_layer(block, width * 4, layers[2], stride=2)
        net.layer4 = net._make_layer(block, width * 8, layers[3], stride=2)
    _init_weights(net)
    net.fc = nn.Identity()
    return net, width * 8 * block.expansion


class MoCoEncoder(nn.Module):
    """Backbone + projection head; `embed` returns either, for the embedding stage."""

    def __init__(self, backbone: nn.Module, feature_dim: int, hidden_dim: int,
                 output_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = MoCoProjectionHead(feature_dim, hidden_dim, output_dim)
        self.feature_dim = feature_dim
        self.output_dim = output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).flatten(1))

    def embed(self, x: torch.Tensor, output: str = "backbone") -> torch.Tensor:
        features = self.backbone(x).flatten(1)
        return features if output == "backbone" else self.head(features)


def build_encoder(model_cfg: Any, in_channels: int, image_size: int) -> MoCoEncoder:
    """The encoder the `model` config section describes, for the given input."""
    small = use_small_stem(model_cfg.small_images, image_size)
    backbone, dim = build_backbone(model_cfg.backbone, int(model_cfg.width), in_channels, small)
    hidden = int(model_cfg.head_hidden_dim or dim)
    return MoCoEncoder(backbone, dim, hidden, int(model_cfg.head_output_dim))
