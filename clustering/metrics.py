"""Clustering metrics: ACC by (rectangular) Hungarian matching, NMI and ARI.

ACC matches predicted clusters to classes one-to-one; with more clusters than classes
the unmatched clusters count as errors, as in the paper's evaluation.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _codes(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary labels (ints, strings) to 0..C-1."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Contingency table, rows = predicted clusters, columns = classes (vectorised)."""
    t, p = _codes(y_true), _codes(y_pred)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    return table


def cluster_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of clusters to classes."""
    table = confusion(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(y_true))


def evaluate(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """NMI, ARI, ACC and the number of distinct predicted clusters."""
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if len(y_true) != len(y_pred):
        raise ValueError(f"labels have {len(y_true)} entries but predictions {len(y_pred)}")
    return {
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "acc": cluster_acc(y_true, y_pred),
        "k": int(len(np.unique(y_pred))),
    }
