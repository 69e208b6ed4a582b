"""A fit sharded over 2 Gloo processes (torchrun, CPU) against the same fit in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import make_mixture
from sklearn.metrics import normalized_mutual_info_score

from clustering.cli import FIT_OUTPUTS
from clustering.distributed import World, shard_bounds
from clustering.kmeans import kmeans_plus_plus, two_means_1d
from clustering.niw import NIWPrior, grouped_stats
from clustering.start import shared_best_candidate
from clustering.transform import InputTransform, moments

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _torchrun(args: list[str], log_dir: Path) -> subprocess.CompletedProcess:
    """`torchrun -m clustering ARGS` on 2 CPU processes; each rank's output in its own file."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [*TORCHRUN, "--log-dir", str(log_dir), "--redirects", "3", "-m", "clustering", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _rank_output(log_dir: Path, rank: int, stream: str) -> str:
    files = list(log_dir.rglob(f"attempt_0/{rank}/{stream}.log"))
    assert len(files) == 1, files
    return files[0].read_text()


@pytest.mark.slow
def test_two_gloo_ranks_fit_like_one_process_and_only_rank_0_writes(tmp_path):
    x, y = make_mixture(3000, 6, 5, imbalanced=True, seed=4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    common = ["fit", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--quiet",
              "max_epochs=60"]
    single = subprocess.run([sys.executable, "-m", "clustering", *common, "--out",
                             str(tmp_path / "one")], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr
    run = _torchrun([*common, "--out", str(tmp_path / "two")], tmp_path / "logs")
    assert run.returncode == 0, run.stderr[-3000:]

    one, two = json.loads((tmp_path / "one/metrics.json").read_text()), json.loads(
        (tmp_path / "two/metrics.json").read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["shards"] == [[0, 1500], [1500, 3000]]  # each rank its own contiguous rows
    assert two["k"] == one["k"] == 5
    labels_one, labels_two = (np.load(tmp_path / d / "labels.npy") for d in ("one", "two"))
    assert labels_two.shape == (3000,)  # gathered in row order
    assert normalized_mutual_info_score(labels_one, labels_two) >= 0.99
    assert normalized_mutual_info_score(y, labels_two) >= 0.99
    # only rank 0 wrote: the folder holds the fit's files and nothing else, rank 1 printed
    # nothing, and no second lock or partial folder was left beside it
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(FIT_OUTPUTS)
    assert not list(tmp_path.glob(".two*.partial*"))
    assert "K = 5" in _rank_output(tmp_path / "logs", 0, "stdout")
    assert _rank_output(tmp_path / "logs", 1, "stdout").strip() == ""
    history = (tmp_path / "two/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) > 10


@pytest.mark.slow
def test_a_bad_row_in_one_shard_fails_every_rank_with_one_message(tmp_path):
    x, _ = make_mixture(400, 4, 3, seed=1)
    x[200 + 3, 1] = np.nan  # row 3 of rank 1's shard (rows 200-399)
    np.save(tmp_path / "x.npy", x)
    run = _torchrun(["fit", str(tmp_path / "x.npy"), "--out", str(tmp_path / "out"), "--quiet"],
                    tmp_path / "logs")
    assert run.returncode != 0
    err0 = _rank_output(tmp_path / "logs", 0, "stderr").strip().splitlines()
    assert err0 == ["error: rank 1: X has NaN or Inf in 1 of 200 rows (first at row 3)"]
    assert _rank_output(tmp_path / "logs", 1, "stderr").strip() == ""  # one rank says why
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- sharded building blocks
def _sharded_pieces(rank: int, size: int, init_file: str, out_file: str) -> None:
    """Run in each of `size` spawned processes: the sharded versions of the statistics."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=size)
    torch.set_num_threads(1)
    try:
        world = World.current()
        x, _ = make_mixture(1001, 5, 4, seed=7)
        a, b = shard_bounds(len(x), rank, size)
        shard = x[a:b]
        transform = InputTransform("whiten").fit(shard, torch.device("cpu"), world)
        u = transform.transform(shard)
        mean, cov = moments(u, world=world)
        centres0 = torch.as_tensor(x[[0, 300, 600, 900]])
        centres, labels = kmeans_plus_plus(torch.as_tensor(shard), 4, torch.Generator(),
                                           init=centres0, world=world)
        stats = world.stats(grouped_stats(torch.as_tensor(shard), labels, 4))
        axes = torch.nn.functional.normalize(torch.ones(4, 5), dim=1)
        side = two_means_1d(torch.as_tensor(shard), labels, 4, centres, axes, world=world)
        all_labels = world.gather_rows(labels)
        all_side = world.gather_rows(side)
        agreed = world.gather_object(float(centres.sum()))
        starts = [shared_best_candidate(probe, 1, prior, 10.0, torch.Generator().manual_seed(3),
                                        20, world) for probe, prior in _start_probes()]
        if rank == 0:
            torch.save({"starts": starts, "centre": transform.centre, "scale": transform.scale,
                        "proj": transform.proj, "shift": transform.shift, "mean": mean,
                        "cov": cov, "centres": centres, "labels": all_labels, "n": stats.n,
                        "s": stats.s, "side": all_side, "agreed": agreed}, out_file)
    finally:
        dist.destroy_process_group()


def _start_probes() -> list[tuple[torch.Tensor, NIWPrior]]:
    """Probes (the same on every rank) where a k-means rung wins and where a graph does."""
    blobs = torch.as_tensor(make_mixture(1001, 5, 4, seed=7)[0]).double()
    rng = np.random.default_rng(0)  # 4 long thin parallel lines: k-means cuts across them
    along = rng.uniform(-10, 10, 1200)
    lines = np.stack([along, np.repeat(np.arange(4.0), 300) + rng.normal(0, 0.02, 1200)], 1)
    out = []
    for x in (blobs, torch.as_tensor(lines)):
        x = x - x.mean(0)
        out.append((x, NIWPrior(torch.zeros(x.shape[1], dtype=torch.float64),
                                torch.cov(x.T), x.shape[1] + 2.0, 1e-4)))
    return out


def test_sharded_statistics_equal_those_of_the_whole(tmp_path):
    out = tmp_path / "sharded.pt"
    mp.spawn(_sharded_pieces, args=(2, str(tmp_path / "pg"), str(out)), nprocs=2)
    got = torch.load(out)
    x, _ = make_mixture(1001, 5, 4, seed=7)
    transform = InputTransform("whiten").fit(x, torch.device("cpu"))
    mean, cov = moments(transform.transform(x))
    xt = torch.as_tensor(x)
    centres, labels = kmeans_plus_plus(xt, 4, torch.Generator(),
                                       init=xt[[0, 300, 600, 900]])
    stats = grouped_stats(xt, labels, 4)
    side = two_means_1d(xt, labels, 4, centres,
                        torch.nn.functional.normalize(torch.ones(4, 5), dim=1))
    np.testing.assert_allclose(got["centre"], transform.centre, rtol=1e-10)
    assert got["scale"] == pytest.approx(transform.scale, rel=1e-10)
    np.testing.assert_allclose(got["proj"], transform.proj, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["shift"], transform.shift, atol=1e-5)
    np.testing.assert_allclose(got["mean"], mean, atol=1e-6)
    np.testing.assert_allclose(got["cov"], cov, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["centres"], centres, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["labels"], labels)
    np.testing.assert_allclose(got["n"], stats.n)
    np.testing.assert_allclose(got["s"], stats.s, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(got["side"], side)
    assert got["agreed"][0] == got["agreed"][1]  # both ranks hold the same centres
    # the start's candidates, built over 2 ranks, are those one process builds
    one = [shared_best_candidate(probe, 1, prior, 10.0, torch.Generator().manual_seed(3), 20,
                                 World()) for probe, prior in _start_probes()]
    assert one[0][1] is None and one[1][0] is None  # a k-means rung wins, then a graph
    for (c_got, g_got), (c_one, g_one) in zip(got["starts"], one, strict=True):
        for a, b in ((c_got, c_one), (g_got, g_one)):
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.equal(a, b)


def _fit_bad_shards(rank: int, size: int, init_file: str, out_file: str) -> None:
    """Each rank fits a shard that disagrees with the other's; every rank must raise."""
    from clustering import DeepDPM
    from data.errors import InputError

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=size)
    torch.set_num_threads(1)
    messages = []
    try:
        rng = np.random.default_rng(rank)
        cases = {"uneven": rng.normal(size=(400 if rank == 0 else 12, 3)),
                 "widths": rng.normal(size=(100, 3 + rank))}
        for name, shard in cases.items():
            try:
                DeepDPM(max_epochs=2).fit(shard.astype(np.float32))
                messages.append(f"{name}: no error")
            except InputError as exc:
                messages.append(f"{name}: {exc}")
        if rank == 0:
            Path(out_file).write_text("\n".join(messages))
    finally:
        dist.destroy_process_group()


def test_shards_that_disagree_fail_on_every_rank(tmp_path):
    out = tmp_path / "messages.txt"
    mp.spawn(_fit_bad_shards, args=(2, str(tmp_path / "pg"), str(out)), nprocs=2)
    uneven, widths = out.read_text().splitlines()
    assert "shards are too uneven [400, 12]" in uneven and "at least 20 rows" in uneven
    assert widths.startswith("widths: the ranks' shards have different widths")


def test_one_process_world_is_the_identity():
    world = World()
    t = torch.arange(6.0).view(3, 2)
    assert not world.active and world.is_main
    assert world.sum(t) is t and world.gather_rows(t) is t and world.broadcast(t) is t
    assert world.count(7) == 7 and world.gather_object("a") == ["a"]
    with pytest.raises(ValueError, match="bad"):
        world.agree(ValueError("bad"))
    assert [shard_bounds(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]


@pytest.mark.slow
def test_pipeline_cluster_stage_runs_sharded_under_torchrun(tmp_path):
    import yaml

    from pipeline import run_pipeline
    from pipeline.manifest import read_manifest

    x, y = make_mixture(1200, 6, 4, seed=3)
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "labels.npy", y)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "experiment": "exp", "output_dir": str(tmp_path / "out"),
        "features": {"embeddings": str(tmp_path / "emb.npy"),
                     "labels": str(tmp_path / "labels.npy")},
        "cluster": {"max_epochs": 40, "device": "cpu"}, "wandb": {"mode": "disabled"}}))
    run_pipeline(config, only="features", log=lambda _: None)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*TORCHRUN, "-m", "pipeline", "run", str(config), "--only", "cluster"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    stage = tmp_path / "out/exp/cluster"
    assert read_manifest(stage)["stage"] == "cluster"
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["k"] == 4 and metrics["n"] == 1200
    assert normalized_mutual_info_score(y, np.load(stage / "labels.npy")) >= 0.99
    assert len((stage / "history.csv").read_text().splitlines()) > 10
    refused = subprocess.run([*TORCHRUN, "-m", "pipeline", "run", str(config), "--from",
                              "cluster"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode != 0
    assert "error: under torchrun only the cluster stage runs" in refused.stderr


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL ranks)")
def test_two_nccl_ranks_on_gpus_fit_like_one_process(tmp_path):
    x, y = make_mixture(20000, 16, 8, seed=5)
    np.save(tmp_path / "x.npy", x)
    common = ["fit", str(tmp_path / "x.npy"), "--quiet", "device=cuda"]
    single = subprocess.run([sys.executable, "-m", "clustering", *common, "--out",
                             str(tmp_path / "one")], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr
    run = subprocess.run([*TORCHRUN, "-m", "clustering", *common, "--out", str(tmp_path / "two")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["world_size"] == 2 and two["k"] == one["k"] == 8
    labels = [np.load(tmp_path / d / "labels.npy") for d in ("one", "two")]
    assert normalized_mutual_info_score(*labels) >= 0.99
