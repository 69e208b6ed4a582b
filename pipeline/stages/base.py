"""What a stage is: a name, the config it depends on, its upstream stages and a run
function that writes its outputs into its own folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from clustering.distributed import World, shard_bounds
from data.errors import DataNotFoundError
from pipeline.manifest import read_manifest
from pipeline.tracking import Tracker


@dataclass
class StageResult:
    """Files the stage wrote (relative to its folder) and named artifacts for downstream."""

    outputs: list[str]
    artifacts: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    """Shared state of one pipeline run."""

    cfg: DictConfig
    root: Path  # outputs/<experiment>
    tracker: Tracker
    config_path: Path

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def manifest(self, name: str) -> dict[str, Any]:
        """A finished upstream stage's manifest (the caller has checked it exists)."""
        manifest = read_manifest(self.stage_dir(name))
        if manifest is None:
            raise DataNotFoundError(f"{self.stage_dir(name)}: the {name} stage has not finished")
        return manifest


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline; `config` returns what its config hash covers."""

    name: str
    run: Callable[[StageContext, Path], StageResult]
    config: Callable[[DictConfig], Any]
    requires: Callable[[DictConfig], tuple[str, ...]] = lambda cfg: ()
    extra_inputs: Callable[[DictConfig], dict[str, Any]] = lambda cfg: {}
    enabled: Callable[[DictConfig], bool] = lambda cfg: True
    keep: tuple[str, ...] = ()  # entries an interrupted identical run may resume from


def load_features(ctx: StageContext,
                  world: World | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The features stage's embeddings (N x D float32) and labels (or None); with several
    ranks, this rank's contiguous shard of the rows (the .npy is memory-mapped)."""
    folder = ctx.stage_dir("features")
    artifacts = ctx.manifest("features")["artifacts"]
    x = np.load(folder / artifacts["embeddings"], mmap_mode="r")
    y = np.load(folder / artifacts["labels"]) if artifacts.get("labels") else None
    if world is not None and world.active:
        start, stop = shard_bounds(len(x), world.rank, world.size)
        x, y = x[start:stop], None if y is None else y[start:stop]
    return np.array(x, dtype=np.float32), y  # a copy: only this shard's rows are read
