"""Stage manifests: the record that a stage finished, and of what it was computed from.

A manifest holds the hash of the stage's config section, the hash of its inputs (upstream
manifests' output hashes, or input files' bytes) and the sha256 of every output. It is
written last and atomically, so its presence means "this stage's outputs are complete";
a stage killed midway leaves none and is redone on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from data.files import save_json

MANIFEST = "manifest.json"
RUNNING = ".running.json"  # hashes of a stage in progress (lets a matching rerun resume)


def hash_obj(obj: Any) -> str:
    """Stable sha256 of a JSON-able object (keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def hash_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed (embeddings can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_tree_listing(root: str | os.PathLike) -> str:
    """Cheap fingerprint of a folder of images: relative paths, sizes and mtimes.

    Reading every image's bytes would cost as much as the features stage itself.
    """
    root = Path(root)
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            st = path.stat()
            entries.append((str(path.relative_to(root)), st.st_size, int(st.st_mtime)))
    return hash_obj(entries)


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest, or None when missing or unreadable (= stage not done)."""
    path = stage_dir / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def outputs_present(stage_dir: Path, manifest: dict[str, Any]) -> bool:
    """Every recorded output still exists with its recorded size (no re-hashing)."""
    for rel, info in manifest.get("outputs", {}).items():
        path = stage_dir / rel
        if not path.is_file() or path.stat().st_size != info["size"]:
            return False
    return True


def is_current(stage_dir: Path, config_hash: str, inputs_hash: str) -> bool:
    """Whether the stage's finished outputs match this config and these inputs."""
    manifest = read_manifest(stage_dir)
    return (manifest is not None and manifest.get("config_hash") == config_hash
            and manifest.get("inputs_hash") == inputs_hash
            and outputs_present(stage_dir, manifest))


def prepare_stage_dir(stage_dir: Path, config_hash: str, inputs_hash: str,
                      keep: tuple[str, ...] = ()) -> None:
    """Drop the old manifest first, then stale outputs, then mark the stage as running.

    Entries named in `keep` survive only when an interrupted run with the same hashes left
    them (e.g. a MoCo checkpoint to resume from); anything else is cleared.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / MANIFEST).unlink(missing_ok=True)
    running = stage_dir / RUNNING
    try:
        previous = json.loads(running.read_text())
    except (OSError, ValueError):
        previous = {}
    same = previous == {"config_hash": config_hash, "inputs_hash": inputs_hash}
    for entry in stage_dir.iterdir():
        if entry.name == RUNNING or (same and entry.name in keep):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    save_json(running, {"config_hash": config_hash, "inputs_hash": inputs_hash})


def write_manifest(stage_dir: Path, stage: str, config_hash: str, inputs_hash: str,
                   outputs: list[str], artifacts: dict[str, Any], seconds: float) -> dict:
    """Hash the outputs and write the manifest last, atomically; clear the running mark."""
    manifest = {
        "stage": stage,
        "config_hash": config_hash,
        "inputs_hash": inputs_hash,
        "outputs": {rel: {"sha256": hash_file(stage_dir / rel),
                          "size": (stage_dir / rel).stat().st_size} for rel in sorted(outputs)},
        "artifacts": artifacts,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    save_json(stage_dir / MANIFEST, manifest)
    (stage_dir / RUNNING).unlink(missing_ok=True)
    return manifest


def outputs_hash(manifest: dict[str, Any]) -> str:
    """What downstream stages hash as their input: the upstream outputs' content."""
    return hash_obj({rel: info["sha256"] for rel, info in manifest["outputs"].items()})
