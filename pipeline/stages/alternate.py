"""Alternate stage (optional): the authors' AE alternation, i.e. DeepDPM on an autoencoder's
latent space, alternating AE training and clustering. Off unless `alternate.enabled`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from clustering.metrics import evaluate
from data.files import save_json, save_npy
from pipeline.config import plain, section
from pipeline.stages.base import Stage, StageContext, StageResult, load_features

WORK = "work"  # the alternation's own files (AE checkpoints, ...)


def run(ctx: StageContext, out: Path) -> StageResult:
    from clustering.alternation import AEAlternation

    x, y = load_features(ctx)
    log = ctx.tracker.stage_log("alternate", out)
    alt = AEAlternation(section(ctx.cfg, "alternate"), section(ctx.cfg, "cluster"))
    alt.fit(x, y, out_dir=out / WORK, on_epoch=log)
    labels = np.asarray(alt.labels_)
    save_npy(out / "labels.npy", labels)
    metrics = {"k": int(alt.n_clusters_), "n": int(x.shape[0]), "dim": int(x.shape[1])}
    if y is not None:
        metrics.update({k: v for k, v in evaluate(y, labels).items() if k != "k"})
    save_json(out / "metrics.json", metrics)
    ctx.tracker.summary("alternate", metrics)
    ctx.tracker.k_chart("alternate", log.rows)
    outputs = ["labels.npy", "metrics.json", "history.csv"]
    outputs += [str(p.relative_to(out)) for p in sorted((out / WORK).rglob("*")) if p.is_file()]
    artifacts = {"labels": "labels.npy", "history": "history.csv", "metrics": "metrics.json"}
    return StageResult(outputs=outputs, artifacts=artifacts, summary=metrics)


def _config(cfg: DictConfig) -> dict:
    # The alternation builds its DeepDPM from the cluster section, so both count.
    return {"alternate": plain(cfg, "alternate"), "cluster": plain(cfg, "cluster")}


STAGE = Stage(name="alternate", run=run, config=_config, requires=lambda cfg: ("features",),
              enabled=lambda cfg: bool(cfg.alternate.enabled), keep=(WORK,))
