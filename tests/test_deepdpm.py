"""DeepDPM end to end on synthetic mixtures: K recovery, moves, API contract, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clustering import DeepDPM
from clustering.nets import SubclusterNets, remap_subcluster_nets
from data.errors import ConfigError, InputError

FAST = {"max_epochs": 90, "batch_size": 256}
# the split/merge moves alone: no K ladder at init, one cluster per component
MOVES = {**FAST, "init_search": False, "merge_modes": False}


@pytest.mark.parametrize(
    ("dim", "init_k", "imbalanced"),
    [(2, 1, False), (2, 30, True), (10, 3, True), (10, 30, False), (32, 1, True),
     (32, 3, False)],
)
def test_recovers_k_from_any_init(mixture, dim, init_k, imbalanced):
    true_k = 6
    x, y = mixture(2400, dim, true_k, imbalanced=imbalanced, seed=dim + init_k)
    model = DeepDPM(init_k=init_k, seed=0, **MOVES).fit(x, y)
    assert abs(model.n_clusters_ - true_k) <= 1, [h["k"] for h in model.history_]
    assert model.metrics_["nmi"] > 0.9
    # the history records every epoch and the split/merge events that changed K
    assert [h["epoch"] for h in model.history_] == list(range(model.n_iter_))
    changes = [h for h in model.history_ if h["event"]]
    assert any(h["splits_accepted"] or h["merges_accepted"] for h in changes) or init_k == true_k


def test_bimodal_cluster_splits_and_two_halves_merge(mixture):
    rng = np.random.default_rng(0)
    two = np.concatenate([rng.normal(size=(500, 3)), rng.normal(size=(500, 3)) + 8])
    split_model = DeepDPM(init_k=1, seed=0, **MOVES).fit(two.astype(np.float32))
    assert split_model.n_clusters_ == 2
    assert max(h["splits_accepted"] for h in split_model.history_) >= 1
    one = rng.normal(size=(1000, 3)).astype(np.float32)
    merge_model = DeepDPM(init_k=2, seed=0, **MOVES).fit(one)
    assert merge_model.n_clusters_ == 1
    assert max(h["merges_accepted"] for h in merge_model.history_) == 1


def test_predict_matches_labels_and_proba_is_a_distribution(mixture):
    x, y = mixture(1500, 5, 4, seed=3)
    model = DeepDPM(init_k=2, seed=1, **FAST).fit(x, y)
    np.testing.assert_array_equal(model.predict(x), model.labels_)
    proba = model.predict_proba(x)
    assert proba.shape == (1500, model.n_clusters_)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert model.means_.shape == (model.n_clusters_, 5)
    assert model.covariances_.shape == (model.n_clusters_, 5, 5)
    assert model.weights_.sum() == pytest.approx(1.0)
    assert np.all(np.linalg.eigvalsh(model.covariances_) > 0)
    # torch input works and gives the same answer
    np.testing.assert_array_equal(model.predict(torch.tensor(x)), model.labels_)


def test_fixed_seed_is_reproducible_and_seed_zero_is_honoured(mixture):
    x, _ = mixture(1200, 4, 3, seed=5)
    runs = [DeepDPM(init_k=1, seed=0, max_epochs=40).fit(x) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].labels_, runs[1].labels_)
    np.testing.assert_array_equal(runs[0].means_, runs[1].means_)
    assert [h["k"] for h in runs[0].history_] == [h["k"] for h in runs[1].history_]
    other = DeepDPM(init_k=1, seed=1, max_epochs=40).fit(x)
    assert not np.array_equal(other.cluster_net_.out_weight.detach().numpy(),
                              runs[0].cluster_net_.out_weight.detach().numpy())


def test_save_load_round_trip_and_resume(mixture, tmp_path):
    x, y = mixture(1500, 6, 4, seed=7)
    model = DeepDPM(init_k=1, seed=0, max_epochs=60, tol=None).fit(x, y)
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = DeepDPM.load(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.n_clusters_ == model.n_clusters_
    assert str(loaded.history_) == str(model.history_)  # str: NaN entries compare equal
    # resume: continue the same run for more epochs from the saved state
    resumed = DeepDPM.load(path)
    resumed.set_params(max_epochs=80)
    resumed.fit(x, y, resume=True)
    assert [h["epoch"] for h in resumed.history_] == list(range(80))
    assert resumed.metrics_["nmi"] > 0.9


def test_converged_run_stops_early_and_stays_stopped(mixture, tmp_path):
    x, y = mixture(1500, 6, 4, seed=7)
    model = DeepDPM(init_k=1, seed=0, max_epochs=200).fit(x, y)
    assert model.converged_ and model.n_iter_ < 200, [h["k"] for h in model.history_]
    assert [h["epoch"] for h in model.history_] == list(range(model.n_iter_))
    tail = model.history_[-model.config.stop_split_merge_before_end:]
    assert not any(h["event"] for h in tail)  # the refinement epochs make no moves
    moves = [h for h in model.history_ if h["event"]][-model.config.n_moves_no_change:]
    assert not any(h["splits_accepted"] + h["merges_accepted"] for h in moves)
    assert model.n_clusters_ == 4 and model.metrics_["nmi"] > 0.95
    model.save(tmp_path / "model.pt")
    resumed = DeepDPM.load(tmp_path / "model.pt")
    resumed.set_params(max_epochs=300)
    resumed.fit(x, y, resume=True)  # a converged run has nothing left to do
    assert resumed.n_iter_ == model.n_iter_
    never = DeepDPM(init_k=1, seed=0, max_epochs=60, tol=None).fit(x)
    assert never.n_iter_ == 60 and not never.converged_


def test_whitening_undoes_a_dominant_nuisance_direction(mixture, tmp_path):
    # 4 clusters in 6 dims, plus 2 columns of wide unimodal noise that dominate the variance
    x, y = mixture(2000, 6, 4, seed=13)
    rng = np.random.default_rng(0)
    nuisance = rng.normal(size=(2000, 2)) * 40.0
    mixing = np.linalg.qr(rng.normal(size=(8, 8)))[0]  # rotate, so no column is clean
    data = (np.hstack([x, nuisance]) @ mixing).astype(np.float32)
    white = DeepDPM(init_k=1, seed=0, input_transform="whiten", whiten_dim=8, **FAST).fit(data, y)
    assert white.n_clusters_ == 4 and white.metrics_["nmi"] > 0.9
    assert white.means_.shape == (4, 8)
    projected = white.transform_.apply(data)
    np.testing.assert_allclose(np.cov(projected.numpy().T), np.eye(8), atol=1e-3)
    # fewer components: the model works in whiten_dim dimensions, predict takes raw rows
    small = DeepDPM(init_k=1, seed=0, input_transform="whiten", whiten_dim=3, **FAST).fit(data, y)
    assert small.means_.shape[1] == 3 and small.predict(data).shape == (2000,)
    path = tmp_path / "white.pt"
    small.save(path)
    np.testing.assert_array_equal(DeepDPM.load(path).predict(data), small.predict(data))
    with pytest.raises(InputError, match="X has 6 features, but DeepDPM is expecting 8"):
        small.predict(data[:, :6])
    # a warm start takes means in the raw space, as predict takes raw rows
    raw_means = np.stack([data[y == k].mean(0) for k in range(4)])
    warm = DeepDPM(seed=0, max_epochs=20, input_transform="whiten", whiten_dim=3)
    assert warm.fit(data, y, init_means=raw_means).n_clusters_ == 4
    with pytest.raises(InputError, match="init_means has 3 columns, X has 8"):
        warm.fit(data, init_means=raw_means[:, :3])


def test_warm_start_from_given_means(mixture):
    x, y = mixture(1500, 4, 5, seed=11)
    means = np.stack([x[y == k].mean(0) for k in range(5)])
    model = DeepDPM(seed=0, max_epochs=30, split=False, merge=False).fit(x, y, init_means=means)
    assert model.n_clusters_ == 5
    assert model.metrics_["nmi"] > 0.95
    seen = []
    DeepDPM(seed=0, max_epochs=3).fit(x, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [0, 1, 2]
    assert all(int(r["sizes"].sum()) == len(x) for r in seen)


def test_subnet_grouped_and_gathered_forward_agree():
    gen = torch.Generator().manual_seed(0)
    nets = SubclusterNets(7, 5, 11, gen, torch.device("cpu"))
    x = torch.randn(64, 7)
    z = torch.randint(0, 5, (64,))
    torch.testing.assert_close(nets.forward_grouped(x, z), nets.forward_gathered(x, z))


def test_subnet_surgery_keeps_survivors_and_their_adam_moments():
    gen = torch.Generator().manual_seed(0)
    nets = SubclusterNets(3, 3, 4, gen, torch.device("cpu"))
    opt = torch.optim.Adam(nets.parameters(), lr=0.1)
    nets(torch.randn(30, 3), torch.randint(0, 3, (30,))).square().sum().backward()
    opt.step()
    before_w, before_m = nets.w1.detach().clone(), opt.state[nets.w1]["exp_avg"].clone()
    source = torch.tensor([0, 2, 1, 1])  # drop nothing, keep 0 and 2, cluster 1 split in two
    fresh = torch.tensor([False, False, True, True])
    remap_subcluster_nets(nets, opt, source, fresh, gen)
    assert nets.w1.shape[0] == 4 and nets.w1 in set(opt.param_groups[0]["params"])
    torch.testing.assert_close(nets.w1[:2].detach(), before_w[[0, 2]])
    torch.testing.assert_close(opt.state[nets.w1]["exp_avg"][:2], before_m[[0, 2]])
    assert torch.all(opt.state[nets.w1]["exp_avg"][2:] == 0)
    opt.step()  # the optimiser still works with the new parameters


@pytest.mark.parametrize(
    ("data", "params", "message"),
    [
        (np.zeros((20,)), {}, "2-D"),
        (np.zeros((5, 3)), {}, "at least"),
        (np.full((30, 2), np.nan), {}, "NaN or Inf in 30 of 30 rows"),
        (np.random.default_rng(0).normal(size=(30, 2)), {"init_k": 0}, "init_k"),
        (np.random.default_rng(0).normal(size=(30, 2)), {"init_k": 31}, "init_k"),
        (np.random.default_rng(0).normal(size=(30, 4)), {"nu": 3.0}, "nu must be > D - 1"),
        (np.random.default_rng(0).normal(size=(30, 2)), {"input_transform": "bogus"},
         "input_transform"),
        (np.random.default_rng(0).normal(size=(30, 2)), {"whiten_dim": 0}, "whiten_dim"),
        (np.random.default_rng(0).normal(size=(30, 2)), {"whiten_dim": 2},
         "only used with input_transform='whiten'"),
        (np.ones((30, 3)), {"input_transform": "whiten"}, "X has no variance"),
        (np.random.default_rng(0).normal(size=(30, 6)), {"input_transform": "whiten",
                                                         "whiten_dim": 3,
                                                         "nu": 1.5}, "= 2 for 3 whitened dim"),
        (np.array([["a", "b"]] * 20), {}, "numeric"),
    ],
)
def test_bad_input_raises_a_clear_error(data, params, message):
    with pytest.raises(InputError, match=message):
        DeepDPM(max_epochs=1, **params).fit(data)


def test_bad_labels_and_parameters(mixture):
    x, _ = mixture(100, 2, 2)
    with pytest.raises(InputError, match="labels have 99 entries but X has 100"):
        DeepDPM(max_epochs=1).fit(x, np.zeros(99))
    with pytest.raises(InputError, match="unknown parameter"):
        DeepDPM(bogus=1)
    with pytest.raises(InputError, match="not fitted"):
        DeepDPM().predict(x)
    model = DeepDPM(max_epochs=2).fit(x)
    with pytest.raises(InputError, match="columns"):
        model.predict(x[:, :1])


def test_bad_device_is_named():
    x = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ConfigError, match="device='bogus': not a device"):
        DeepDPM(max_epochs=1, device="bogus").fit(x)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device='cuda': CUDA is not available"):
            DeepDPM(max_epochs=1, device="cuda").fit(x)


def test_result_does_not_depend_on_the_units_of_x():
    # 5 separated blobs; the same data in other units or far from the origin (float64)
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 200)
    x = rng.normal(size=(5, 10))[y] * 6 + rng.normal(size=(1000, 10))
    params = {"init_k": 5, "max_epochs": 20, "seed": 0}
    ref = DeepDPM(**params).fit(x)
    assert ref.n_clusters_ == 5 and adjusted_rand_score(y, ref.labels_) == 1.0
    for scale, shift in [(1e-6, 0), (1e-4, 0), (1e-2, 0), (1e6, 0), (1, 1e6), (1e-6, 1e6)]:
        model = DeepDPM(**params).fit(x * scale + shift)
        assert adjusted_rand_score(ref.labels_, model.labels_) == 1.0, (scale, shift)
        order = np.argsort(model.means_[:, 0])  # means come back in the data's units
        np.testing.assert_allclose(model.means_[order], ref.means_[np.argsort(ref.means_[:, 0])]
                                   * scale + shift, rtol=1e-4, atol=1e-4 * scale)
    huge = DeepDPM(**params).fit((x * 1e18).astype(np.float32))  # float32 squares overflow
    assert adjusted_rand_score(ref.labels_, huge.labels_) == 1.0
    with pytest.raises(InputError, match="spread"):
        DeepDPM(**params).fit(x * 1e300)
    with pytest.raises(InputError, match="complex"):
        DeepDPM(**params).fit(x + 1j)
