"""Report stage: evaluate the clusterings against the labels and write report/."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from data.errors import DataNotFoundError
from pipeline.config import plain
from pipeline.report import ClusteringFiles, ReportInputs, build_report, config_yaml
from pipeline.stages.base import Stage, StageContext, StageResult, load_features


def _clusterings(cfg: DictConfig) -> tuple[str, ...]:
    return ("cluster", "alternate") if cfg.alternate.enabled else ("cluster",)


def _clustering_files(ctx: StageContext, stage: str) -> ClusteringFiles:
    """The stage's labels, history and metrics, as its manifest names them."""
    artifacts = ctx.manifest(stage)["artifacts"]
    missing = [k for k in ("labels", "history", "metrics") if k not in artifacts]
    if missing:
        raise DataNotFoundError(f"{ctx.stage_dir(stage)}: its manifest names no {missing} "
                                f"(written by an older version); rerun it with --only {stage}")
    folder = ctx.stage_dir(stage)
    return ClusteringFiles(labels=folder / artifacts["labels"],
                           history=folder / artifacts["history"],
                           metrics=folder / artifacts["metrics"])


def run(ctx: StageContext, out: Path) -> StageResult:
    x, y = load_features(ctx)
    stages = _clusterings(ctx.cfg)
    artifacts = ctx.manifest("features")["artifacts"]
    inputs = ReportInputs(
        experiment=str(ctx.cfg.experiment), features_dir=ctx.stage_dir("features"),
        features_artifacts=artifacts, class_names=artifacts.get("classes"),
        clusterings={s: _clustering_files(ctx, s) for s in stages}, final=stages[-1], truth=y,
        n_points=int(x.shape[0]), dim=int(x.shape[1]), settings=ctx.cfg.report,
        config_yaml=config_yaml(ctx.cfg))
    files, images, metrics = build_report(inputs, out)
    ctx.tracker.images(images)
    final = metrics["stages"][metrics["final"]]
    ctx.tracker.summary("report", final)
    return StageResult(outputs=files, artifacts={"report": "report.md"}, summary=final)


def _config(cfg: DictConfig) -> dict:
    return {"report": plain(cfg, "report"), "clusterings": list(_clusterings(cfg))}


STAGE = Stage(name="report", run=run, config=_config,
              requires=lambda cfg: ("features", *_clusterings(cfg)))
