"""The staged pipeline: end to end on a tiny generated image folder, rerun detection,
interruption, W&B offline files plus CSV history, and one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from data.errors import ConfigError, DataNotFoundError, InputError
from pipeline import run_pipeline
from pipeline.cli import main
from pipeline.manifest import hash_file, read_manifest
from pipeline.tracking import resolve_mode

REPO = Path(__file__).resolve().parents[1]
STAGE_DIRS = ("features", "cluster", "report")

# Small enough for a CPU test: a couple of MoCo steps, a few DeepDPM epochs.
TINY_FEATURES = {
    "data": {"source": "imagefolder", "image_size": 32},
    "model": {"backbone": "resnet18", "width": 8, "head_output_dim": 16},
    "train": {"epochs": 1, "batch_size": 16, "max_steps": 2, "num_workers": 0,
              "memory_bank_size": 64, "device": "cpu", "amp": False},
    "embed": {"batch_size": 64, "num_workers": 0},
}
TINY_CLUSTER = {"max_epochs": 6, "init_k": 2, "start_m_step": 1, "start_subclustering": 2,
                "start_split_merge": 3, "split_merge_every": 1, "freeze_after_step": 0,
                "stop_split_merge_before_end": 1, "split_min_size": 2,
                "subcluster_min_size": 2, "device": "cpu"}


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _quiet(_: str) -> None:
    """Swallow the runner's progress lines."""


def _mtimes(root: Path) -> dict[str, int]:
    return {s: (root / s / "manifest.json").stat().st_mtime_ns for s in STAGE_DIRS}


def _history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_outputs_match_manifest(stage_dir: Path) -> None:
    manifest = read_manifest(stage_dir)
    assert manifest is not None, f"{stage_dir} has no manifest"
    for rel, info in manifest["outputs"].items():
        assert hash_file(stage_dir / rel) == info["sha256"], f"{stage_dir / rel} changed"


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of 3 classes x 16 generated 32x32 images (colour + stripe pattern)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    colours = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]
    for c, colour in enumerate(colours):
        folder = root / f"class_{c}"
        folder.mkdir()
        for i in range(16):
            img = np.full((32, 32, 3), colour, np.float32)
            img[:, :: 2 + c] *= 0.4
            img += rng.normal(0, 20, img.shape)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return root


