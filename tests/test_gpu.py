"""CUDA paths: run on a machine with a GPU (`pytest -m gpu`); skipped, with the reason,
where CUDA is absent (CI has no GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clustering import DeepDPM
from clustering.moves import nearest_neighbours
from clustering.nets import SubclusterNets

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")]


def test_subnet_forward_on_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(0)
    cpu = SubclusterNets(16, 7, 8, gen, torch.device("cpu"))
    gpu = SubclusterNets(16, 7, 8, torch.Generator().manual_seed(0), torch.device("cpu")).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(300, 16, generator=gen)
    z = torch.randint(0, 7, (300,), generator=gen)
    torch.testing.assert_close(gpu(x.cuda(), z.cuda()).cpu(), cpu(x, z), rtol=1e-4, atol=1e-5)


def test_faiss_gpu_index_finds_the_cpu_neighbours():
    import faiss

    if faiss.get_num_gpus() == 0:
        pytest.skip("faiss has no GPU (faiss-cpu installed; `make install FAISS=gpu`)")
    means = torch.randn(500, 32, generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(nearest_neighbours(means.cuda(), 3),
                                  nearest_neighbours(means, 3))


def test_fit_on_gpu_agrees_with_cpu(mixture):
    from sklearn.metrics import normalized_mutual_info_score

    x, y = mixture(2000, 8, 5, seed=4)
    on_cpu = DeepDPM(seed=0, max_epochs=60, device="cpu").fit(x, y)
    on_gpu = DeepDPM(seed=0, max_epochs=60, device="cuda").fit(x, y)
    assert on_gpu.device_.type == "cuda" and on_gpu.n_clusters_ == on_cpu.n_clusters_
    assert normalized_mutual_info_score(on_cpu.labels_, on_gpu.labels_) >= 0.99
    np.testing.assert_array_equal(on_gpu.predict(x), on_gpu.labels_)


def test_moco_step_with_amp_on_cuda(tmp_path: Path):
    from PIL import Image

    from features import train_moco

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for k in range(8):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                root / name / f"{k}.png")
    cfg = {"data": {"source": "imagefolder", "image_size": 16, "root": str(root)},
           "model": {"width": 8, "head_hidden_dim": 32, "head_output_dim": 16},
           "augment": {"blur": 0.0},
           "train": {"epochs": 1, "batch_size": 8, "num_workers": 0, "memory_bank_size": 32,
                     "device": "cuda", "amp": True, "lr": 0.05},
           "embed": {"batch_size": 8, "num_workers": 0}}
    records: list[dict] = []
    train_moco(cfg, tmp_path / "run", progress=False, on_epoch=records.append)
    assert records and np.isfinite(records[0]["loss"])
