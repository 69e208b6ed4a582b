"""Cluster stage: DeepDPM on the embeddings; K is inferred, logged every epoch."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from data.files import save_json, save_npy
from pipeline.config import plain
from pipeline.stages.base import Stage, StageContext, StageResult, load_features


def run(ctx: StageContext, out: Path | None) -> StageResult:
    """Fit DeepDPM on the embeddings. Under torchrun every rank fits its shard of the rows
    (out is None on ranks other than 0: they write nothing)."""
    from clustering import DeepDPM
    from clustering.distributed import World

    world = World.current()
    x, y = load_features(ctx, world)
    if not world.is_main:
        DeepDPM(**plain(ctx.cfg, "cluster")).fit(x, y)
        return StageResult(outputs=[])
    log = ctx.tracker.stage_log("cluster", out)
    model = DeepDPM(**plain(ctx.cfg, "cluster")).fit(x, y, on_epoch=log)
    save_npy(out / "labels.npy", model.labels_)
    model.save(str(out / "model.pt"))
    metrics = {"k": int(model.n_clusters_), "n": len(model.labels_), "dim": int(x.shape[1]),
               "world_size": world.size}
    metrics.update({k: v for k, v in (getattr(model, "metrics_", None) or {}).items()
                    if k != "k"})
    save_json(out / "metrics.json", metrics)
    ctx.tracker.summary("cluster", metrics)
    ctx.tracker.k_chart("cluster", log.rows)
    outputs = ["labels.npy", "model.pt", "metrics.json", "history.csv"]
    artifacts = {"labels": "labels.npy", "model": "model.pt", "history": "history.csv",
                 "metrics": "metrics.json"}
    return StageResult(outputs=outputs, artifacts=artifacts, summary=metrics)


def _config(cfg: DictConfig) -> dict:
    return plain(cfg, "cluster")


STAGE = Stage(name="cluster", run=run, config=_config, requires=lambda cfg: ("features",))
