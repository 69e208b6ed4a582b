"""Stage manifests: the record that a stage finished, and of what it was computed from.

A manifest holds the hash of the stage's config section, the hash of its inputs (upstream
manifests' output hashes, or input files' bytes), the sha256 of every output and the list
of entries the stage wrote. A stage runs in a partial sibling folder (`.<stage>.partial`)
and the manifest is written there last; only then does the folder replace the stage's
folder whole (data/folders.py). A stage killed midway leaves the old folder untouched and
its partial folder to resume from.
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


def output_intact(path: Path, info: dict[str, Any]) -> bool:
    """The file still holds what the manifest recorded: same size, and same mtime (fast
    path) or else the same sha256 (a same-size edit in place is caught)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if not path.is_file() or st.st_size != info["size"]:
        return False
    return st.st_mtime_ns == info.get("mtime_ns") or hash_file(path) == info["sha256"]


def outputs_present(stage_dir: Path, manifest: dict[str, Any]) -> bool:
    """Every recorded output is still there, unchanged."""
    return all(output_intact(stage_dir / rel, info)
               for rel, info in manifest.get("outputs", {}).items())


def is_current(stage_dir: Path, config_hash: str, inputs_hash: str) -> bool:
    """Whether the stage's finished outputs match this config and these inputs."""
    manifest = read_manifest(stage_dir)
    return (manifest is not None and manifest.get("config_hash") == config_hash
            and manifest.get("inputs_hash") == inputs_hash
            and outputs_present(stage_dir, manifest))


def owned_entries(stage_dir: Path) -> set[str]:
    """Top-level entries of a finished stage folder that the stage wrote."""
    manifest = read_manifest(stage_dir) or {}
    return ({MANIFEST, *manifest.get("files", ())}
            | {rel.split("/")[0] for rel in manifest.get("outputs", {})})


def start_partial(partial: Path, config_hash: str, inputs_hash: str,
                  keep: tuple[str, ...] = ()) -> None:
    """Ready the partial folder a stage runs in. Entries named in `keep` survive only when
    an interrupted run with the same hashes left them (e.g. a MoCo checkpoint to resume
    from); the rest of a stale partial folder (ours: only stages write there) is cleared."""
    running = partial / RUNNING
    try:
        previous = json.loads(running.read_text())
    except (OSError, ValueError):
        previous = {}
    same = previous == {"config_hash": config_hash, "inputs_hash": inputs_hash}
    if partial.is_dir():
        for entry in partial.iterdir():
            if entry.name == RUNNING or (same and entry.name in keep):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    partial.mkdir(parents=True, exist_ok=True)
    save_json(running, {"config_hash": config_hash, "inputs_hash": inputs_hash})


def write_manifest(stage_dir: Path, stage: str, config_hash: str, inputs_hash: str,
                   outputs: list[str], artifacts: dict[str, Any], seconds: float) -> dict:
    """Hash the outputs and write the manifest last, atomically; clear the running mark."""
    (stage_dir / RUNNING).unlink(missing_ok=True)
    info = {rel: (stage_dir / rel).stat() for rel in sorted(outputs)}
    manifest = {
        "stage": stage,
        "config_hash": config_hash,
        "inputs_hash": inputs_hash,
        "outputs": {rel: {"sha256": hash_file(stage_dir / rel), "size": st.st_size,
                          "mtime_ns": st.st_mtime_ns} for rel, st in info.items()},
        "files": sorted(e.name for e in stage_dir.iterdir()),
        "artifacts": artifacts,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    save_json(stage_dir / MANIFEST, manifest)
    return manifest


def outputs_hash(manifest: dict[str, Any]) -> str:
    """What downstream stages hash as their input: the upstream outputs' content."""
    return hash_obj({rel: info["sha256"] for rel, info in manifest["outputs"].items()})
