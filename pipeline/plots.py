"""The report's figures (matplotlib, Agg backend, PNG files); each function saves one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig: Any, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def _num(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])


def k_over_epochs(rows: Sequence[dict[str, Any]], path: Path, *, title: str,
                  true_k: int | None = None, boundaries: Sequence[int] = (),
                  dpi: int = 120) -> Path:
    """K per epoch, with accepted splits (up) and merges (down) marked where they happened,
    and the log joint probability the moves climb (right axis) when the rows have it;
    `boundaries` (row indices) mark where a new AE alternation starts."""
    epochs = np.arange(1, len(rows) + 1)
    k = _num(rows, "k")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.step(epochs, k, where="post", color="tab:blue", lw=1.8, label="K")
    for event, marker, color in (("split", "^", "tab:green"), ("merge", "v", "tab:red")):
        at = [i for i, r in enumerate(rows) if r.get("event") == event
              and float(r.get(f"{event}s_accepted") or 0) > 0]
        if at:
            ax.scatter(epochs[at], k[at], marker=marker, s=60, color=color, zorder=3,
                       label=f"{event} accepted")
        tried = [i for i, r in enumerate(rows) if r.get("event") == event and i not in at]
        if tried:
            ax.scatter(epochs[tried], k[tried], marker=marker, s=40, facecolors="none",
                       edgecolors=color, zorder=3, label=f"{event} step, none accepted")
    for j, b in enumerate(boundaries):
        ax.axvline(epochs[b] - 0.5, color="gray", ls=":", lw=1,
                   label="new AE alternation" if j == 0 else None)
    if true_k:
        ax.axhline(true_k, color="gray", ls="--", lw=1, label=f"true K = {true_k}")
    ax.set(xlabel="epoch", ylabel="number of clusters K", title=title)
    ax.yaxis.get_major_locator().set_params(integer=True)
    handles, labels = ax.get_legend_handles_labels()
    joint = _num(rows, "log_joint") if any("log_joint" in r for r in rows) else np.array([])
    if np.isfinite(joint).any():  # what the split/merge moves climb, on its own axis
        ax2 = ax.twinx()
        ok = np.isfinite(joint)
        (line,) = ax2.plot(epochs[ok], joint[ok], color="tab:orange", lw=1.2, alpha=0.8)
        ax2.set_ylabel("log p(partition, X)", color="tab:orange")
        handles, labels = [*handles, line], [*labels, "log joint"]
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path, dpi)


def metrics_over_epochs(rows: Sequence[dict[str, Any]], path: Path, *, title: str,
                        dpi: int = 120) -> Path | None:
    """NMI, ARI and ACC per epoch (only epochs where they were computed)."""
    epochs = np.arange(1, len(rows) + 1)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    drawn = False
    for key in ("nmi", "ari", "acc"):
        values = _num(rows, key) if any(key in r for r in rows) else np.array([])
        ok = np.isfinite(values)
        if ok.any():
            ax.plot(epochs[ok], values[ok], marker=".", label=key.upper())
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="epoch", ylabel="score", ylim=(0, 1.02), title=title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path, dpi)


def cluster_sizes(pred: np.ndarray, truth: np.ndarray | None, path: Path, *,
                  dpi: int = 120) -> Path:
    """Sorted cluster sizes next to sorted true class sizes (imbalance at a glance)."""
    sizes = np.sort(np.unique(pred, return_counts=True)[1])[::-1]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.4 if truth is not None else 0.8
    ax.bar(np.arange(len(sizes)) - (width / 2 if truth is not None else 0), sizes, width,
           label=f"clusters (K={len(sizes)})")
    if truth is not None:
        true_sizes = np.sort(np.unique(truth, return_counts=True)[1])[::-1]
        ax.bar(np.arange(len(true_sizes)) + width / 2, true_sizes, width,
               label=f"true classes ({len(true_sizes)})")
    ax.set(xlabel="rank (largest first)", ylabel="points", title="Cluster sizes vs class sizes")
    ax.legend(fontsize=8)
    return _save(fig, path, dpi)


def confusion_matrix(table: np.ndarray, class_names: Sequence[str], path: Path, *,
                     dpi: int = 120) -> Path:
    """Row-normalised clusters x classes table, rows ordered by their best-matching class."""
    order = np.lexsort((-table.max(1), table.argmax(1)))
    table = table[order]
    norm = table / np.maximum(table.sum(1, keepdims=True), 1)
    h = max(3.0, min(14.0, 0.25 * table.shape[0] + 1.5))
    w = max(4.0, min(16.0, 0.25 * table.shape[1] + 2.5))
    fig, ax = plt.subplots(figsize=(w, h))
    im = ax.imshow(norm, aspect="auto", cmap="Blues", vmin=0, vmax=1)
    ax.set(xlabel="true class", ylabel="cluster (sorted by majority class)",
           title="Confusion: fraction of each cluster per class")
    if len(class_names) <= 50:
        ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=6)
    if table.shape[0] <= 60:
        ax.set_yticks(range(table.shape[0]), [str(i) for i in order], fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _save(fig, path, dpi)


def sample_grid(clusters: Sequence[tuple[int, int, list[np.ndarray]]], path: Path, *,
                per_row: int, dpi: int = 120) -> Path:
    """One row per cluster (largest first): `per_row` member images, as the paper's Fig. 3."""
    rows = len(clusters)
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.9 + 1.2, rows * 0.9 + 0.3),
                             squeeze=False)
    for r, (cluster, size, images) in enumerate(clusters):
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                img = images[c]
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[r, 0].set_ylabel(f"{cluster}\n(n={size})", rotation=0, ha="right", va="center",
                              fontsize=7)
    fig.suptitle("Samples per cluster", fontsize=9)
    return _save(fig, path, dpi)
