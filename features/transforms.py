"""Image transforms: two augmented views for training, one deterministic view for embedding.

The views are lightly's MoCo v2 views. For handwriting, the `augment` config can put a
random stroke-width change, shear and shift in front of them: pen width and slant vary most
between two drawings of the same digit, so the encoder is taught to ignore them (what each
did to the MNIST features: docs/features.md, "Measured").
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision.transforms as T
from lightly.transforms import MoCoV2Transform
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image, ImageFilter

GRAY_NORMALIZE = {"mean": [0.5], "std": [0.5]}


def normalization(channels: int) -> dict[str, list[float]]:
    """ImageNet statistics for colour images; a plain centring for 1-channel ones."""
    return IMAGENET_NORMALIZE if channels == 3 else GRAY_NORMALIZE


class RandomStroke:
    """With probability `p`, thicken (3x3 max filter) or thin (3x3 min filter) the strokes.

    Assumes light strokes on a dark background, as the digits are.
    """

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        draw = torch.rand(2).tolist()  # torch's RNG, seeded like torchvision's transforms
        if draw[0] >= self.p:
            return image
        grow = draw[1] < 0.5
        return image.filter(ImageFilter.MaxFilter(3) if grow else ImageFilter.MinFilter(3))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def shape_transforms(aug: Any) -> list[Any]:
    """The optional shear / shift / stroke-width steps, in front of each MoCo view."""
    steps: list[Any] = []
    shear, shift = float(aug.shear), float(aug.translate)
    if shear > 0 or shift > 0:
        steps.append(T.RandomAffine(degrees=0, translate=(shift, shift) if shift > 0 else None,
                                    shear=(-shear, shear, -shear, shear) if shear > 0 else None,
                                    interpolation=T.InterpolationMode.BILINEAR))
    if aug.stroke > 0:
        steps.append(RandomStroke(float(aug.stroke)))
    return steps


def train_transform(aug: Any, image_size: int, channels: int) -> MoCoV2Transform:
    """lightly's MoCo v2 two-view transform with the `augment` config's strengths."""
    rotation = float(aug.rotation)
    transform = MoCoV2Transform(
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
    steps = shape_transforms(aug)
    if steps:
        transform.transforms = [T.Compose([*steps, view]) for view in transform.transforms]
    return transform


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