@pytest.fixture
def embeddings(tmp_path: Path) -> tuple[Path, Path]:
    """Pre-computed embeddings (4 well separated blobs, 120 x 6) and their labels."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 30)
    x = rng.normal(size=(4, 6))[y] * 6 + rng.normal(size=(120, 6))
    np.save(tmp_path / "emb.npy", x.astype(np.float32))
    np.save(tmp_path / "labels.npy", y)
    return tmp_path / "emb.npy", tmp_path / "labels.npy"


def _import_config(tmp_path: Path, emb: tuple[Path, Path], **extra: object) -> Path:
    cfg = {"experiment": "imp", "output_dir": str(tmp_path / "out"),
           "features": {"embeddings": str(emb[0]), "labels": str(emb[1])},
           "cluster": dict(TINY_CLUSTER), "report": {"samples_per_cluster": 0},
           "wandb": {"mode": "disabled"}, **extra}
    return _write(tmp_path / "imp.yaml", cfg)


def test_image_folder_end_to_end_then_rerun_rules(tmp_path: Path, image_root: Path) -> None:
    cfg = {"experiment": "tiny", "output_dir": str(tmp_path / "out"),
           "features": {**TINY_FEATURES,
                        "data": {**TINY_FEATURES["data"], "root": str(image_root)}},
           "cluster": dict(TINY_CLUSTER), "report": {"samples_per_cluster": 4},
           "wandb": {"mode": "offline", "project": "test"}}
    path = _write(tmp_path / "tiny.yaml", cfg)
    root = tmp_path / "out" / "tiny"

    status = run_pipeline(path, log=_quiet)
    assert status == {"features": "ran", "cluster": "ran", "alternate": "disabled",
                      "report": "ran"}
    for stage in STAGE_DIRS:
        _assert_outputs_match_manifest(root / stage)
    emb = np.load(root / "features" / read_manifest(root / "features")["artifacts"]["embeddings"])
    assert emb.shape[0] == 48 and np.isfinite(emb).all()
    labels = np.load(root / "cluster" / "labels.npy")
    assert labels.shape == (48,)
    rows = _history(root / "cluster" / "history.csv")
    assert len(rows) == TINY_CLUSTER["max_epochs"]
    assert all(int(r["k"]) >= 1 for r in rows) and "sizes" in rows[0] and "nmi" in rows[0]
    assert all(np.isfinite(float(r["log_joint"])) for r in rows)  # convergence, next to K
    report = (root / "report" / "report.md").read_text()
    assert "log joint" in report
    for png in ("k_over_epochs", "metrics_over_epochs", "cluster_sizes", "confusion", "samples"):
        assert (root / "report" / f"{png}.png").stat().st_size > 1000
        assert f"({png}.png)" in report
    moco = _history(root / "features" / "history.csv")
    assert moco and np.isfinite(float(moco[-1]["loss"]))
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert saved["features"]["data"]["root"] == str(image_root)
    assert saved["wandb"]["project"] == "test"  # base.yaml composed under the experiment

    before = _mtimes(root)
    status = run_pipeline(path, ["wandb.mode=disabled"], log=_quiet)
    assert set(status.values()) == {"skipped", "disabled"}
    assert _mtimes(root) == before

    status = run_pipeline(path, ["cluster.alpha=50.0", "wandb.mode=disabled"], log=_quiet)
    assert status["features"] == "skipped"
    assert status["cluster"] == "ran" and status["report"] == "ran"
    after = _mtimes(root)
    assert after["features"] == before["features"]
    assert after["cluster"] > before["cluster"] and after["report"] > before["report"]

    status = run_pipeline(path, ["cluster.alpha=50.0", "wandb.mode=disabled"], only="cluster",
                          log=_quiet)
    assert status == {"cluster": "ran"}
    assert _mtimes(root)["features"] == before["features"]
    _assert_outputs_match_manifest(root / "cluster")


def test_resumed_moco_keeps_the_epochs_before_the_stop(
        tmp_path: Path, image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import features

    cfg = {"experiment": "tiny", "output_dir": str(tmp_path / "out"),
           "features": {**TINY_FEATURES,
                        "train": {**TINY_FEATURES["train"], "epochs": 2, "max_steps": 100},
                        "data": {**TINY_FEATURES["data"], "root": str(image_root)}},
           "cluster": dict(TINY_CLUSTER), "wandb": {"mode": "disabled"}}
    path = _write(tmp_path / "tiny.yaml", cfg)

    def killed(*args: object, **kwargs: object) -> None:  # after MoCo, before the embeddings
        raise KeyboardInterrupt

    monkeypatch.setattr(features, "embed_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, only="features", log=_quiet)
    monkeypatch.undo()
    assert run_pipeline(path, only="features", log=_quiet) == {"features": "ran"}
    rows = _history(tmp_path / "out" / "tiny" / "features" / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # trained before the stop, not again


def test_interrupted_stage_is_redone(tmp_path: Path, embeddings: tuple[Path, Path],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from clustering import DeepDPM

    path = _import_config(tmp_path, embeddings)
    cluster_dir = tmp_path / "out" / "imp" / "cluster"
    assert run_pipeline(path, log=_quiet)["cluster"] == "ran"
    features_mtime = (tmp_path / "out" / "imp" / "features" / "manifest.json").stat().st_mtime_ns

    def crash(self: DeepDPM, target: str) -> None:  # labels.npy is already written
        Path(target).write_bytes(b"half a model")
        raise KeyboardInterrupt("killed midway")

    before = {p.name: p.read_bytes() for p in cluster_dir.iterdir()}
    monkeypatch.setattr(DeepDPM, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(path, ["cluster.alpha=3.0"], log=_quiet)
    # the finished folder is untouched; the killed run's files are in its partial folder
    assert {p.name: p.read_bytes() for p in cluster_dir.iterdir()} == before
    partial = cluster_dir.parent / ".cluster.partial"
    assert (partial / "model.pt").read_bytes() == b"half a model"
    monkeypatch.undo()

    status = run_pipeline(path, ["cluster.alpha=3.0"], log=_quiet)
    assert status["features"] == "skipped" and status["cluster"] == "ran"
    assert status["report"] == "ran"
    _assert_outputs_match_manifest(cluster_dir)
    assert DeepDPM.load(str(cluster_dir / "model.pt")).n_clusters_ >= 1
    assert not (cluster_dir / ".running.json").exists() and not partial.exists()
    assert (tmp_path / "out" / "imp" / "features" / "manifest.json").stat().st_mtime_ns \
        == features_mtime


def test_stale_files_cleared_and_imported_bytes_tracked(
        tmp_path: Path, embeddings: tuple[Path, Path]) -> None:
    path = _import_config(tmp_path, embeddings)
    root = tmp_path / "out" / "imp"
    run_pipeline(path, log=_quiet)
    (root / ".cluster.partial").mkdir()  # a killed run's leftovers, under another config
    (root / ".cluster.partial" / "leftover.tmp").write_text("partial")
    labels = root / "cluster" / "labels.npy"
    zeroed = np.zeros_like(np.load(labels))
    with open(labels, "r+b") as fh:  # edited in place: same size, other bytes
        fh.seek(-zeroed.nbytes, 2)
        fh.write(zeroed.tobytes())
    status = run_pipeline(path, log=_quiet)
    assert status == {"features": "skipped", "cluster": "ran", "alternate": "disabled",
                      "report": "ran"}
    assert not (root / ".cluster.partial").exists()
    assert np.load(labels).any()

    x = np.load(embeddings[0])
    np.save(embeddings[0], x[::-1].copy())  # same shape, other bytes
    status = run_pipeline(path, log=_quiet)
    assert status["features"] == "ran" and status["cluster"] == "ran"
    assert np.array_equal(np.load(root / "features" / "embeddings.npy"), x[::-1])


def test_pipeline_deletes_only_its_own_files(tmp_path: Path,
                                             embeddings: tuple[Path, Path]) -> None:
    path = _import_config(tmp_path, embeddings)
    root = tmp_path / "out" / "imp"
    run_pipeline(path, log=_quiet)
    notes = root / "cluster" / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(InputError, match=r"cluster stage's folder .* did not write \(notes.txt\)"):
        run_pipeline(path, ["cluster.alpha=3.0"], log=_quiet)
    assert notes.read_text() == "mine" and (root / "cluster" / "manifest.json").is_file()
    notes.unlink()
    # an input inside the experiment folder would be rewritten by the run that reads it
    inside = root / "features" / "embeddings.npy"
    with pytest.raises(ConfigError, match="inside the experiment's output folder"):
        run_pipeline(path, [f"features.embeddings={inside}"], log=_quiet)
    assert inside.is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="output_dir .* is a file"):
        run_pipeline(path, [f"output_dir={tmp_path / 'file'}"], log=_quiet)


def test_two_runs_on_one_experiment_folder(tmp_path: Path,
                                           embeddings: tuple[Path, Path]) -> None:
    import os

    from data.folders import folder_lock

    path = _import_config(tmp_path, embeddings)
    with folder_lock(tmp_path / "out" / "imp", "the experiment folder"):
        with pytest.raises(InputError, match=f"in use by another run \\(pid {os.getpid()}\\)"):
            run_pipeline(path, log=_quiet)
    assert run_pipeline(path, log=_quiet)["cluster"] == "ran"


def test_only_needs_upstream_outputs(tmp_path: Path, embeddings: tuple[Path, Path]) -> None:
    path = _import_config(tmp_path, embeddings)
    with pytest.raises(DataNotFoundError, match=r"needs the features stage.*--only features"):
        run_pipeline(path, only="cluster", log=_quiet)
    assert not (tmp_path / "out" / "imp" / "cluster").exists()


def test_alternate_disabled_cannot_be_run_alone(tmp_path: Path,
                                                embeddings: tuple[Path, Path]) -> None:
    path = _import_config(tmp_path, embeddings)
    with pytest.raises(ConfigError, match=r"alternate.enabled=true"):
        run_pipeline(path, only="alternate", log=_quiet)


def test_unknown_key_and_missing_files_are_one_line_errors(
        tmp_path: Path, embeddings: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    path = _import_config(tmp_path, embeddings)
    cases = [
        ([str(path), "cluster.alpah=3"], "cluster.alpah"),
        ([str(tmp_path / "nope.yaml")], "nope.yaml: config file not found"),
        ([str(path), f"features.embeddings={tmp_path / 'missing.npy'}"],
         "features.embeddings=" + str(tmp_path / "missing.npy") + ": no such file"),
    ]
    for args, needle in cases:
        assert main(["run", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err


def test_bad_key_in_experiment_file_names_it(tmp_path: Path,
                                             embeddings: tuple[Path, Path]) -> None:
    path = _import_config(tmp_path, embeddings, report={"sampels_per_cluster": 3})
    with pytest.raises(ConfigError, match=r"report.sampels_per_cluster"):
        run_pipeline(path, log=_quiet)


def test_cli_subprocess_exit_code(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", {"clustr": {"alpha": 1}})
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(bad)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "'clustr'" in proc.stderr


def test_reading_every_config_does_not_load_torch() -> None:
    """A config (every experiment file, the alternation section, the clustering defaults)
    is read and checked without importing torch or any model code."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline.config import load_pipeline_config, section\n"
        "from clustering.config import make_alternation_config\n"
        "from features.config import load_features_config\n"
        "names = []\n"
        "for f in sorted(Path('configs').glob('*.yaml')):\n"
        "    if f.name.startswith('features_'):\n"
        "        load_features_config([str(f)], [])\n"
        "    elif f.name not in ('base.yaml', 'clustering.yaml'):\n"
        "        cfg = load_pipeline_config(f)\n"
        "        make_alternation_config(section(cfg, 'alternate'))\n"
        "    names.append(f.name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "               ('torch', 'lightly', 'torchvision', 'faiss', 'sklearn'))\n"
        "print(len(names), heavy[:5])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, heavy = proc.stdout.split(" ", 1)
    assert int(count) >= 4 and heavy.strip() == "[]"


