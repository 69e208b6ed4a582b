"""Saving and loading a DeepDPM model: the whole training state in one torch file of
tensors and plain values (read back with `weights_only`, so nothing is unpickled), from
which `predict` works and `fit(resume=True)` continues the run."""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from clustering.mixture import MixtureState
from clustering.nets import ClusterNet, SubclusterNets
from clustering.niw import NIWPrior
from clustering.training import Training, cluster_hidden
from clustering.transform import InputTransform
from data.devices import resolve_device
from data.errors import InputError
from data.files import load_torch_dict, save_torch

if TYPE_CHECKING:
    from clustering.model import DeepDPM

FORMAT = "deepdpm-v4"  # v2: clusters by mode; v3: unit change; v4: transform -> input_transform


def model_state(model: DeepDPM) -> dict[str, Any]:
    """Everything needed to predict and to resume training (tensors on the CPU)."""
    cpu = torch.device("cpu")
    fit = model._fitted_training()

    def mv(t: Any) -> Any:
        return t.detach().to(cpu) if torch.is_tensor(t) else t

    return {
        "format": FORMAT,
        "config": asdict(model.config),
        "dim": model._dim,
        "k": fit.k,
        "epoch": model.epoch_,
        "transform": model.transform_.state(),  # CPU tensors already
        "prior": {"m0": mv(model.prior_.m0), "psi": mv(model.prior_.psi),
                  "nu": model.prior_.nu, "kappa": model.prior_.kappa},
        "params": {name: mv(t) for name, t in fit.mix.arrays().items()},
        "cluster_net": {key: mv(v) for key, v in fit.cluster_net.state_dict().items()},
        "sub_nets": {key: mv(v) for key, v in fit.sub_nets.state_dict().items()},
        "opt_cluster": optimizer_state(fit.opt_cluster),
        "opt_sub": optimizer_state(fit.opt_sub),
        "component_cluster": mv(model.component_cluster_),
        "schedule": {"last_move_epoch": fit.last_move_epoch, "next_move": fit.next_move,
                     "sub_ready": fit.sub_ready, "end_epoch": fit.end_epoch,
                     "quiet_log_joints": list(fit.quiet_log_joints)},
        "generator": fit.generator.get_state(),
        "history": copy.deepcopy(model.history_),
        "metrics": getattr(model, "metrics_", None),
    }


def save_model(model: DeepDPM, path: str | Path) -> None:
    """`model_state`, written atomically."""
    if not model._fitted:
        raise InputError("cannot save an unfitted model")
    save_torch(path, model_state(model))

def load_model(cls: type[DeepDPM], path: str | Path, device: str | None = None) -> DeepDPM:
    """A model saved by `save_model` (tensors only; nothing is unpickled); a file of
    another format or a damaged one is a one-line InputError."""
    p = Path(path)
    state = load_torch_dict(p, "DeepDPM model")
    if not str(state.get("format")).startswith("deepdpm-v"):
        raise InputError(f"{p}: not a DeepDPM model file")
    if state["format"] != FORMAT:
        raise InputError(f"{p}: saved by another version of DeepDPM (format "
                         f"{state['format']}, this one reads {FORMAT}); fit it again")
    try:
        params = dict(state["config"])
        if device is not None:
            params["device"] = device
        model = cls(**params)
        model.device_ = resolve_device(model.config.device)
        restore_training(model, state)
        check_restored(model, state["k"])
    except InputError as exc:
        raise InputError(f"{p}: damaged DeepDPM model file ({exc})") from exc
    except Exception as exc:  # missing keys, wrong shapes: the file was altered
        detail = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise InputError(f"{p}: damaged DeepDPM model file ({exc.__class__.__name__}"
                         f"{': ' + detail if detail else ''})") from exc
    model._train_state = state
    model._fitted = True
    return model

