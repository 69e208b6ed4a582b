"""Synthetic data sets that the tests and the benchmarks share.

`entangled` is the AE alternation's test case: clusters an autoencoder can untangle and a
Gaussian mixture in the input space cannot fit well. `SHORT_CLUSTER` and `SMALL_AE` are
the scaled-down DeepDPM schedule and autoencoder it is run with (tests/test_alternation.py,
bench/bench_alternation.py --synthetic).
"""

from __future__ import annotations

import numpy as np

# DeepDPM with its schedule scaled down to 40 epochs.
SHORT_CLUSTER = {"init_k": 2, "max_epochs": 40, "batch_size": 256, "seed": 0,
                 "start_m_step": 3, "start_subclustering": 6, "start_split_merge": 10,
                 "split_merge_every": 4, "stop_split_merge_before_end": 8}
SMALL_AE = {"hidden_dims": [32, 32], "latent_dim": 3, "pretrain_epochs": 20, "ae_epochs": 8,
            "batch_size": 128, "lambda_": 1.0, "beta": 1.0, "n_alternations": 2}


def entangled(n: int = 900, k: int = 5, low: int = 3, high: int = 30, seed: int = 0,
              spread: float = 3.0, gain: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """A Gaussian mixture in `low` dims pushed through a fixed random tanh MLP into `high` dims.

    `gain` sets how far into tanh's curved range the clusters land: 2 bends them enough that
    full-covariance Gaussians in 30-D fit them poorly, but not so far that tanh's saturation
    merges clusters (an AE can then undo the map).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, low)) * spread
    y = rng.integers(0, k, n)
    z = centres[y] + rng.normal(size=(n, low))
    w1 = rng.normal(size=(low, 64)) / np.sqrt(low) * gain / spread
    w2 = rng.normal(size=(64, high)) / 8
    x = np.tanh(z @ w1) @ w2
    x += 0.05 * x.std() * rng.normal(size=x.shape)
    return x.astype(np.float32), y
