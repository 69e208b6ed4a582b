"""Image transforms: two augmented views for training, one deterministic view for embedding."""

from __future__ import annotations

from typing import Any

import torchvision.transforms as T
from lightly.transforms import MoCoV2Transform
from lightly.transforms.utils import IMAGENET_NORMALIZE

GRAY_NORMALIZE = {"mean": [0.5], "std": [0.5]}


def normalization(channels: int) -> dict[str, list[float]]:
    """ImageNet statistics for colour images; a plain centring for 1-channel ones."""
    return IMAGENET_NORMALIZE if channels == 3 else GRAY_NORMALIZE


def train_transform(aug: Any, image_size: int, channels: int) -> MoCoV2Transform:
    """lightly's MoCo v2 two-view transform with the `augment` config's strengths."""
    rotation = float(aug.rotation)
    return MoCoV2Transform(
        input_size=image_size,
        cj_prob=float(aug.color_jitter),
        cj_strength=float(aug.jitter_strength),
        min_scale=float(aug.min_scale),
        random_gray_scale=float(aug.grayscale),
        gaussian_blur=float(aug.blur),
        hf_prob=float(aug.hflip),
        rr_prob=1.0 if rotation > 0 else 0.0,
        rr_degrees=rotation if rotation > 0 else None,
        normalize=normalization(channels),
    )


def eval_transform(image_size: int, channels: int) -> T.Compose:
    """Resize (with the usual 256/224 margin for large images) and centre-crop."""
    resize = image_size if image_size <= 32 else round(image_size * 256 / 224)
    norm = normalization(channels)
    return T.Compose([
        T.Resize(resize),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(mean=norm["mean"], std=norm["std"]),
    ])
