"""Structured (omegaconf) schema of the MoCo feature stage: data, model, augment, train, embed.

Every key has a default, so a YAML file only states what differs; `check_config` rejects
values the code cannot honour before any work starts. The pipeline nests this schema under
`features`, so keep it importable as `from features.config import FeaturesConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from data.errors import ConfigError
from data.source_names import SOURCES, SPLITS

BACKBONES = ("resnet18", "resnet50")
OPTIMIZERS = ("sgd", "adamw")
OUTPUTS = ("backbone", "head")


@dataclass
class DataConfig:
    """Which images: the built-in digits, an ImageFolder tree or an ImageNet class subset."""

    source: str = "mnist"  # mnist | imagefolder | imagenet
    root: str | None = None  # imagefolder: <root>/<class>/*; imagenet: <root>/<split>/<wnid>/*
    subset_file: str | None = None  # imagenet: lines `wnid name`; None: data/imagenet_50.txt
    split: str = "train"  # imagenet: train | val
    imbalance: Any = None  # [fraction per class] or {class: fraction}; subsampled with `seed`
    image_size: int | None = None  # None: 28 for mnist, 224 for image files
    seed: int = 0  # digit shuffle and imbalance subsampling


@dataclass
class ModelConfig:
    """Encoder: a torchvision ResNet plus lightly's MoCo v2 projection head."""

    backbone: str = "resnet18"  # resnet18 | resnet50
    width: int = 64  # channels of the first stage (64 = torchvision's ResNet; 32 is 4x cheaper)
    small_images: bool | None = None  # 3x3 stem, no max-pool; None: auto for <= 32 px inputs
    head_hidden_dim: int | None = None  # None: the backbone's feature size (MoCo v2)
    head_output_dim: int = 128


@dataclass
class AugmentConfig:
    """Two random views per image (lightly's MoCoV2Transform); defaults are MoCo v2's."""

    min_scale: float = 0.2  # random resized crop scale (min_scale, 1)
    hflip: float = 0.5  # probability of a horizontal flip (0 for digits)
    color_jitter: float = 0.8  # probability of colour jitter (0 for grayscale)
    jitter_strength: float = 1.0
    grayscale: float = 0.2  # probability of converting to grayscale
    blur: float = 0.5  # probability of Gaussian blur
    rotation: float = 0.0  # random rotation by up to +-degrees (0: none)
    shear: float = 0.0  # random shear by up to +-degrees in x and y (0: none; slant of digits)
    translate: float = 0.0  # random shift by up to this fraction of the size (0: none)
    stroke: float = 0.0  # probability of thickening or thinning strokes (3x3 max/min filter)


@dataclass
class TrainConfig:
    """Optimisation of the query encoder; the key encoder follows by momentum."""

    epochs: int = 200
    batch_size: int = 256  # per process
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.03
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    warmup_epochs: float = 0.0  # linear LR warm-up before the cosine decay
    min_lr_ratio: float = 0.0  # the cosine decays the LR to lr * min_lr_ratio
    momentum_start: float = 0.99  # key-encoder EMA momentum, cosine schedule to momentum_end
    momentum_end: float = 1.0
    memory_bank_size: int = 65536  # negatives kept from earlier batches (0: in-batch only)
    temperature: float = 0.2
    symmetric: bool = False  # also score view 2's query against view 1's key (twice the work)
    num_workers: int = 4
    device: str | None = None  # None: cuda if available, else cpu
    amp: bool = True  # mixed precision (CUDA only)
    channels_last: bool = True  # faster convolutions on CPU and recent GPUs
    max_steps: int | None = None  # stop after this many optimizer steps in all (tests, smoke)
    seed: int = 0


@dataclass
class EmbedConfig:
    """What is written per image after training."""

    output: str = "backbone"  # backbone (pooled features) | head (projection, e.g. 128-D)
    normalize: bool = True  # L2-normalise each row
    batch_size: int = 256
    num_workers: int = 2


@dataclass
class FeaturesConfig:
    """The whole MoCo feature stage."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}: use one of {', '.join(allowed)}")


def _positive(name: str, value: Any) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{name}={value}: must be > 0")


def check_config(cfg: DictConfig) -> None:
    """Refuse values the code cannot honour, naming the key."""
    _choice("data.source", cfg.data.source, SOURCES)
    _choice("data.split", cfg.data.split, SPLITS)
    _choice("model.backbone", cfg.model.backbone, BACKBONES)
    _choice("train.optimizer", cfg.train.optimizer, OPTIMIZERS)
    _choice("embed.output", cfg.embed.output, OUTPUTS)
    for key in ("data.image_size", "model.width", "model.head_hidden_dim",
                "model.head_output_dim", "train.batch_size", "train.lr", "train.temperature",
                "train.max_steps", "embed.batch_size"):
        _positive(key, OmegaConf.select(cfg, key))
    if cfg.train.epochs < 0 or cfg.train.memory_bank_size < 0 or cfg.train.num_workers < 0:
        raise ConfigError("train.epochs, train.memory_bank_size and train.num_workers must "
                          "be >= 0")
    if not 0 <= cfg.train.momentum_start <= cfg.train.momentum_end <= 1:
        raise ConfigError("need 0 <= train.momentum_start <= train.momentum_end <= 1")
    a = cfg.augment
    for key, ok, bounds in (("shear", 0 <= a.shear < 90, "[0, 90) degrees"),
                            ("translate", 0 <= a.translate < 1, "[0, 1)"),
                            ("stroke", 0 <= a.stroke <= 1, "[0, 1]")):
        if not ok:
            raise ConfigError(f"augment.{key}={a[key]}: must lie in {bounds}")
    if not 0 < cfg.augment.min_scale <= 1:
        raise ConfigError(f"augment.min_scale={cfg.augment.min_scale}: must lie in (0, 1]")


def as_config(cfg: Any) -> DictConfig:
    """A checked DictConfig from a FeaturesConfig, a DictConfig or a plain dict."""
    try:
        if isinstance(cfg, FeaturesConfig):
            out = OmegaConf.structured(cfg)
        else:
            out = OmegaConf.merge(OmegaConf.structured(FeaturesConfig), cfg)
    except Exception as exc:
        raise ConfigError(f"features config: {str(exc).splitlines()[0]}") from exc
    check_config(out)
    return out


def load_features_config(files: list[str], overrides: list[str]) -> DictConfig:
    """YAML files then `key=value` overrides on the schema, checked."""
    from data.config import load_config

    cfg = load_config(FeaturesConfig, files, overrides)
    check_config(cfg)
    return cfg
