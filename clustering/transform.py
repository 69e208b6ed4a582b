"""Input preprocessing fitted on the training data and reused on new data: the one
input transform of the package (DeepDPM's `input_transform`, and the autoencoder's).

Kinds: none (as is), normalize (rows to unit L2 norm), scale (centre, then one factor so
the mean squared row norm is 1: keeps the geometry), standardize (per-column z-score),
whiten (PCA whitening to `whiten_dim` components).

Every kind is computed after a unit change in float64 (centre, then divide by one scalar,
the root-mean-square distance from the centre), so that the float32 arithmetic always sees
numbers of order 1: the result does not depend on the data's units (blobs at scale 1e-6
and 1e6, or shifted by 1e6, get the same labels), and values near the float32 limit do
not overflow. Every kind but none is unaffected by that change (normalize skips the
centring: row norms are not translation invariant).

Two outputs. `apply(x)` is the transform itself (none: X as is); the autoencoder trains on
it, because its losses depend on the input's scale. `transform(x)` is DeepDPM's model
space: the unit change also applies to none, and the result is centred. DeepDPM's
posterior over partitions does not change under one affine map of its input (the data_cov
prior is affine-equivariant), so this costs nothing; `to_input_units` maps its means and
covariances back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from clustering.config import AE_INPUT_TRANSFORMS, INPUT_TRANSFORMS
from clustering.distributed import World
from data.errors import InputError

CHUNK = 65536
KINDS = tuple(dict.fromkeys(INPUT_TRANSFORMS + AE_INPUT_TRANSFORMS))


def _unit_change(x: np.ndarray, centred: bool, world: World) -> tuple[np.ndarray, float]:
    """Float64 centre (D,) and scale: the RMS distance to the centre, computed against the
    largest deviation first so that no square overflows even near float64's limit. With
    several ranks, sums and the largest deviation are taken over every shard."""
    starts = range(0, len(x), CHUNK)
    n_total = world.count(len(x))

    def total(value: np.ndarray | float, reduce: Any = world.sum) -> Any:
        if not world.active:
            return value
        out = reduce(torch.as_tensor(np.asarray(value, dtype=np.float64))).numpy()
        return out if out.ndim else float(out)

    centre = np.zeros(x.shape[1])
    if centred:
        centre = total(sum(x[a:a + CHUNK].sum(0, dtype=np.float64) for a in starts)) / n_total
    with np.errstate(over="ignore", invalid="ignore"):
        peak = total(max(float(np.abs(x[a:a + CHUNK] - centre).max()) for a in starts),
                     world.max)
        if not np.isfinite(peak):
            raise InputError("X has values too large to centre in float64 "
                             f"(largest |x| = {float(np.abs(x).max()):.3g})")
        if peak == 0:
            return centre, 1.0  # every row equal: nothing to rescale
        mean_sq = total(sum(float(np.square((x[a:a + CHUNK] - centre) / peak).sum())
                            for a in starts)) / (n_total * x.shape[1])
    scale = peak * float(np.sqrt(mean_sq))
    if not 1e-150 < scale < 1e150:  # covariances (scale^2) must be representable
        raise InputError(f"X's spread ({scale:.3g}) is outside what float64 covariances can "
                         "hold (1e-150 to 1e150); rescale X")
    return centre, scale


def moments(x: Tensor, chunk: int = CHUNK, world: World | None = None) -> tuple[Tensor, Tensor]:
    """Mean (D,) and covariance (D, D) of the rows of x (of every shard) in float64,
    accumulated in chunks so that large X is never copied whole."""
    world = world or World()
    starts = range(0, len(x), chunk)
    n = world.count(len(x))
    mean = world.sum(sum(x[a:a + chunk].double().sum(0) for a in starts)) / n
    scatter = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
    for a in starts:
        part = x[a:a + chunk].double() - mean
        scatter += part.T @ part
    return mean, world.sum(scatter) / max(n - 1, 1)


def _whitening(x: Tensor, keep: int | None, world: World) -> tuple[Tensor, Tensor]:
    """Mean and D x d PCA-whitening matrix; drops directions with (numerically) no variance."""
    mean, cov = moments(x, world=world)
    eigval, eigvec = torch.linalg.eigh(cov)
    eigval, eigvec = eigval.flip(0), eigvec.flip(1)  # largest first
    top = float(eigval[0])
    rank = int((eigval > max(top * 1e-10, 1e-30)).sum()) if top > 0 else 0
    if rank == 0:
        raise InputError("input_transform='whiten': X has no variance (all rows are equal)")
    d = min(rank, keep) if keep is not None else rank
    proj = eigvec[:, :d] / eigval[:d].sqrt()
    return mean.to(x.dtype), proj.to(x.dtype)


class InputTransform:
    """`kind` fitted on the training rows: `apply(x)` / `transform(x)` give float32
    tensors on the fitted device (see the module docstring).

    `whiten` projects onto the top `whiten_dim` principal components and scales each to unit
    variance. Self-supervised features often spend most of their variance on a few nuisance
    directions (pose, stroke width); whitening stops those from dominating the Gaussians.
    """

    def __init__(self, kind: str, whiten_dim: int | None = None):
        if kind not in KINDS:
            raise InputError(f"input_transform must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.whiten_dim = whiten_dim
        self.in_dim: int | None = None
        self.centre: Tensor | None = None  # float64 unit change: (x - centre) / scale
        self.scale: float = 1.0
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self.proj: Tensor | None = None  # whiten: D x d projection
        self.shift: Tensor | None = None  # centring of the model space (float32 accuracy)

    def fit(self, x: np.ndarray, device: torch.device,
            world: World | None = None) -> InputTransform:
        """Fit on the raw N x D array (float32 or float64); with several ranks, on the
        union of their shards."""
        world = world or World()
        self.in_dim = x.shape[1]
        centre, self.scale = _unit_change(x, self.kind != "normalize", world)
        self.centre = torch.as_tensor(centre, dtype=torch.float64, device=device)
        u = self._unit(x)
        if self.kind == "standardize" and not world.active:
            self.mean, self.std = u.mean(0), u.std(0).clamp_min(1e-12)
        elif self.kind == "standardize":
            mean, cov = moments(u, world=world)
            self.mean = mean.to(u.dtype)
            self.std = torch.diagonal(cov).sqrt().to(u.dtype).clamp_min(1e-12)
        elif self.kind == "whiten":
            self.mean, self.proj = _whitening(u, self.whiten_dim, world)
        applied = self._apply(u)
        self.shift = (applied.mean(0) if not world.active
                      else world.sum(applied.sum(0)) / world.count(len(u)))
        return self

    def _unit(self, x: np.ndarray) -> Tensor:
        """(x - centre) / scale in float64, chunk by chunk, stored as float32."""
        out = torch.empty(x.shape, dtype=torch.float32, device=self.centre.device)
        for a in range(0, len(x), CHUNK):
            part = torch.as_tensor(np.asarray(x[a:a + CHUNK]), device=out.device).double()
            out[a:a + CHUNK] = (part - self.centre) / self.scale
        return out

    def _apply(self, u: Tensor) -> Tensor:
        if self.kind == "normalize":
            return F.normalize(u, dim=1)
        if self.kind == "scale":  # the mean squared row norm of u is D
            return u / float(np.sqrt(u.shape[1]))
        if self.kind == "standardize":
            return (u - self.mean) / self.std
        if self.kind == "whiten":
            return (u - self.mean) @ self.proj
        return u

    def apply(self, x: np.ndarray) -> Tensor:
        """The transform itself (none: X as is, in float32)."""
        if self.kind == "none":
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.centre.device)
        return self._apply(self._unit(x))

    def transform(self, x: np.ndarray) -> Tensor:
        """DeepDPM's model space: `apply` up to one affine map (the unit change for none),
        centred."""
        return self._apply(self._unit(x)) - self.shift

    def to_input_units(self, mean: Tensor, cov: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Means and covariances from the model space to `apply`'s: X's units for kind
        none, the transformed space (unit-free) for the others."""
        mean = mean + self.shift.double()
        if self.kind == "none":
            mean, cov = mean * self.scale + self.centre, cov * self.scale ** 2
        return mean.cpu().numpy(), cov.cpu().numpy()

    def state(self) -> dict[str, Any]:
        """The fitted transform as plain values and CPU tensors (for a weights_only file)."""
        def cpu(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().cpu()

        return {"kind": self.kind, "whiten_dim": self.whiten_dim, "in_dim": self.in_dim,
                "centre": cpu(self.centre), "scale": self.scale, "mean": cpu(self.mean),
                "std": cpu(self.std), "proj": cpu(self.proj), "shift": cpu(self.shift)}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> InputTransform:
        t = cls(state["kind"], state["whiten_dim"])
        t.in_dim, t.scale = state["in_dim"], float(state["scale"])
        for name in ("centre", "mean", "std", "proj", "shift"):
            value = state[name]
            setattr(t, name, None if value is None else value.to(device))
        return t
