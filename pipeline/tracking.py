"""Experiment tracking: one W&B run per pipeline run, plus a local CSV per stage.

Dashboard layout: the run is named `<experiment>-<time>`, grouped by experiment, with
job_type "pipeline" (or the single stage run with `--only`). Every stage logs under its
own prefix (`features/loss`, `cluster/k`, `cluster/sizes`, `alternate/k`, ...) against
its own x-axis `<stage>/step` (one step per epoch), so each stage gets a section of
charts. W&B is offline by default (files under `outputs/<experiment>/wandb`, no account
or network); `wandb.mode=online` or WANDB_MODE=online uploads; `disabled` turns it off.
Offline W&B writes a binary file with no reader, so each stage's history is ALSO written
as `history.csv` in its folder, rewritten atomically after every epoch.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import ConfigError
from data.files import save_csv
from data.records import EpochRecord

MODES = ("offline", "online", "disabled")


def resolve_mode(configured: str | None) -> str:
    """Config value wins; else the WANDB_MODE env var; else offline."""
    mode = configured or os.environ.get("WANDB_MODE") or "offline"
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        raise ConfigError(f"wandb.mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _scalar(value: Any) -> float | int | str | None:
    """A CSV/W&B friendly value, or None for things that are not scalars."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    return None


def epoch_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The DeepDPM epochs of a history (the alternation also logs AE epochs and summaries,
    tagged by a "stage" column; DeepDPM's are tagged "cluster")."""
    if any(r.get("stage") for r in rows):
        return [r for r in rows if r.get("stage") == "cluster"]
    return list(rows)


def _before(logged: Any, epoch: Any) -> bool:
    try:
        return float(logged) < float(epoch)
    except (TypeError, ValueError):
        return True


class StageLog:
    """Per-stage epoch logger: CSV rows in the stage folder and W&B metrics with a prefix."""

    def __init__(self, tracker: Tracker, stage: str, csv_path: Path):
        self.tracker, self.stage, self.csv_path = tracker, stage, csv_path
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self._resumed = False
        if csv_path.is_file():  # a resumed stage: keep the epochs logged before the stop
            with open(csv_path, newline="") as fh:
                reader = csv.DictReader(fh)
                self.rows, self.columns = list(reader), list(reader.fieldnames or [])
            self._resumed = bool(self.rows)

    def __call__(self, record: EpochRecord) -> None:
        self.log(record)

    def log(self, record: EpochRecord) -> None:
        """Record one epoch: sizes go to the CSV as text and to W&B as a histogram."""
        row: dict[str, Any] = {}
        sizes = record.get("sizes")
        for key, value in record.items():
            if key == "sizes":
                continue
            scalar = _scalar(value)
            if scalar is not None:
                row[key] = scalar
        if sizes is not None:
            row["sizes"] = " ".join(str(int(s)) for s in np.asarray(sizes).reshape(-1))
        if self._resumed:  # epochs logged after the checkpoint we resumed from are redone
            self.rows = [r for r in self.rows if _before(r.get("epoch"), row.get("epoch"))]
            self._resumed = False
        self.rows.append(row)
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        save_csv(self.csv_path, self.rows, self.columns)
        self.tracker.log_epoch(self.stage, len(self.rows), row, sizes)

class Tracker:
    """Lazily started W&B run (nothing is created when every stage is skipped)."""

    def __init__(self, *, mode: str | None, project: str, entity: str | None,
                 group: str | None, experiment: str, root: Path, job_type: str,
                 config: dict[str, Any]):
        self.mode = resolve_mode(mode)
        self.project, self.entity = project, entity
        self.group = group or experiment
        self.experiment, self.root, self.job_type = experiment, root, job_type
        self.config = config
        self.run: Any = None
        self._defined: set[str] = set()

    @property
    def active(self) -> bool:
        return self.run is not None

    def start(self) -> None:
        """Open the W&B run; offline mode never touches the network."""
        if self.run is not None or self.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project, entity=self.entity, group=self.group,
            job_type=self.job_type, name=f"{self.experiment}-{time.strftime('%Y%m%d-%H%M%S')}",
            dir=str(self.root), mode=self.mode, config=self.config, reinit="finish_previous",
        )

    def stage_log(self, stage: str, stage_dir: Path) -> StageLog:
        """Epoch logger for one stage, writing `<stage_dir>/history.csv`."""
        return StageLog(self, stage, stage_dir / "history.csv")

    def _define(self, stage: str) -> None:
        if self.run is None or stage in self._defined:
            return
        self.run.define_metric(f"{stage}/step")
        self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self._defined.add(stage)

    def log_epoch(self, stage: str, step: int, row: dict[str, Any], sizes: Any) -> None:
        if self.run is None:
            return
        import wandb

        self._define(stage)
        data: dict[str, Any] = {f"{stage}/step": step}
        # Records tagged with a sub-step (the alternation's "pretrain", "ae", "cluster",
        # "alternation") chart under `<stage>/<sub-step>/...`.
        sub = row.get("stage")
        prefix = f"{stage}/{sub}" if isinstance(sub, str) and sub else stage
        for key, value in row.items():
            if key in ("sizes", "stage"):
                continue
            if key == "event":  # strings do not chart; make events countable
                data[f"{prefix}/split_event"] = int(value == "split")
                data[f"{prefix}/merge_event"] = int(value == "merge")
            elif not isinstance(value, str):
                data[f"{prefix}/{key}"] = value
        if sizes is not None and len(np.asarray(sizes)) > 0:
            data[f"{prefix}/sizes"] = wandb.Histogram(np.asarray(sizes, dtype=np.float64))
        self.run.log(data)

    def summary(self, stage: str, metrics: dict[str, Any]) -> None:
        """Final numbers of a stage, shown in the runs table."""
        if self.run is None:
            return
        for key, value in metrics.items():
            scalar = _scalar(value)
            if scalar is not None:
                self.run.summary[f"{stage}/final_{key}"] = scalar

    def k_chart(self, stage: str, rows: list[dict[str, Any]]) -> None:
        """K over epochs as a W&B line plot (a table, so it survives offline sync)."""
        if self.run is None or not rows:
            return
        import wandb

        rows = epoch_rows(rows)
        data = [[i + 1, r["k"]] for i, r in enumerate(rows) if "k" in r]
        table = wandb.Table(data=data, columns=["epoch", "k"])
        self.run.log({f"{stage}/k_over_epochs": wandb.plot.line(
            table, "epoch", "k", title=f"{stage}: K over epochs")})

    def images(self, images: dict[str, Path]) -> None:
        """Report images, logged once at the end."""
        if self.run is None or not images:
            return
        import wandb

        self.run.log({f"report/{name}": wandb.Image(str(path)) for name, path in images.items()})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None

    @property
    def run_dir(self) -> Path | None:
        return None if self.run is None else Path(self.run.dir).parent
