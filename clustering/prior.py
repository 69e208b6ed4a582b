"""The NIW prior built from the data (`prior_sigma_choice`, `prior_mu`, `nu`, `kappa`).

`data_cov` (the default) sets Psi to the covariance of X itself, so the prior has the
data's own scale and orientation and no constant per data set (docs/benchmarks.md, "K
inference"); the other choices are the authors' fixed-scale priors, kept for ablations.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from clustering.config import DeepDPMConfig
from clustering.distributed import World
from clustering.niw import NIWPrior
from clustering.transform import InputTransform, moments


def data_prior(x: Tensor, cfg: DeepDPMConfig, transform: InputTransform,
               world: World) -> NIWPrior:
    """The prior for the transformed data x (centred on its mean; with several ranks,
    this rank's shard: the moments are over all shards)."""
    dim = x.shape[1]
    if cfg.prior_sigma_choice == "isotropic":
        psi = cfg.prior_sigma_scale * torch.eye(dim, dtype=torch.float64, device=x.device)
    elif cfg.prior_sigma_choice == "data_std":
        var = torch.diagonal(moments(x, world=world)[1])
        psi = cfg.prior_sigma_scale * torch.diag(var.sqrt().clamp_min(1e-12))
    elif cfg.prior_sigma_choice == "data_var":
        var = torch.diagonal(moments(x, world=world)[1])
        psi = (cfg.prior_sigma_scale * var.mean().clamp_min(1e-12)
               * torch.eye(dim, dtype=torch.float64, device=x.device))
    else:  # data_cov: scale x the data's covariance, kept positive definite
        cov = moments(x, world=world)[1]
        ridge = 1e-6 * torch.diagonal(cov).mean().clamp_min(1e-30)
        psi = cfg.prior_sigma_scale * (cov + ridge * torch.eye(dim, dtype=cov.dtype,
                                                               device=cov.device))
    m0 = torch.zeros(dim, dtype=torch.float64, device=x.device)  # x is centred on the mean
    if cfg.prior_mu == "zero":
        m0 = transform.transform(np.zeros((1, transform.in_dim)))[0].double()
    nu = float(cfg.nu) if cfg.nu is not None else dim + 2.0
    return NIWPrior(m0=m0, psi=psi, nu=nu, kappa=cfg.kappa)
