"""Input and parameter checks, run at the start of `fit`, each failing with one clear line."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from clustering.config import INPUT_TRANSFORMS, DeepDPMConfig
from clustering.distributed import World
from data.errors import InputError

MIN_POINTS = 10


class InputTypeError(InputError, TypeError):
    """X holds values that are not numbers at all (a dict in an object array)."""


class NotFittedError(InputError, SklearnNotFittedError):
    """predict (or another method that needs a fit) before fit: one of our InputErrors,
    and scikit-learn's NotFittedError for code that catches that."""

M_STEP_FROM = ("gmm", "net")
PRIOR_SIGMA = ("data_cov", "data_var", "isotropic", "data_std")
PRIOR_MU = ("data_mean", "zero")


def check_array(X: Any, name: str = "X", min_rows: int = MIN_POINTS) -> np.ndarray:
    """A finite real N x D array (float64 stays float64: the unit change is computed in it
    before the model's float32; everything else becomes float32), or one clear InputError."""
    if torch.is_tensor(X):
        X = X.detach().cpu().numpy()
    if type(X).__module__.startswith("scipy.sparse"):
        raise InputError(f"{name} is a sparse matrix; sparse input is not supported (pass "
                         f"{name}.toarray())")
    try:
        arr = np.asarray(X)
    except Exception as exc:
        raise InputError(f"{name} cannot be read as an array ({exc})") from exc
    if np.iscomplexobj(arr):
        raise InputError(f"{name} is complex ({arr.dtype}). Complex data not supported; pass "
                         "real features (e.g. np.hstack([X.real, X.imag]))")
    if arr.dtype == object:  # numbers in an object array (e.g. from a DataFrame) are fine
        try:
            arr = arr.astype(np.float64)
        except TypeError as exc:  # a dict or list inside: one of ours, and a TypeError
            raise InputTypeError(f"{name} must be numeric ({exc})") from exc
        except ValueError as exc:
            raise InputError(f"{name} must be numeric ({exc})") from exc
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (N x D), got shape {arr.shape}. Reshape your "
                         "data: X.reshape(-1, 1) for one feature, X.reshape(1, -1) for one row")
    if arr.shape[1] < 1:
        raise InputError(f"{name} has no columns: 0 feature(s) (shape={arr.shape}) while a "
                         "minimum of 1 is required.")
    if arr.shape[0] < min_rows:
        raise InputError(f"{name} has {arr.shape[0]} rows (n_samples = {arr.shape[0]}); at "
                         f"least {min_rows} points are needed")
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr).all(1)
    if bad.any():
        raise InputError(f"{name} has NaN or Inf in {int(bad.sum())} of {arr.shape[0]} rows "
                         f"(first at row {int(np.argmax(bad))})")
    return np.ascontiguousarray(arr)


