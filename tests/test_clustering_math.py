"""The NIW algebra against independent closed-form computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps
from scipy.special import gammaln, multigammaln

from clustering.moves import merge_log_ratio, propose_splits, split_log_ratio
from clustering.niw import (
    GaussianScorer,
    NIWPrior,
    Stats,
    dirichlet_weights,
    grouped_stats,
    log_marginal_likelihood,
    map_params,
    safe_logdet_cholesky,
    weighted_stats,
)


def _prior(dim: int, seed: int = 0) -> NIWPrior:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    psi = a @ a.T + dim * np.eye(dim)
    return NIWPrior(m0=torch.tensor(rng.normal(size=dim)), psi=torch.tensor(psi),
                    nu=dim + 2.5, kappa=0.3)


def _numpy_log_ml(x: np.ndarray, prior: NIWPrior) -> float:
    """Textbook NIW marginal likelihood computed directly from the points."""
    n, d = x.shape
    m0, psi, nu, kappa = prior.m0.numpy(), prior.psi.numpy(), prior.nu, prior.kappa
    xbar = x.mean(0)
    scatter = (x - xbar).T @ (x - xbar)
    psi_n = psi + scatter + kappa * n / (kappa + n) * np.outer(xbar - m0, xbar - m0)
    return float(-n * d / 2 * math.log(math.pi) + multigammaln((nu + n) / 2, d)
                 - multigammaln(nu / 2, d) + nu / 2 * np.linalg.slogdet(psi)[1]
                 - (nu + n) / 2 * np.linalg.slogdet(psi_n)[1]
                 + d / 2 * (math.log(kappa) - math.log(kappa + n)))


def _predictive_chain_log_ml(x: np.ndarray, prior: NIWPrior) -> float:
    """log p(X) as a product of Student-t posterior predictives (chain rule)."""
    d = x.shape[1]
    m, psi = prior.m0.numpy().copy(), prior.psi.numpy().copy()
    nu, kappa, total = prior.nu, prior.kappa, 0.0
    for xi in x:
        dof = nu - d + 1
        shape = psi * (kappa + 1) / (kappa * dof)
        total += sps.multivariate_t(loc=m, shape=shape, df=dof).logpdf(xi)
        psi = psi + kappa / (kappa + 1) * np.outer(xi - m, xi - m)
        m = (kappa * m + xi) / (kappa + 1)
        kappa, nu = kappa + 1, nu + 1
    return total


def _stats(x: np.ndarray) -> Stats:
    t = torch.tensor(x)
    return grouped_stats(t, torch.zeros(len(x), dtype=torch.long), 1)


def test_log_marginal_likelihood_matches_closed_form_and_predictive_chain():
    rng = np.random.default_rng(1)
    prior = _prior(3)
    x = rng.normal(size=(25, 3)) * 2 + 1
    ours = float(log_marginal_likelihood(_stats(x), prior)[0])
    assert ours == pytest.approx(_numpy_log_ml(x, prior), rel=1e-9)
    assert ours == pytest.approx(_predictive_chain_log_ml(x, prior), rel=1e-7)


def test_empty_group_has_zero_log_marginal_likelihood():
    prior = _prior(2)
    empty = Stats(torch.zeros(1, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                  torch.zeros(1, 2, 2, dtype=torch.float64))
    assert float(log_marginal_likelihood(empty, prior)[0]) == pytest.approx(0.0, abs=1e-9)


def test_split_and_merge_hastings_ratios_match_formula():
    rng = np.random.default_rng(2)
    prior, alpha = _prior(2, seed=3), 7.0
    a, b = rng.normal(size=(30, 2)), rng.normal(size=(12, 2)) + 4
    x = np.concatenate([a, b]).astype(np.float64)
    groups = torch.tensor([0] * 30 + [1] * 12)
    sub = grouped_stats(torch.tensor(x), groups, 2)
    expected = (math.log(alpha) + gammaln(30) + _numpy_log_ml(a, prior) + gammaln(12)
                + _numpy_log_ml(b, prior) - gammaln(42) - _numpy_log_ml(x, prior))
    assert float(split_log_ratio(sub, prior, alpha)[0]) == pytest.approx(expected, rel=1e-9)
    merge = merge_log_ratio(sub, torch.tensor([[0, 1]]), prior, alpha)
    assert float(merge[0]) == pytest.approx(-expected, rel=1e-9)  # H_m = 1 / H_s


def test_bimodal_split_accepted_unimodal_halves_merge():
    rng = np.random.default_rng(4)
    dim = 4
    prior = NIWPrior(torch.zeros(dim, dtype=torch.float64),
                     0.01 * torch.eye(dim, dtype=torch.float64), dim + 2.0, 1e-4)
    gen = torch.Generator().manual_seed(0)
    two = np.concatenate([rng.normal(size=(200, dim)), rng.normal(size=(200, dim)) + 6])
    sides = torch.tensor([0] * 200 + [1] * 200)
    accept, log_h = propose_splits(grouped_stats(torch.tensor(two), sides, 2), prior, 10.0,
                                   5, 5, gen)
    assert bool(accept[0]) and float(log_h[0]) > 50
    one = rng.normal(size=(400, dim))
    halves = torch.tensor((one[:, 0] > 0).astype(np.int64))
    stats = grouped_stats(torch.tensor(one), halves, 2)
    assert float(merge_log_ratio(stats, torch.tensor([[0, 1]]), prior, 10.0)[0]) > 0


def test_small_clusters_and_children_are_never_split():
    offsets = np.array([[0.0, 0.0]] * 4 + [[9.0, 9.0]] * 4)
    x = torch.tensor(np.random.default_rng(0).normal(size=(8, 2)) + offsets)
    prior = NIWPrior(torch.zeros(2, dtype=torch.float64), 0.01 * torch.eye(2, dtype=torch.float64),
                     4.0, 1e-4)
    stats = grouped_stats(x, torch.tensor([0] * 4 + [1] * 4), 2)
    accept, _ = propose_splits(stats, prior, 1e6, 5, 5, torch.Generator().manual_seed(0))
    assert not bool(accept[0])


def test_weighted_and_grouped_stats_agree_with_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    w = rng.dirichlet(np.ones(4), size=300).astype(np.float32)
    s = weighted_stats(torch.tensor(x), torch.tensor(w))
    m2 = np.einsum("nk,nd,ne->kde", w.astype(np.float64), x, x)
    np.testing.assert_allclose(s.n.numpy(), w.sum(0), rtol=1e-5)
    np.testing.assert_allclose(s.s.numpy(), w.T.astype(np.float64) @ x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.m2.numpy(), m2, rtol=1e-4, atol=1e-3)
    labels = rng.integers(0, 4, size=300)
    g = grouped_stats(torch.tensor(x), torch.tensor(labels), 4)
    onehot = np.eye(4, dtype=np.float32)[labels]
    d = weighted_stats(torch.tensor(x), torch.tensor(onehot))
    for a, b in ((g.n, d.n), (g.s, d.s), (g.m2, d.m2)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-4)


def test_map_params_are_the_niw_posterior_mode():
    rng = np.random.default_rng(6)
    prior = _prior(3)
    x = rng.normal(size=(50, 3)) + 2
    mean, cov = map_params(_stats(x), prior)
    n, xbar = 50, x.mean(0)
    m0, kappa, nu = prior.m0.numpy(), prior.kappa, prior.nu
    exp_mean = (n * xbar + kappa * m0) / (n + kappa)
    scatter = (x - xbar).T @ (x - xbar)
    exp_cov = (prior.psi.numpy() + scatter
               + kappa * n / (kappa + n) * np.outer(xbar - m0, xbar - m0)) / (nu + n + 3 + 2)
    np.testing.assert_allclose(mean[0].numpy(), exp_mean, rtol=1e-9)
    np.testing.assert_allclose(cov[0].numpy(), exp_cov, rtol=1e-9)


def test_dirichlet_weights_smooth_counts_not_fractions():
    w = dirichlet_weights(torch.tensor([1.0, 99.0, 900.0], dtype=torch.float64), 1.0)
    np.testing.assert_allclose(w.numpy(), np.array([2, 100, 901]) / 1003)


def test_gaussian_scorer_matches_scipy():
    rng = np.random.default_rng(7)
    k, dim = 3, 4
    means = rng.normal(size=(k, dim))
    covs = np.stack([a @ a.T + np.eye(dim) for a in rng.normal(size=(k, dim, dim))])
    logw = np.log(np.array([0.2, 0.3, 0.5]))
    x = rng.normal(size=(40, dim))
    scorer = GaussianScorer(torch.tensor(means), torch.tensor(covs), torch.tensor(logw),
                            torch.float64)
    got = scorer.log_joint(torch.tensor(x)).numpy()
    want = np.stack([sps.multivariate_normal(means[j], covs[j]).logpdf(x) + logw[j]
                     for j in range(k)], 1)
    np.testing.assert_allclose(got, want, rtol=1e-5)  # 1e-6 relative jitter is always added
    resp = scorer.log_responsibilities(torch.tensor(x)).exp().numpy()
    np.testing.assert_allclose(resp.sum(1), 1.0, rtol=1e-9)


def test_safe_cholesky_survives_singular_and_indefinite_matrices():
    singular = torch.ones(1, 3, 3, dtype=torch.float64)  # rank 1
    indefinite = torch.diag(torch.tensor([1.0, -1e-9, 2.0], dtype=torch.float64))[None]
    chol, cov = safe_logdet_cholesky(torch.cat([singular, indefinite]))
    assert torch.isfinite(chol).all()
    np.testing.assert_allclose((chol @ chol.transpose(1, 2)).numpy(), cov.numpy(), atol=1e-9)


def test_weighted_grouped_stats_match_dense_weights():
    rng = np.random.default_rng(8)
    x = torch.tensor(rng.normal(size=(200, 3)).astype(np.float32))
    groups = torch.tensor(rng.integers(0, 5, size=200))
    w = torch.tensor(rng.uniform(size=200).astype(np.float32))
    dense = torch.zeros(200, 5)
    dense[torch.arange(200), groups] = w
    g, d = grouped_stats(x, groups, 5, w), weighted_stats(x, dense)
    for a, b in ((g.n, d.n), (g.s, d.s), (g.m2, d.m2)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-4)
