"""Benchmark of the MoCo feature stage on the built-in MNIST digits (CPU, a few minutes).

Trains MoCo from scratch with configs/features_mnist.yaml, embeds the 5,000 digits into
outputs/bench_features/ (embeddings.npy, labels.npy, ...), compares a kNN classifier
(k=20, 5-fold stratified CV) on the learned features with the same classifier on raw
pixels, and clusters the features with DeepDPM as `make demo` does (the `cluster` section
of configs/demo.yaml, from K=1). Prints training images/s and writes bench.json next to
the embeddings. Exits 1 unless the features beat raw pixels and DeepDPM finds K within
2 of the number of classes (10) with NMI >= 0.7.

    .venv/bin/python bench/bench_features.py [--out DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clustering import DeepDPM  # noqa: E402
from data.files import save_json  # noqa: E402
from data.sources import build_dataset  # noqa: E402
from features import embed_dataset, train_moco  # noqa: E402
from features.config import load_features_config  # noqa: E402
from pipeline.config import load_pipeline_config, plain  # noqa: E402


def knn_accuracy(x: np.ndarray, y: np.ndarray, k: int = 20, folds: int = 5) -> float:
    """Mean 5-fold CV accuracy of a k-nearest-neighbour classifier."""
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=k), x, y, cv=cv).mean())


def deepdpm_on(features: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """DeepDPM with the demo's cluster settings; K, NMI, ARI, ACC and seconds."""
    params = plain(load_pipeline_config(REPO / "configs" / "demo.yaml"), "cluster")
    params["verbose"] = False
    start = time.perf_counter()
    model = DeepDPM(**params).fit(features, labels)
    return {"k": model.n_clusters_, **{m: round(v, 4) for m, v in model.metrics_.items()},
            "seconds": round(time.perf_counter() - start, 1), "params": params}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "features_mnist.yaml"))
    parser.add_argument("--out", default=str(REPO / "outputs" / "bench_features"))
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=5")
    args = parser.parse_args()
    cfg = load_features_config([args.config], args.overrides)
    out = Path(args.out)
    shutil.rmtree(out / "train", ignore_errors=True)  # time a fresh run, never a resume

    load_before = os.getloadavg()[0]
    epochs: list[dict] = []
    start = time.perf_counter()
    checkpoint = train_moco(cfg, out / "train", progress=True, on_epoch=epochs.append)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    embed_dataset(checkpoint, cfg, out)
    embed_s = time.perf_counter() - start

    features = np.load(out / "embeddings.npy")
    labels = np.load(out / "labels.npy")
    digits = build_dataset(cfg.data)
    raw = digits.images.reshape(len(digits), -1).astype(np.float32) / 255.0
    result = {
        "knn_raw_pixels": knn_accuracy(raw, labels),
        "knn_features": knn_accuracy(features, labels),
        "deepdpm": deepdpm_on(features, labels),
        "embedding_shape": list(features.shape),
        "train_seconds": round(train_s, 1),
        "embed_seconds": round(embed_s, 1),
        "train_images_per_s": round(sum(e["steps"] for e in epochs) * cfg.train.batch_size
                                    / sum(e["seconds"] for e in epochs), 1),
        "epochs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in e.items()}
                   for e in epochs],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "overrides": args.overrides,
    }
    save_json(out / "bench.json", result)
    print(f"kNN (k=20, 5-fold) raw pixels {result['knn_raw_pixels']:.4f}  "
          f"MoCo features {result['knn_features']:.4f}  {features.shape}")
    dpm = result["deepdpm"]
    print(f"DeepDPM from K=1: K {dpm['k']}  NMI {dpm['nmi']:.3f}  ARI {dpm['ari']:.3f}  "
          f"ACC {dpm['acc']:.3f}  ({dpm['seconds']:.0f} s)")
    print(f"train {train_s:.0f} s, {result['train_images_per_s']:.0f} images/s; "
          f"embed {embed_s:.0f} s; results in {out / 'bench.json'}")
    true_k = len(np.unique(labels))
    met = (result["knn_features"] > result["knn_raw_pixels"] and abs(dpm["k"] - true_k) <= 2
           and dpm["nmi"] >= 0.7)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
