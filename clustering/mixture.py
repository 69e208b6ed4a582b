"""The mixture's parameters as one object: what the M-steps set and the moves change.

K clusters (means, covariances, weights) and each cluster's two sub-clusters (means,
covariances, weights within the parent), all float64 on one device. The six arrays change
together, so a split, a merge or dropping clusters is one call that returns the new state
with every array re-indexed in step; the nets and per-point buffers are the model's job
(clustering/model.py, `_apply_surgery`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class MixtureState:
    mu: Tensor  # (K, D)
    cov: Tensor  # (K, D, D)
    pi: Tensor  # (K,), sums to 1
    mu_sub: Tensor | None = None  # (K, 2, D); None until the sub-clusters are seeded
    cov_sub: Tensor | None = None  # (K, 2, D, D)
    pi_sub: Tensor | None = None  # (K, 2), each row sums to 1

    @property
    def k(self) -> int:
        return int(self.mu.shape[0])

    def arrays(self) -> dict[str, Tensor]:
        """The arrays that are set (for saving)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    def _sub(self, index: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        return tuple(None if t is None else t[index]  # type: ignore[return-value]
                     for t in (self.mu_sub, self.cov_sub, self.pi_sub))

    def take(self, index: Tensor) -> MixtureState:
        """The clusters `index`, in that order, with their sub-clusters; weights
        renormalised (dropping clusters leaves a distribution over the rest)."""
        pi = self.pi[index]
        return MixtureState(self.mu[index], self.cov[index], pi / pi.sum(), *self._sub(index))

    def split(self, parents: Tensor) -> tuple[MixtureState, Tensor]:
        """Each cluster in `parents` becomes its two sub-clusters: child 0 takes the parent's
        slot, child 1 is appended (in the order of `parents`), weights pi_k x pi_sub.
        Returns the state and `source` (K_new,): the old cluster each new one comes from.
        The children's own sub-clusters are copies of the parent's, to be re-seeded."""
        k = self.k
        source = torch.cat([torch.arange(k, device=self.mu.device), parents])
        mu = torch.cat([self.mu, self.mu_sub[parents, 1]])
        mu[parents] = self.mu_sub[parents, 0]
        cov = torch.cat([self.cov, self.cov_sub[parents, 1]])
        cov[parents] = self.cov_sub[parents, 0]
        pi = torch.cat([self.pi, self.pi[parents] * self.pi_sub[parents, 1]])
        pi[parents] = self.pi[parents] * self.pi_sub[parents, 0]
        return MixtureState(mu, cov, pi / pi.sum(), *self._sub(source)), source

    def merge(self, first: Tensor, second: Tensor, mu_merged: Tensor, cov_merged: Tensor,
              kept: Tensor) -> MixtureState:
        """Each pair (first[i], second[i]) becomes one cluster at first[i]'s slot with the
        given parameters and the pair's summed weight; the two old clusters become its
        sub-clusters. `kept`: the clusters that remain (every one but the seconds)."""
        mu, cov, pi = self.mu.clone(), self.cov.clone(), self.pi.clone()
        mu[first], cov[first] = mu_merged, cov_merged
        pi[first] = self.pi[first] + self.pi[second]
        mu_sub, cov_sub, pi_sub = self.mu_sub.clone(), self.cov_sub.clone(), self.pi_sub.clone()
        mu_sub[first, 0], mu_sub[first, 1] = self.mu[first], self.mu[second]
        cov_sub[first, 0], cov_sub[first, 1] = self.cov[first], self.cov[second]
        w = torch.stack([self.pi[first], self.pi[second]], 1)
        pi_sub[first] = w / w.sum(1, keepdim=True)
        return MixtureState(mu[kept], cov[kept], pi[kept], mu_sub[kept], cov_sub[kept],
                            pi_sub[kept])

    def set_sub(self, mu: Tensor, cov: Tensor, counts: Tensor, mask: Tensor,
                dirichlet_count: float) -> None:
        """New sub-cluster parameters for the clusters in `mask` (mu (2K, D), cov
        (2K, D, D): MAP estimates of the 2K sub-clusters; counts (2K,): their sizes, whose
        Dirichlet posterior gives the weights within each parent)."""
        a = dirichlet_count
        counts = counts.view(-1, 2)
        pi = (counts + a) / (counts.sum(1, keepdim=True) + 2 * a)
        dim = mu.shape[1]
        m = mask[:, None]
        self.mu_sub = torch.where(m[..., None], mu.view(-1, 2, dim), self.mu_sub)
        self.cov_sub = torch.where(m[..., None, None], cov.view(-1, 2, dim, dim), self.cov_sub)
        self.pi_sub = torch.where(m, pi, self.pi_sub)

    def grouped(self, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(means, covariances, weights) of the clusters formed by grouping components
        (`groups`: cluster index of each), each the moment-matched mixture of its members."""
        n = int(groups.max()) + 1
        w, mu = self.pi, self.mu
        weight = w.new_zeros(n).index_add_(0, groups, w)
        mean = mu.new_zeros(n, mu.shape[1]).index_add_(0, groups, w[:, None] * mu) / weight[:, None]
        dev = mu - mean[groups]
        second = self.cov + dev[:, :, None] * dev[:, None, :]
        cov = self.cov.new_zeros(n, *self.cov.shape[1:]).index_add_(
            0, groups, w[:, None, None] * second) / weight[:, None, None]
        return mean, cov, weight