def restore_training(model: DeepDPM, state: dict[str, Any]) -> None:
    """Put the saved transform, prior, training state (mixture, nets, optimisers, schedule)
    and history back into `model`. The per-point buffers stay empty until a resumed fit
    rebuilds them (`Training.rebuild_buffers`)."""
    dev = model.device_
    cfg = model.config
    model._dim, model.epoch_ = state["dim"], state["epoch"]
    model.transform_ = InputTransform.from_state(state["transform"], dev)
    model.n_features_in_ = model.transform_.in_dim
    pr = state["prior"]
    model.prior_ = NIWPrior(pr["m0"].to(dev), pr["psi"].to(dev), pr["nu"], pr["kappa"])
    generator = torch.Generator(device=dev)
    generator.set_state(state["generator"])
    fit = Training(cfg, model.prior_, model._world, dev, generator, n_total=0, n_max=0)
    fit.mix = MixtureState(**{name: t.to(dev) for name, t in state["params"].items()})
    k = state["k"]
    fit.cluster_net = ClusterNet(model._dim, k, cluster_hidden(cfg), generator, dev)
    fit.cluster_net.load_state_dict(state["cluster_net"])
    fit.sub_nets = SubclusterNets(model._dim, k, cfg.subcluster_hidden, generator, dev)
    fit.sub_nets.load_state_dict(state["sub_nets"])
    generator.set_state(state["generator"])
    fit.opt_cluster = torch.optim.Adam(fit.cluster_net.parameters(), lr=cfg.cluster_lr)
    fit.opt_sub = torch.optim.Adam(fit.sub_nets.parameters(), lr=cfg.subcluster_lr)
    fit.opt_cluster.load_state_dict(state["opt_cluster"])
    fit.opt_sub.load_state_dict(state["opt_sub"])
    sched = state["schedule"]
    fit.last_move_epoch, fit.next_move = sched["last_move_epoch"], sched["next_move"]
    fit.sub_ready = sched["sub_ready"]
    # a resumed run with a larger max_epochs continues unless it had converged
    fit.quiet_log_joints = list(sched["quiet_log_joints"])
    converged = sched["end_epoch"] < state["config"]["max_epochs"]
    fit.end_epoch = sched["end_epoch"] if converged else cfg.max_epochs
    fit.z = torch.empty(0, dtype=torch.long, device=dev)
    model._training = fit
    model.history_ = list(state["history"])
    model.n_iter_, model.converged_ = len(model.history_), converged
    if state.get("metrics") is not None:
        model.metrics_ = state["metrics"]
    model._set_clusters(state["component_cluster"].to(dev))
    if not hasattr(model, "labels_"):
        model.labels_ = np.empty(0, dtype=np.int64)


def check_restored(model: DeepDPM, k: int) -> None:
    """Every restored array agrees with the saved K and D (a tampered file fails here, not
    in predict)."""
    mix, dim = model._fitted_training().mix, model._dim
    with torch.no_grad():
        out = model.cluster_net_(torch.zeros(1, dim, device=model.device_)).shape
    shapes = {"means": (mix.mu.shape, (k, dim)),
              "covariances": (mix.cov.shape, (k, dim, dim)),
              "weights": (mix.pi.shape, (k,)), "cluster net output": (out, (1, k)),
              "component_cluster": (model.component_cluster_.shape, (k,))}
    for name, (got, want) in shapes.items():
        if tuple(got) != want:
            raise InputError(f"{name} have shape {tuple(got)}, expected {want} for K = {k}")
    groups = model.component_cluster_
    if bool((groups < 0).any()) or bool((groups >= k).any()):
        raise InputError("component_cluster refers to clusters that do not exist")


def optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Optimizer state_dict with tensors moved to CPU (param order = module.parameters())."""
    state = opt.state_dict()
    return {
        "state": {k: {n: (v.detach().cpu() if torch.is_tensor(v) else v) for n, v in s.items()}
                  for k, s in state["state"].items()},
        "param_groups": state["param_groups"],
    }