def check_fit_inputs(X: Any, y: Any, world: World, batch_size: Callable[[int], int],
                     ) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """(X, labels, total rows, rows of the largest shard), checked; with several ranks X
    and y are this rank's shard, the labels come back gathered from every shard, and a bad
    shard on any rank fails every rank with the same message. `batch_size(n_max)`: the
    batch the ranks step with (every shard must fill as many steps as the largest)."""
    error, x_np, labels = None, None, None
    try:
        x_np = check_array(X, "X", min_rows=1 if world.active else MIN_POINTS)
        labels = check_labels(y, x_np.shape[0]) if y is not None else None
    except InputError as exc:
        error = exc
    world.agree(error)
    n_total = world.count(x_np.shape[0])
    if not world.active:
        return x_np, labels, n_total, x_np.shape[0]
    shapes = world.gather_object(x_np.shape)
    if len({d for _, d in shapes}) > 1:
        raise InputError(f"the ranks' shards have different widths {shapes}")
    if n_total < MIN_POINTS:
        raise InputError(f"X has {n_total} rows over all shards; at least {MIN_POINTS} points "
                         "are needed")
    n_max = max(n for n, _ in shapes)
    steps = -(-n_max // batch_size(n_max))
    if min(n for n, _ in shapes) < steps:
        raise InputError(f"the shards are too uneven {[n for n, _ in shapes]}: every rank "
                         f"takes {steps} steps per epoch, so each needs at least {steps} "
                         f"rows; give each rank about N / {world.size} rows")
    if labels is not None:
        labels = np.concatenate(world.gather_object(labels))
    return x_np, labels, n_total, n_max


def check_labels(y: Any, n: int) -> np.ndarray:
    """1-D labels of length n (any integer or string dtype)."""
    if torch.is_tensor(y):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(f"labels must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise InputError(f"labels have {len(arr)} entries but X has {n} rows")
    return arr


def check_config(cfg: DeepDPMConfig, n: int, dim: int) -> None:
    """Parameter checks that depend on the data (sklearn validates in fit, so do we)."""

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise InputError(msg)

    need(isinstance(cfg.init_k, int) and 1 <= cfg.init_k <= n,
         f"init_k must be between 1 and the number of points ({n}), got {cfg.init_k}")
    need(cfg.max_epochs >= 1, f"max_epochs must be >= 1, got {cfg.max_epochs}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(cfg.alpha > 0, f"alpha must be > 0, got {cfg.alpha}")
    need(cfg.kappa > 0, f"kappa must be > 0, got {cfg.kappa}")
    need(cfg.prior_sigma_scale > 0, f"prior_sigma_scale must be > 0, got {cfg.prior_sigma_scale}")
    need(cfg.dirichlet_count > 0, f"dirichlet_count must be > 0, got {cfg.dirichlet_count}")
    wd = cfg.whiten_dim
    need(wd is None or (isinstance(wd, numbers.Integral) and not isinstance(wd, bool)
                        and wd >= 1), f"whiten_dim must be None or an int >= 1, got {wd!r}")
    need(wd is None or cfg.input_transform == "whiten",
         f"whiten_dim={wd} is only used with input_transform='whiten' (it is "
         f"{cfg.input_transform!r})")
    space = f"{dim}-D data"
    if cfg.input_transform == "whiten" and wd is not None and wd < dim:
        dim, space = int(wd), f"{wd} whitened dimensions"  # what the clustering sees
    need(cfg.nu is None or cfg.nu > dim - 1,
         f"nu must be > D - 1 = {dim - 1} for {space}, got {cfg.nu}")
    need(cfg.input_transform in INPUT_TRANSFORMS,
         f"input_transform must be one of {INPUT_TRANSFORMS}, got {cfg.input_transform!r}")
    need(cfg.prior_sigma_choice in PRIOR_SIGMA,
         f"prior_sigma_choice must be one of {PRIOR_SIGMA}, got {cfg.prior_sigma_choice!r}")
    need(cfg.m_step_from in M_STEP_FROM,
         f"m_step_from must be one of {M_STEP_FROM}, got {cfg.m_step_from!r}")
    need(cfg.prior_mu in PRIOR_MU, f"prior_mu must be one of {PRIOR_MU}, got {cfg.prior_mu!r}")
    need(cfg.cluster_lr > 0 and cfg.subcluster_lr > 0, "learning rates must be > 0")
    need(cfg.subcluster_hidden >= 1, "subcluster_hidden must be >= 1")
    need(not cfg.cluster_hidden or all(int(w) >= 1 for w in cfg.cluster_hidden),
         "cluster_hidden widths must be >= 1")
    need(cfg.split_merge_every >= 1, "split_merge_every must be >= 1")
    need(cfg.freeze_after_step >= 0, "freeze_after_step must be >= 0")
    need(cfg.merge_neighbours >= 1, "merge_neighbours must be >= 1")
    need(cfg.eval_every >= 1, "eval_every must be >= 1")
    need(cfg.tol is None or cfg.tol >= 0, f"tol must be >= 0 or null, got {cfg.tol}")
    need(cfg.n_moves_no_change >= 1,
         f"n_moves_no_change must be >= 1, got {cfg.n_moves_no_change}")
    need(cfg.kmeans_iters >= 1, "kmeans_iters must be >= 1")
    need(cfg.cpu_threads is None or cfg.cpu_threads >= 1, "cpu_threads must be >= 1 or null")
