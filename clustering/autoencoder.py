"""Fully connected autoencoder for the AE alternation (clustering/alternation.py), plus its
pretraining.

Layout (a cleaner variant of the authors' DCN-derived AE, see docs/alternation.md):
  encoder: in -> [Linear -> ReLU] per hidden width -> Linear -> latent (linear code)
  decoder: latent -> [Linear -> ReLU] per hidden width, reversed -> Linear -> in
The authors end the encoder with ReLU -> BatchNorm, so their codes are non-negative and
depend on batch statistics in training mode; a linear code has neither quirk, and
DeepDPM's prior adapts to the code scale through its data-derived Psi.

Inputs are rescaled by an `InputTransform` (clustering/transform.py; fitted once, stored
with the weights) so that the same reconstruction weight means the same thing on 128-D
unit-norm MoCo features and on raw PCA coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from clustering.transform import InputTransform
from data.errors import InputError
from data.files import load_torch_dict
from data.records import EpochCallback

FORMAT = "deepdpm-ae-v2"  # v2: the input transform is an InputTransform


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    """Linear -> ReLU between consecutive widths; the last layer stays linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AutoEncoder(nn.Module):
    """MLP autoencoder in -> hidden... -> latent -> reversed(hidden)... -> in."""

    def __init__(self, in_dim: int, hidden: Sequence[int], latent_dim: int):
        super().__init__()
        self.in_dim, self.hidden, self.latent_dim = int(in_dim), [int(h) for h in hidden], \
            int(latent_dim)
        self.encoder = _mlp([self.in_dim, *self.hidden, self.latent_dim])
        self.decoder = _mlp([self.latent_dim, *reversed(self.hidden), self.in_dim])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)

    def arch(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "hidden": list(self.hidden), "latent_dim": self.latent_dim}


def reconstruction_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """Per-sample squared error summed over dimensions, averaged over the batch.

    The authors sum over the batch too; with Adam only the ratio to the pull term
    matters, and a batch mean keeps the loss independent of the batch size.
    """
    return (x - x_hat).pow(2).sum(1).mean()


@dataclass
class TrainSettings:
    """Optimiser settings of one AE training block."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    recon_weight: float = 1.0  # lambda_ of the alternation loss
    pull_weight: float = 0.0  # its beta / 2 (0 = reconstruction only)


def train_autoencoder(ae: AutoEncoder, x: Tensor, settings: TrainSettings,
                      generator: torch.Generator,
                      extra_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
                      on_epoch: EpochCallback | None = None) -> list[dict[str, float]]:
    """Adam on recon_weight * reconstruction + pull_weight * extra_loss(z, batch_index).

    `x` is the scaled input already on the AE's device; `extra_loss` receives the codes
    of the batch and the row indices so that per-point targets can be gathered without
    a Python loop. Returns one dict of mean (unweighted) losses per epoch; `on_epoch` gets
    the same with the epoch's index.
    """
    opt = torch.optim.Adam(ae.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    n = x.shape[0]
    log: list[dict[str, float]] = []
    for epoch in range(settings.epochs):
        ae.train()
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        sums = torch.zeros(2, device=x.device)
        for start in range(0, n, settings.batch_size):
            idx = order[start:start + settings.batch_size]
            z, x_hat = ae(x[idx])
            recon = reconstruction_loss(x[idx], x_hat)
            pull = extra_loss(z, idx) if extra_loss is not None else recon.new_zeros(())
            loss = settings.recon_weight * recon + settings.pull_weight * pull
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([recon.detach(), pull.detach()]) * len(idx)
        if not torch.isfinite(sums).all():
            raise InputError(f"autoencoder training diverged at epoch {epoch} (loss is not "
                             "finite); lower the learning rate or check the input scale")
        rec = {"recon_loss": float(sums[0] / n), "pull_loss": float(sums[1] / n)}
        log.append(rec)
        if on_epoch is not None:
            on_epoch({"epoch": epoch, **rec})
    ae.eval()
    return log


@torch.no_grad()
def encode(ae: AutoEncoder, x: Tensor, chunk: int = 65536) -> Tensor:
    """Codes of already-scaled input in eval mode, in chunks to bound memory."""
    ae.eval()
    return torch.cat([ae.encoder(x[a:a + chunk]) for a in range(0, x.shape[0], chunk)])


def ae_state(ae: AutoEncoder, scaler: InputTransform, **extra: Any) -> dict[str, Any]:
    """Weights + architecture + input scaling as plain tensors (loadable weights_only)."""
    cpu = torch.device("cpu")
    return {"format": FORMAT, **ae.arch(), "input_transform": scaler.state(),
            "state_dict": {k: v.detach().to(cpu) for k, v in ae.state_dict().items()},
            **extra}


def load_ae_state(path: Any, device: torch.device) -> tuple[AutoEncoder, InputTransform,
                                                             dict[str, Any]]:
    """Rebuild (AE, scaler, raw state) from a file written with `ae_state`."""
    state = load_torch_dict(path, "autoencoder weights")
    if state.get("format") != FORMAT:
        if str(state.get("format")).startswith("deepdpm-ae-v"):
            raise InputError(f"{path}: saved by another version (format {state['format']}, "
                             f"this one reads {FORMAT}); delete it and train again")
        raise InputError(f"{path}: not an autoencoder weights file (format != {FORMAT})")
    ae = AutoEncoder(state["in_dim"], state["hidden"], state["latent_dim"]).to(device)
    ae.load_state_dict(state["state_dict"])
    ae.eval()
    return ae, InputTransform.from_state(state["input_transform"], device), state
