"""Shared test helpers: well-separated Gaussian mixtures with a known K."""

from __future__ import annotations

import numpy as np
import pytest


def make_mixture(n: int, dim: int, k: int, imbalanced: bool = False, seed: int = 0,
                 separation: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Anisotropic Gaussians whose means are at least `separation` unit-stds apart."""
    rng = np.random.default_rng(seed)
    means: list[np.ndarray] = []
    scale = separation * max(1.0, k ** (1 / dim))
    while len(means) < k:
        cand = rng.uniform(-scale, scale, size=dim)
        if all(np.linalg.norm(cand - m) >= separation for m in means):
            means.append(cand)
    weights = np.geomspace(1.0, 0.12, k) if imbalanced else np.ones(k)
    labels = rng.choice(k, size=n, p=weights / weights.sum())
    mix = rng.normal(size=(k, dim, dim)) * 0.25 + np.eye(dim)  # mild anisotropy
    noise = np.einsum("nij,nj->ni", mix[labels], rng.normal(size=(n, dim)))
    return (np.stack(means)[labels] + noise).astype(np.float32), labels


@pytest.fixture
def mixture():
    return make_mixture
