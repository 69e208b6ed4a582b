"""The files of an AE alternation run: which alternations are done, whether a rerun may
reuse them, and the history table.

Layout under `out_dir` (every file written atomically):
  ae_pretrained.pt            AE after reconstruction pretraining (reused when present)
  alternation_run.json        settings + data fingerprint of the run (the resume check)
  alt_<t>/encoder.pt          AE whose codes alternation t clusters (written before DeepDPM)
  alt_<t>/codes.npy, labels.npy, deepdpm.pt, summary.json (summary = "t is done")
  history.csv                 one row per finished alternation (K, metrics, losses, times)
  encoder.pt, deepdpm.pt, labels.npy, codes.npy, alternation.json   final outputs

A rerun reuses finished alternations only when the pretrained AE was reused and the
settings and data are those of `alternation_run.json`; otherwise it restarts from 0.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clustering.config import AlternationConfig
from data.files import save_csv, save_json, save_npy

if TYPE_CHECKING:
    from clustering.model import DeepDPM

FORMAT = "deepdpm-alternation-v1"
# Keys whose change invalidates the pretrained AE / the alternation state (for resume).
PRETRAIN_KEYS = ("hidden_dims", "latent_dim", "input_transform", "batch_size",
                 "pretrain_epochs", "pretrain_lr", "seed")
ALTERNATE_KEYS = ("ae_epochs", "lr", "weight_decay", "lambda_", "beta", "assignment",
                  "warm_start", "prior_sigma_scale_step")  # cluster_overrides: via cluster_config
CLUSTER_RUNTIME_KEYS = ("device", "verbose", "eval_every")


def data_fingerprint(x: np.ndarray) -> dict[str, Any]:
    """Shape and SHA-256 of the float32 input (the pipeline's manifests hash with SHA-256
    too), so a resume never mixes data sets."""
    digest = hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()
    return {"n": int(x.shape[0]), "d": int(x.shape[1]), "sha256": digest}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def pretrain_manifest(cfg: AlternationConfig, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What the pretrained AE depends on (saved inside ae_pretrained.pt)."""
    keys = asdict(cfg)
    return {"data": fingerprint, "settings": {k: keys[k] for k in PRETRAIN_KEYS}}


def run_manifest(cfg: AlternationConfig, cluster_params: dict[str, Any],
                 fingerprint: dict[str, Any]) -> dict[str, Any]:
    """What the alternations depend on (alternation_run.json)."""
    keys = asdict(cfg)
    cluster = {k: v for k, v in cluster_params.items() if k not in CLUSTER_RUNTIME_KEYS}
    return {"format": FORMAT, "data": fingerprint,
            "settings": {k: keys[k] for k in PRETRAIN_KEYS + ALTERNATE_KEYS},
            "cluster_config": cluster}


class RunFolder:
    """One run's folder (`root` None: a run that saves nothing; every method is a no-op)."""

    def __init__(self, root: Path | None):
        self.root = root

    def path(self, *parts: str) -> Path | None:
        return None if self.root is None else self.root.joinpath(*parts)

    def reusable(self, manifest: dict[str, Any], allowed: bool, n_alternations: int,
                 ) -> int | None:
        """Record `manifest`; return how many finished alternations a resume may reuse
        (0 or more), or None when the alternations must restart from 0: no folder, resume
        not `allowed` (off, or the AE was pretrained anew), no earlier run, or its
        settings differ (warned, naming the keys)."""
        path = self.path("alternation_run.json")
        if path is None:
            return None
        old = read_json(path) if path.is_file() else None
        save_json(path, manifest)
        if not allowed or old is None:
            return None
        if old != manifest:
            changed = sorted(k for sec in ("settings", "cluster_config")
                             for k in set(old.get(sec, {})) | set(manifest[sec])
                             if old.get(sec, {}).get(k) != manifest[sec].get(k))
            warnings.warn(f"{self.root}: settings changed ({changed}); keeping the "
                          "pretrained AE and restarting the alternations", stacklevel=4)
            return None
        done = 0
        while done < n_alternations and self._summary(done).is_file():
            done += 1
        return done

    def summaries(self, count: int) -> list[dict[str, Any]]:
        """The summaries of alternations 0 .. count - 1."""
        return [read_json(self._summary(t)) for t in range(count)]

    def _summary(self, t: int) -> Path:
        assert self.root is not None
        return self.root / f"alt_{t}" / "summary.json"

    def save_alternation(self, t: int, labels: np.ndarray, model: DeepDPM,
                         codes: np.ndarray | None, summary: dict[str, Any]) -> None:
        """alt_<t>/: labels, DeepDPM, codes (unless None), then the summary that marks it
        done."""
        folder = self.path(f"alt_{t}")
        if folder is None:
            return
        save_npy(folder / "labels.npy", labels)
        model.save(str(folder / "deepdpm.pt"))
        if codes is not None:
            save_npy(folder / "codes.npy", codes)
        save_json(folder / "summary.json", summary)  # last: marks t as done

    def save_history(self, history: list[dict[str, Any]]) -> None:
        if self.root is not None:
            save_csv(self.root / "history.csv", history)
