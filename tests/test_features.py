"""The MoCo feature stage: training, resuming, embedding, data sources and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.errors import ConfigError, DataNotFoundError, InputError
from data.sources import DEFAULT_SUBSET, build_dataset, imbalance_rows
from features import FeaturesConfig, embed_dataset, train_moco
from features.cli import main
from features.config import as_config

REPO = Path(__file__).resolve().parents[1]
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230)]
PER_CLASS = 6


def _pattern(label: int, k: int) -> np.ndarray:
    """A 16x16 image per class: its own colour and stripe direction, jittered per image."""
    rng = np.random.default_rng(100 * label + k)
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    stripes = (np.arange(16) // 2 % 2).astype(bool)
    mask = np.broadcast_to(stripes[:, None] if label % 2 else stripes[None, :], (16, 16))
    img[mask] = COLOURS[label]
    noise = rng.integers(0, 30, size=img.shape, dtype=np.uint8)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for label, name in enumerate(["cat", "dog", "fox"]):
        (root / name).mkdir(parents=True)
        for k in range(PER_CLASS):
            Image.fromarray(_pattern(label, k)).save(root / name / f"{k:02d}.png")
    return root


def tiny_cfg(**data) -> dict:
    """A model small enough that a training step takes well under a second on CPU."""
    return {
        "data": {"source": "imagefolder", "image_size": 16, **data},
        "model": {"width": 8, "head_hidden_dim": 32, "head_output_dim": 16},
        "augment": {"blur": 0.0},
        "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "memory_bank_size": 32,
                  "device": "cpu", "lr": 0.05},
        "embed": {"batch_size": 8, "num_workers": 0},
    }


def test_train_then_embed_image_folder(folder: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(root=str(folder))
    records: list[dict] = []
    ckpt = train_moco(cfg, tmp_path / "run", progress=False, on_epoch=records.append)
    assert ckpt == tmp_path / "run" / "checkpoint.pt" and ckpt.is_file()
    assert (tmp_path / "run" / "last.pt").is_file()
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 3 * PER_CLASS // 8
    assert {"model", "momentum_model", "optimizer", "scheduler", "config"} <= set(state)
    assert [r["epoch"] for r in records] == [1]
    assert np.isfinite(records[0]["loss"]) and records[0]["images_per_s"] > 0

    out = embed_dataset(ckpt, cfg, tmp_path / "emb")
    emb = np.load(out / "embeddings.npy")
    assert emb.dtype == np.float32 and emb.shape == (3 * PER_CLASS, 8 * 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.load(out / "labels.npy"), np.repeat([0, 1, 2], PER_CLASS))
    paths = (out / "paths.txt").read_text().splitlines()
    assert len(paths) == len(emb) and Path(paths[PER_CLASS]).parent.name == "dog"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shape"] == [3 * PER_CLASS, 64] and manifest["epoch"] == 1
    assert manifest["checkpoint"] == str(ckpt.resolve()) and "torch" in manifest["versions"]
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind


def test_embed_head_output_unnormalised(folder: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(root=str(folder))
    cfg["embed"].update(output="head", normalize=False)
    emb = np.load(embed_dataset(None, cfg, tmp_path / "emb") / "embeddings.npy")
    assert emb.shape == (3 * PER_CLASS, 16)
    assert not np.allclose(np.linalg.norm(emb, axis=1), 1.0)


def test_resume_continues_from_saved_epoch(folder: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(root=str(folder))
    train_moco(cfg, tmp_path / "run", progress=False)
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    cfg["train"]["epochs"] = 2
    records: list[dict] = []
    train_moco(cfg, tmp_path / "run", progress=False, on_epoch=records.append)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert [r["epoch"] for r in records] == [2]  # epoch 1 was not trained again
    assert state["epoch"] == 2 and state["global_step"] == 2 * first["global_step"]
    assert state["scheduler"]["last_epoch"] == state["global_step"]
    moved = [not torch.equal(first["model"][k], state["model"][k]) for k in first["model"]]
    assert any(moved)


def test_max_steps_caps_training(folder: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(root=str(folder))
    cfg["train"].update(epochs=5, max_steps=1)
    records: list[dict] = []
    train_moco(cfg, tmp_path / "run", progress=False, on_epoch=records.append)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["global_step"] == 1 and len(records) == 1


def test_embed_builtin_digits_one_row_per_image(tmp_path: Path) -> None:
    cfg = {"data": {"source": "mnist"}, "model": {"width": 4},
           "train": {"device": "cpu"}, "embed": {"batch_size": 1000, "num_workers": 0}}
    out = embed_dataset(None, cfg, tmp_path / "emb")
    emb, labels = np.load(out / "embeddings.npy"), np.load(out / "labels.npy")
    indices = np.load(out / "indices.npy")
    assert emb.shape == (5000, 32) and emb.dtype == np.float32
    assert labels.shape == (5000,) and set(np.unique(labels)) == set(range(10))
    np.testing.assert_array_equal(np.sort(indices), np.arange(5000))
    assert not (out / "paths.txt").exists()


def test_imbalance_subsamples_chosen_classes() -> None:
    full = build_dataset(as_config({}).data)
    counts = np.bincount(full.labels, minlength=10)
    cfg = as_config({"data": {"imbalance": {0: 0.1, "7": 0.5}}}).data
    sub = build_dataset(cfg)
    sub_counts = np.bincount(sub.labels, minlength=10)
    assert sub_counts[0] == round(0.1 * counts[0]) and sub_counts[7] == round(0.5 * counts[7])
    np.testing.assert_array_equal(sub_counts[1:7], counts[1:7])
    np.testing.assert_array_equal(full.images[sub.ids], sub.images)  # rows map back
    np.testing.assert_array_equal(build_dataset(cfg).ids, sub.ids)  # fixed seed
    fractions = np.full(10, 0.5)
    a, b = (imbalance_rows(full.labels, fractions, seed) for seed in (1, 2))
    assert len(a) == len(b) and not np.array_equal(a, b)  # the seed picks the images
    listed = build_dataset(as_config({"data": {"imbalance": [1.0] * 9 + [0.2]}}).data)
    assert np.bincount(listed.labels)[9] == round(0.2 * counts[9])
    with pytest.raises(ConfigError, match="10 classes"):
        build_dataset(as_config({"data": {"imbalance": [0.5, 0.5]}}).data)


def test_missing_and_empty_data_directory(tmp_path: Path) -> None:
    cfg = as_config(tiny_cfg(root=str(tmp_path / "nowhere")))
    with pytest.raises(DataNotFoundError, match="nowhere: no such directory; expected"):
        build_dataset(cfg.data)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    cfg.data.root = str(tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="no images found"):
        train_moco(cfg, tmp_path / "run", progress=False)
    cfg.data.root = None
    with pytest.raises(DataNotFoundError, match="needs data.root"):
        build_dataset(cfg.data)


def test_imagenet_subset_layout_and_missing_class(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        for wnid in ("n001", "n002"):
            (root / split / wnid).mkdir(parents=True)
            for k in range(2):
                Image.fromarray(_pattern(k, k)).save(root / split / wnid / f"{k}.JPEG")
    subset = tmp_path / "subset.txt"
    subset.write_text("n002 Second class\nn001 First\n")
    cfg = as_config({"data": {"source": "imagenet", "root": str(root),
                              "subset_file": str(subset), "split": "val"}})
    ds = build_dataset(cfg.data)
    assert ds.classes == ["n002", "n001"] and list(ds.labels) == [0, 0, 1, 1]
    assert ds.paths[0].parent.name == "n002" and ds.paths[0].parent.parent.name == "val"
    subset.write_text("n001 First\nn404 Missing Class\n")
    with pytest.raises(DataNotFoundError, match=r"n404 \(Missing Class\).*is missing"):
        build_dataset(cfg.data)
    cfg.data.split = "train"
    cfg.data.subset_file = None  # the shipped ImageNet-50 list, none of it present here
    with pytest.raises(DataNotFoundError, match="n01601694"):
        build_dataset(cfg.data)
    assert len(DEFAULT_SUBSET.read_text().splitlines()) == 50


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_named(folder: Path, tmp_path: Path, workers: int) -> None:
    bad = folder / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    cfg = tiny_cfg(root=str(folder))
    cfg["embed"]["num_workers"] = workers
    with pytest.raises(InputError, match="broken.png: corrupt or unreadable image") as info:
        embed_dataset(None, cfg, tmp_path / "emb")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "emb" / "manifest.json").exists()


def test_cli_train_and_embed(folder: Path, tmp_path: Path, capsys) -> None:
    common = ["data.image_size=16", "model.width=8", "model.head_hidden_dim=32",
              "train.batch_size=8", "train.num_workers=0", "train.memory_bank_size=32",
              "embed.num_workers=0", "train.epochs=1", "train.device=cpu"]
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "run"), "--quiet",
                 *common]) == 0
    assert main(["embed", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                 "--data", str(folder), "--out", str(tmp_path / "emb"), *common]) == 0
    assert np.load(tmp_path / "emb" / "embeddings.npy").shape == (3 * PER_CLASS, 64)


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--data", "/no/such/dir"], "/no/such/dir: no such directory"),
    (["train", "train.nonsense=1"], "unknown key 'train.nonsense'"),
    (["train", "model.backbone=vgg"], "model.backbone='vgg': use one of"),
    (["train", "--config", "/no/such.yaml"], "config file not found"),
    (["embed", "--checkpoint", "/no/ckpt.pt", "--data", "mnist"], "/no/ckpt.pt: no such file"),
    (["embed", "--data", "mnist"], "--checkpoint"),
    (["fly"], "invalid choice"),
])
def test_cli_bad_input_exits_2_with_one_line(argv: list[str], fragment: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_cli_corrupt_image_through_worker_subprocess(folder: Path, tmp_path: Path) -> None:
    (folder / "cat" / "bad.png").write_bytes(b"garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "features", "embed", "--checkpoint", "none", "--data",
         str(folder), "--out", str(tmp_path / "emb"), "data.image_size=16", "model.width=4",
         "embed.num_workers=1", "train.device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "bad.png: corrupt or unreadable image" in proc.stderr


def test_config_schema_defaults_and_shipped_configs() -> None:
    from data.config import load_config

    assert FeaturesConfig().data.source == "mnist"
    mnist = load_config(FeaturesConfig, [REPO / "configs" / "features_mnist.yaml"])
    assert mnist.data.source == "mnist" and mnist.augment.hflip == 0
    inet = load_config(FeaturesConfig, [REPO / "configs" / "features_imagenet50.yaml"])
    assert inet.model.backbone == "resnet50" and inet.embed.output == "head"
    assert inet.model.head_output_dim == 128 and inet.data.image_size == 224


def test_stroke_augmentation_thickens_or_thins_digit_strokes() -> None:
    from features.transforms import RandomStroke

    image = np.zeros((12, 12), dtype=np.uint8)
    image[3:9, 5:7] = 255  # a 2-pixel-wide vertical stroke
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        seen.add(int((np.asarray(RandomStroke(1.0)(Image.fromarray(image))) > 0).sum()))
    assert seen == {0, 4 * 8}  # thinned away (2 px wide) or grown to 4 x 8 pixels
    assert (np.asarray(RandomStroke(0.0)(Image.fromarray(image))) == image).all()


def test_shape_augmentations_run_in_front_of_each_moco_view() -> None:
    from features.transforms import train_transform

    cfg = as_config({"augment": {"hflip": 0.0, "color_jitter": 0.0, "grayscale": 0.0,
                                 "blur": 0.0, "min_scale": 1.0, "shear": 20.0,
                                 "translate": 0.2, "stroke": 1.0}})
    transform = train_transform(cfg.augment, 28, 1)
    for view in transform.transforms:  # each view: affine, stroke, then lightly's MoCo view
        names = [type(step).__name__ for step in view.transforms]
        assert names == ["RandomAffine", "RandomStroke", "SimCLRViewTransform"]
    image = Image.fromarray((np.arange(28 * 28) % 251).reshape(28, 28).astype(np.uint8))
    first, second = transform(image)
    assert first.shape == second.shape == (1, 28, 28)
    plain = train_transform(as_config({}).augment, 28, 1)  # nothing in front by default
    assert [type(view).__name__ for view in plain.transforms] == ["SimCLRViewTransform"] * 2


@pytest.mark.parametrize("key, value", [("shear", 95.0), ("translate", 1.5), ("stroke", 2.0)])
def test_bad_shape_augmentation_is_named(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"^augment.{key}={value}: must lie in"):
        as_config({"augment": {key: value}})


@pytest.mark.parametrize("symmetric", [False, True])
def test_symmetric_loss_banks_both_views_keys(folder: Path, tmp_path: Path,
                                              symmetric: bool) -> None:
    cfg = tiny_cfg(root=str(folder))
    cfg["train"].update(max_steps=1, symmetric=symmetric)
    records: list[dict] = []
    train_moco(cfg, tmp_path / "run", progress=False, on_epoch=records.append)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    batch = cfg["train"]["batch_size"]
    assert int(state["memory_bank"]["ptr"]) == (2 * batch if symmetric else batch)
    assert np.isfinite(records[0]["loss"])


def test_torchrun_two_cpu_processes_share_one_model_and_bank(folder: Path,
                                                             tmp_path: Path) -> None:
    """DDP on CPU (Gloo): the data is sharded, keys are gathered, only rank 0 writes."""
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "features", "train", "--data", str(folder), "--out", str(out), "--quiet",
         "data.image_size=16", "model.width=8", "model.head_hidden_dim=32",
         "model.head_output_dim=16", "augment.blur=0", "train.epochs=2", "train.batch_size=4",
         "train.num_workers=0", "train.memory_bank_size=24", "train.device=cpu"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(out / "checkpoint.pt")]  # printed by rank 0 only
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    per_rank_steps = (3 * PER_CLASS // 2) // 4  # 18 images, 9 per rank, batches of 4
    assert state["epoch"] == 2 and state["global_step"] == 2 * per_rank_steps
    # every step banks the keys of both ranks: 2 ranks x 4 keys per step, ring of 24
    # (one rank's keys alone would leave the pointer at 16, not 8)
    assert int(state["memory_bank"]["ptr"]) == (2 * per_rank_steps * 2 * 4) % 24 == 8
