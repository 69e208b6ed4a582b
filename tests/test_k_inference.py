"""K inference beyond Gaussian blobs: heavy tails, many small clusters in high dimension,
the log joint the moves climb, and clusters as modes of the fitted mixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clustering import DeepDPM
from clustering.modes import mode_clusters
from clustering.moves import log_joint, split_log_ratio
from clustering.niw import NIWPrior, grouped_stats


def heavy_tailed(seed: int = 0, k: int = 5, n: int = 400, dim: int = 5):
    """k clusters with Student-t (3 dof) noise: a Gaussian mixture covers each with several
    components, and the posterior prefers that (bench/k_evidence.py)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    x = rng.normal(0, 6, (k, dim))[y] + rng.standard_t(3, (len(y), dim)) * 0.5
    return x.astype(np.float32), y


def many_small_high_dim(seed: int = 0, k: int = 50, n: int = 40, dim: int = 64, rank: int = 4,
                        spread: float = 0.5):
    """50 clusters of 40 points in 64-D, L2-normalised, each of low rank: fewer points per
    cluster than dimensions, as MoCo features of 50 ImageNet classes."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(k, dim))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    parts = [mu[c] + rng.normal(size=(n, rank)) @ (rng.normal(size=(dim, rank)) / dim ** 0.5).T
             * spread + rng.normal(0, 0.02, (n, dim)) for c in range(k)]
    x = np.concatenate(parts)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), n)


def test_heavy_tailed_clusters_count_once():
    x, y = heavy_tailed()
    model = DeepDPM(seed=0, max_epochs=60).fit(x, y)
    assert model.n_clusters_ == 5, (model.n_components_, [h["k"] for h in model.history_])
    assert model.n_components_ >= model.n_clusters_
    assert model.metrics_["nmi"] > 0.9
    proba = model.predict_proba(x[:50])
    assert proba.shape == (50, 5)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1)[proba.max(1) > 0.9],
                                  model.predict(x[:50])[proba.max(1) > 0.9])
    assert model.means_.shape == (5, 5) and model.weights_.sum() == pytest.approx(1.0)


def test_fifty_small_clusters_in_high_dimension():
    x, y = many_small_high_dim()
    model = DeepDPM(seed=0, max_epochs=60).fit(x, y)
    assert abs(model.n_clusters_ - 50) <= 5, [h["k"] for h in model.history_]
    assert model.metrics_["nmi"] > 0.95
    # the moves climb the log joint: the last state scores at least the first
    joint = [h["log_joint"] for h in model.history_]
    assert joint[-1] >= joint[0]


def test_thin_clusters_that_k_means_cuts_across():
    # 20 clusters of 40 points in 48-D, each spread along 4 random directions further than
    # the distance between centres: k-means given the true K cuts across them, the
    # mutual-neighbour graph start does not, and the log joint prefers it
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    x, y = many_small_high_dim(seed=1, k=20, n=40, dim=48, rank=4, spread=0.9)
    km = KMeans(20, n_init=10, random_state=0).fit_predict(x)
    assert normalized_mutual_info_score(y, km) < 0.9
    model = DeepDPM(seed=0, max_epochs=60).fit(x, y)
    assert abs(model.n_clusters_ - 20) <= 1, [h["k"] for h in model.history_]
    assert model.metrics_["nmi"] > 0.95


def test_log_joint_changes_by_the_split_ratio():
    """log H_s is exactly the change of the log joint when one cluster splits in two."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(300, 3)))
    prior = NIWPrior(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64),
                     5.0, 0.1)
    parent = torch.as_tensor(rng.integers(0, 2, 300))  # clusters 0 and 1
    child = torch.where((parent == 1) & (x[:, 0] > 0), 2, parent)  # cluster 1 split in two
    before = log_joint(grouped_stats(x, parent, 2), prior, 3.0)
    after = log_joint(grouped_stats(x, child, 3), prior, 3.0)
    sub = grouped_stats(x[parent == 1], (child[parent == 1] == 2).long(), 2)
    ratio = split_log_ratio(sub, prior, 3.0)[0]
    assert float(after - before) == pytest.approx(float(ratio), rel=1e-9, abs=1e-6)


@pytest.mark.parametrize(("gap", "clusters"), [(1.5, 1), (2.5, 2)])
def test_two_gaussians_share_a_mode_only_when_close(gap, clusters):
    """Closed form: an equal mixture of N(0, 1) and N(gap, 1) is unimodal iff gap <= 2."""
    means = torch.tensor([[0.0, 0.0], [gap, 0.0]], dtype=torch.float64)
    covs = torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone()
    groups = mode_clusters(means, covs, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert int(groups.max()) + 1 == clusters


def test_mode_clusters_keep_separate_groups_and_number_them_densely():
    means = torch.tensor([[0.0], [0.5], [20.0], [20.3], [50.0]], dtype=torch.float64)
    covs = torch.ones(5, 1, 1, dtype=torch.float64)
    groups = mode_clusters(means, covs, torch.full((5,), 0.2, dtype=torch.float64))
    assert groups.tolist() == [0, 0, 1, 1, 2]


def test_merge_modes_off_reports_components():
    x, _ = heavy_tailed(seed=1, k=3, n=300)
    model = DeepDPM(seed=0, max_epochs=40, merge_modes=False).fit(x)
    assert model.n_clusters_ == model.n_components_
    np.testing.assert_array_equal(model.component_cluster_.cpu().numpy(),
                                  np.arange(model.n_components_))


def test_graph_start_on_a_probe_labels_every_point(monkeypatch):
    # data larger than the probe: the graph start is built on the probe and every other
    # point takes its nearest probe point's label
    from sklearn.metrics import normalized_mutual_info_score

    import clustering.start as start

    x, y = many_small_high_dim(seed=1, k=20, n=40, dim=48, rank=4, spread=0.9)
    monkeypatch.setattr(start, "INIT_PROBE", 500)
    xt = torch.as_tensor(x - x.mean(0))
    prior = NIWPrior(torch.zeros(48, dtype=torch.float64),
                     torch.as_tensor(np.cov(x.T), dtype=torch.float64), 50.0, 1e-4)
    labels = start.initial_partition(xt, 1, prior, 10.0, torch.Generator().manual_seed(0), 20)
    assert labels.shape == (800,) and int(labels.max()) + 1 == len(torch.unique(labels))
    assert normalized_mutual_info_score(y, labels.numpy()) > 0.9
