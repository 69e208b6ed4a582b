"""The pipeline's config schema and its composition: base.yaml + experiment file + CLI.

`configs/base.yaml` (looked up next to the experiment file, else in the repository's
`configs/`) holds shared defaults; the experiment file overrides it; `key=value` arguments
override both. Every section is a dataclass, so an unknown key is a ConfigError that names
it (see `data.config.load_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clustering.config import AlternationConfig, DeepDPMConfig
from data.config import load_config
from data.errors import ConfigError, DataNotFoundError
from features.config import FeaturesConfig

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE_NAME = "base.yaml"


@dataclass
class FeaturesStageConfig(FeaturesConfig):
    """MoCo settings plus the shortcut of importing pre-computed embeddings instead."""

    embeddings: str | None = None  # .npy/.pt/.npz of N x D features; skips MoCo when set
    labels: str | None = None  # optional ground truth for the imported embeddings
    embeddings_key: str | None = None  # array name inside a .npz / dict-of-tensors .pt


@dataclass
class ReportConfig:
    """What the report draws."""

    samples_per_cluster: int = 10  # images per row of the samples grid (0: no grid)
    max_grid_clusters: int = 20  # rows of the grid: the largest clusters
    seed: int = 0  # which members are drawn for the grid
    dpi: int = 120


@dataclass
class WandbConfig:
    """Weights & Biases: offline by default, so no account or network is needed."""

    mode: str | None = None  # offline | online | disabled; None: $WANDB_MODE, else offline
    project: str = "deepdpm"
    entity: str | None = None
    group: str | None = None  # None: the experiment name


@dataclass
class PipelineConfig:
    """The whole experiment: one section per stage plus tracking."""

    experiment: str | None = None  # None: the experiment file's name without .yaml
    output_dir: str = "outputs"  # stages write to <output_dir>/<experiment>/<stage>/
    features: FeaturesStageConfig = field(default_factory=FeaturesStageConfig)
    cluster: DeepDPMConfig = field(default_factory=DeepDPMConfig)
    alternate: AlternationConfig = field(default_factory=AlternationConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def config_files(experiment_file: str | Path) -> list[Path]:
    """base.yaml (next to the experiment file, else the repository's) then the file."""
    path = Path(experiment_file)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: config file not found")
    files = []
    for base in (path.parent / BASE_NAME, REPO_CONFIGS / BASE_NAME):
        if base.is_file():
            if base.resolve() != path.resolve():
                files.append(base)
            break
    return [*files, path]


def load_pipeline_config(experiment_file: str | Path,
                         overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose and validate; fill in the experiment name from the file name."""
    cfg = load_config(PipelineConfig, config_files(experiment_file), list(overrides))
    if not cfg.experiment:
        cfg.experiment = Path(experiment_file).stem
    name = str(cfg.experiment)
    if "/" in name or name in (".", ".."):
        raise ConfigError(f"experiment name {name!r} must be a plain folder name")
    return cfg


def section(cfg: DictConfig, key: str) -> Any:
    """A config section as its dataclass instance (what the packages' APIs take)."""
    return OmegaConf.to_object(cfg[key])


def plain(cfg: DictConfig, key: str) -> dict[str, Any]:
    """A config section as a plain dict (for hashing and keyword arguments)."""
    return OmegaConf.to_container(cfg[key], resolve=True)  # type: ignore[return-value]
