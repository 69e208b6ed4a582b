"""The report stage's content: evaluate the clusterings and write report.md with plots.

Reads only finished stage outputs (labels.npy, history.csv, the features manifest), so a
report can be rebuilt without rerunning anything upstream.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from clustering.metrics import confusion, evaluate
from data.files import save_json, save_text
from pipeline import plots
from pipeline.samples import image_loader, pick_samples
from pipeline.tracking import epoch_rows


@dataclass
class ClusteringFiles:
    """A clustering stage's outputs the report reads (found through its manifest's
    artifacts)."""

    labels: Path
    history: Path
    metrics: Path


@dataclass
class ReportInputs:
    """What the report is built from (paths are in finished stage folders)."""

    experiment: str
    features_dir: Path
    features_artifacts: dict[str, Any]
    clusterings: dict[str, ClusteringFiles]  # "cluster" and, when enabled, "alternate"
    final: str
    truth: np.ndarray | None
    n_points: int
    dim: int
    settings: Any  # the report config section
    class_names: list[str] | None = None  # label i -> name (folder / wnid), when known
    config_yaml: str = ""
    images: dict[str, Path] = field(default_factory=dict)


def read_history(path: Path) -> list[dict[str, str]]:
    """Rows of a stage's history.csv (empty when the stage logged no epochs)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _stage_summary(name: str, files: ClusteringFiles, labels: np.ndarray,
                   rows: list[dict[str, str]],
                   truth: np.ndarray | None) -> dict[str, Any]:
    """K (the model's, and the clusters that kept points), epochs, moves and scores."""
    def total(key: str) -> int:
        return int(sum(float(r.get(key) or 0) for r in epoch_rows(rows)))

    k_nonempty = int(len(np.unique(labels)))
    try:
        k = int(json.loads(files.metrics.read_text())["k"])
    except (OSError, ValueError, KeyError):
        k = k_nonempty
    summary: dict[str, Any] = {"stage": name, "k": k, "k_nonempty": k_nonempty,
                               "epochs": len(epoch_rows(rows)),
                               "splits_accepted": total("splits_accepted"),
                               "merges_accepted": total("merges_accepted")}
    if truth is not None:
        summary.update({k: v for k, v in evaluate(truth, labels).items() if k != "k"})
    return summary


def _alternation_starts(rows: list[dict[str, str]]) -> list[int]:
    """Row indices where a new AE alternation's DeepDPM run begins (none for plain runs)."""
    tags = [r.get("alternation") for r in rows]
    return [i for i in range(1, len(tags)) if tags[i] != tags[i - 1]]


def _plots(inp: ReportInputs, out: Path, histories: dict[str, list], final_labels: np.ndarray,
           true_k: int | None) -> dict[str, Path]:
    s, images = inp.settings, {}
    for stage, all_rows in histories.items():
        rows = epoch_rows(all_rows)
        if not rows:
            continue
        starts = _alternation_starts(rows)
        prefix = "" if stage == "cluster" else f"{stage}_"
        images[f"{prefix}k_over_epochs"] = plots.k_over_epochs(
            rows, out / f"{prefix}k_over_epochs.png", title=f"{inp.experiment} ({stage}): K",
            true_k=true_k, boundaries=starts, dpi=s.dpi)
        path = plots.metrics_over_epochs(rows, out / f"{prefix}metrics_over_epochs.png",
                                         title=f"{inp.experiment} ({stage}): metrics",
                                         dpi=s.dpi)
        if path is not None:
            images[f"{prefix}metrics_over_epochs"] = path
    images["cluster_sizes"] = plots.cluster_sizes(final_labels, inp.truth,
                                                  out / "cluster_sizes.png", dpi=s.dpi)
    if inp.truth is not None:
        names = [str(c) for c in np.unique(inp.truth)]
        if inp.class_names and np.issubdtype(inp.truth.dtype, np.integer) \
                and int(inp.truth.max()) < len(inp.class_names):
            names = [inp.class_names[int(c)] for c in np.unique(inp.truth)]
        images["confusion"] = plots.confusion_matrix(confusion(inp.truth, final_labels), names,
                                                     out / "confusion.png", dpi=s.dpi)
    load = image_loader(inp.features_dir, inp.features_artifacts)
    if load is not None and s.samples_per_cluster > 0:
        picked = pick_samples(final_labels, load, max_clusters=s.max_grid_clusters,
                              per_cluster=s.samples_per_cluster, seed=s.seed)
        images["samples"] = plots.sample_grid(picked, out / "samples.png",
                                              per_row=s.samples_per_cluster, dpi=s.dpi)
    return images


def _markdown(inp: ReportInputs, summaries: list[dict[str, Any]], images: dict[str, Path],
              true_k: int | None) -> str:
    lines = [f"# DeepDPM report: {inp.experiment}", "",
             f"- points: {inp.n_points}, embedding dimension: {inp.dim}",
             f"- true classes: {true_k if true_k else 'unknown (no labels)'}",
             f"- final clustering: `{inp.final}` stage", ""]
    cols = ["stage", "k", "k_nonempty", "nmi", "ari", "acc", "epochs", "splits_accepted",
            "merges_accepted"]
    if inp.truth is None:
        cols = [c for c in cols if c not in ("nmi", "ari", "acc")]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for s in summaries:
        cells = [f"{s[c]:.4f}" if isinstance(s.get(c), float) else str(s.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    captions = {"k_over_epochs": "K over epochs (DeepDPM); triangles mark accepted splits (up) "
                                 "and merges (down); the orange line is the log joint "
                                 "probability log p(partition, X) that the moves climb",
                "alternate_k_over_epochs": "K over epochs during the AE alternation",
                "metrics_over_epochs": "NMI / ARI / ACC over epochs (DeepDPM)",
                "alternate_metrics_over_epochs": "NMI / ARI / ACC over the AE alternation",
                "cluster_sizes": "Cluster sizes against true class sizes",
                "confusion": "Confusion matrix of the final clustering against the labels",
                "samples": "Random members of the largest clusters (one row per cluster)"}
    for name, path in images.items():
        lines += ["", f"## {captions.get(name, name)}", "", f"![{name}]({path.name})"]
    if inp.config_yaml:
        lines += ["", "## Resolved config", "", "```yaml", inp.config_yaml.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def build_report(inp: ReportInputs, out: Path) -> tuple[list[str], dict[str, Path], dict]:
    """Write report.md, metrics.json and the PNGs into `out`; return (files, images, metrics)."""
    histories = {s: read_history(f.history) for s, f in inp.clusterings.items()}
    labels = {s: np.load(f.labels) for s, f in inp.clusterings.items()}
    true_k = int(len(np.unique(inp.truth))) if inp.truth is not None else None
    summaries = [_stage_summary(s, f, labels[s], histories[s], inp.truth)
                 for s, f in inp.clusterings.items()]
    images = _plots(inp, out, histories, labels[inp.final], true_k)
    metrics = {"final": inp.final, "true_k": true_k, "n": inp.n_points, "dim": inp.dim,
               "stages": {s["stage"]: s for s in summaries}}
    save_json(out / "metrics.json", metrics)
    save_text(out / "report.md", _markdown(inp, summaries, images, true_k))
    files = ["report.md", "metrics.json"] + [p.name for p in images.values()]
    return files, images, metrics


def config_yaml(cfg: Any) -> str:
    """The resolved config as YAML, for the report's appendix."""
    return OmegaConf.to_yaml(cfg, resolve=True)