def test_wandb_mode_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_mode(None) == "online"
    assert resolve_mode("disabled") == "disabled"
    with pytest.raises(ConfigError, match="wandb.mode"):
        resolve_mode("sometimes")


def test_offline_tracking_writes_csv_and_run_dir(tmp_path: Path,
                                                 embeddings: tuple[Path, Path]) -> None:
    path = _import_config(tmp_path, embeddings, wandb={"mode": "offline"})
    run_pipeline(path, log=_quiet)
    root = tmp_path / "out" / "imp"
    run_dir = next((root / "wandb").glob("offline-run-*"))
    assert list(run_dir.glob("run-*.wandb"))
    rows = _history(root / "cluster" / "history.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(TINY_CLUSTER["max_epochs"]))
    sizes = [sum(map(int, r["sizes"].split())) for r in rows]
    assert sizes == [120] * len(rows)
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    assert metrics["final"] == "cluster" and metrics["true_k"] == 4
    assert metrics["stages"]["cluster"]["k"] == int(rows[-1]["k"])


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_imagenet50_without_paths_stops_with_message() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGENET_ROOT", "EMBEDDINGS")}
    proc = subprocess.run(["make", "-s", "check-imagenet50"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "IMAGENET_ROOT" in proc.stderr and "EMBEDDINGS" in proc.stderr
    ok = subprocess.run(["make", "-s", "check-imagenet50", "EMBEDDINGS=/x.npy"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0


def test_alternate_stage_feeds_the_report(tmp_path: Path,
                                          embeddings: tuple[Path, Path]) -> None:
    alternate = {"enabled": True, "hidden_dims": [16], "latent_dim": 3, "pretrain_epochs": 1,
                 "ae_epochs": 1, "n_alternations": 1, "device": "cpu"}
    path = _import_config(tmp_path, embeddings, alternate=alternate)
    status = run_pipeline(path, log=_quiet)
    assert status == {"features": "ran", "cluster": "ran", "alternate": "ran", "report": "ran"}
    root = tmp_path / "out" / "imp"
    _assert_outputs_match_manifest(root / "alternate")
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    assert metrics["final"] == "alternate" and set(metrics["stages"]) == {"cluster", "alternate"}
    assert (root / "report" / "alternate_k_over_epochs.png").is_file()
    stages = {r["stage"] for r in _history(root / "alternate" / "history.csv")}
    assert {"pretrain", "cluster"} <= stages

    status = run_pipeline(path, ["alternate.enabled=false"], log=_quiet)
    assert status == {"features": "skipped", "cluster": "skipped", "alternate": "disabled",
                      "report": "ran"}
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    assert metrics["final"] == "cluster"


def test_from_reruns_that_stage_and_later(tmp_path: Path,
                                          embeddings: tuple[Path, Path]) -> None:
    path = _import_config(tmp_path, embeddings)
    root = tmp_path / "out" / "imp"
    run_pipeline(path, log=_quiet)
    before = _mtimes(root)
    status = run_pipeline(path, from_stage="cluster", log=_quiet)
    assert status == {"cluster": "ran", "alternate": "disabled", "report": "ran"}
    after = _mtimes(root)
    assert after["features"] == before["features"] and after["cluster"] > before["cluster"]


def test_report_maps_rows_back_to_the_digits(tmp_path: Path) -> None:
    from data.mnist import load_mnist_digits
    from pipeline.samples import image_loader

    digits, _ = load_mnist_digits(seed=3)
    rows = np.array([17, 4, 4000])
    np.save(tmp_path / "indices.npy", rows)
    load = image_loader(tmp_path, {"images": {"source": "mnist", "seed": 3,
                                              "indices": "indices.npy"}})
    assert load is not None
    for i, row in enumerate(rows):
        assert np.array_equal(load(i), digits[row])
    assert image_loader(tmp_path, {"embeddings": "embeddings.npy"}) is None


@pytest.mark.parametrize("name", ["imagenet50", "imagenet50_imbalanced"])
def test_imagenet50_stages_get_settings_for_their_own_input(name: str) -> None:
    """The 128-D `cluster` stage must not inherit a prior written for 10-D AE codes: both
    DeepDPM runs use the scale-free prior (Psi from their own input's covariance)."""
    from clustering.alternation import AEAlternation
    from clustering.config import DeepDPMConfig
    from pipeline.config import load_pipeline_config, section

    cfg = load_pipeline_config(REPO / "configs" / f"{name}.yaml")
    default = DeepDPMConfig()
    cluster = section(cfg, "cluster")
    assert (cluster.prior_sigma_choice, cluster.prior_sigma_scale, cluster.nu) == (
        default.prior_sigma_choice, default.prior_sigma_scale, None)
    alt = AEAlternation(section(cfg, "alternate"), cluster)
    assert alt.config.latent_dim == 10
    for t in range(alt.config.n_alternations):
        params = alt._cluster_params_for(t)
        assert params["prior_sigma_choice"] == "data_cov"
        assert params["prior_sigma_scale"] == default.prior_sigma_scale


@dataclass
class _Inner:
    a: int = 0
    b: list[int] = field(default_factory=list)


@dataclass
class _Schema:
    x: int = 0
    inner: _Inner = field(default_factory=_Inner)


def test_config_files_extend_others(tmp_path: Path) -> None:
    """`extends` at the top or inside a section: the named file first, the keys beside
    it over that; loops and missing files are one-line errors."""
    from data.config import load_config

    _write(tmp_path / "inner.yaml", {"a": 1, "b": [1, 2]})
    _write(tmp_path / "parent.yaml", {"x": 5, "inner": {"extends": "inner.yaml", "a": 2}})
    _write(tmp_path / "child.yaml", {"extends": "parent.yaml", "inner": {"b": [9]}})
    cfg = load_config(_Schema, [tmp_path / "child.yaml"], ["x=7"])
    assert (cfg.x, cfg.inner.a, list(cfg.inner.b)) == (7, 2, [9])
    _write(tmp_path / "loop.yaml", {"extends": "loop2.yaml"})
    _write(tmp_path / "loop2.yaml", {"extends": "loop.yaml"})
    with pytest.raises(ConfigError, match=r"makes a loop \(loop.yaml -> loop2.yaml -> loop"):
        load_config(_Schema, [tmp_path / "loop.yaml"])
    _write(tmp_path / "lost.yaml", {"inner": {"extends": "nowhere.yaml"}})
    with pytest.raises(DataNotFoundError, match=r"lost.yaml: extends nowhere.yaml, but"):
        load_config(_Schema, [tmp_path / "lost.yaml"])


def test_report_reads_the_clustering_through_its_manifest(
        tmp_path: Path, embeddings: tuple[Path, Path]) -> None:
    """The report finds labels, history and metrics by the cluster manifest's artifacts;
    a manifest that does not name them says which stage to rerun."""
    path = _import_config(tmp_path, embeddings)
    run_pipeline(path, log=_quiet)
    cluster = tmp_path / "out" / "imp" / "cluster"
    manifest = json.loads((cluster / "manifest.json").read_text())
    assert {k: manifest["artifacts"][k] for k in ("labels", "history", "metrics")} == {
        "labels": "labels.npy", "history": "history.csv", "metrics": "metrics.json"}
    report = json.loads((tmp_path / "out" / "imp" / "report" / "metrics.json").read_text())
    assert report["stages"]["cluster"]["k"] == json.loads(
        (cluster / "metrics.json").read_text())["k"]
    del manifest["artifacts"]["history"]
    (cluster / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataNotFoundError, match=r"names no \['history'\].*--only cluster"):
        run_pipeline(path, only="report", log=_quiet)
