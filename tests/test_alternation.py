"""AE alternation: quality on entangled clusters, resume, validation, persistence.

Everything runs the real DeepDPM with a short schedule on small data (CPU, one thread).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import clustering.alternation as alternation_mod
from clustering import DeepDPM
from clustering.alternation import AEAlternation
from clustering.autoencoder import AutoEncoder
from clustering.config import AlternationConfig, DeepDPMConfig, make_alternation_config
from clustering.pull import cluster_means, hard_pull
from clustering.transform import InputTransform
from data.errors import ConfigError, InputError
from data.synthetic import SHORT_CLUSTER, SMALL_AE, entangled


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models on a shared 2-core box run far faster single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return entangled()


# ---------------------------------------------------------------------- helpers
def test_cluster_means_match_a_loop_and_drop_empty_labels():
    rng = np.random.default_rng(0)
    codes = torch.as_tensor(rng.normal(size=(50, 4)), dtype=torch.float32)
    labels = torch.as_tensor(rng.choice([0, 2, 5], size=50))
    got = cluster_means(codes, labels)
    want = torch.stack([codes[labels == k].mean(0) for k in (0, 2, 5)])
    torch.testing.assert_close(got, want)


def test_hard_pull_uses_the_nearest_centre():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    z = torch.tensor([[1.0, 0.0], [9.0, 1.0]], requires_grad=True)
    loss = hard_pull(centres)(z, torch.arange(2))
    assert loss.item() == pytest.approx((1.0 + 2.0) / 2)
    loss.backward()
    torch.testing.assert_close(z.grad, torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))


@pytest.mark.parametrize("kind", ["none", "normalize", "scale", "standardize"])
def test_ae_weights_round_trip_for_every_input_transform(kind, tmp_path):
    from clustering.autoencoder import ae_state, encode, load_ae_state
    from data.files import save_torch

    x = (torch.randn(20, 6) * 3 + 1).numpy()
    scaler = InputTransform(kind).fit(x, torch.device("cpu"))
    ae = AutoEncoder(6, [8], 2)
    save_torch(tmp_path / "ae.pt", ae_state(ae, scaler))
    ae2, scaler2, _ = load_ae_state(tmp_path / "ae.pt", torch.device("cpu"))
    torch.testing.assert_close(encode(ae2, scaler2.apply(x)), encode(ae, scaler.apply(x)))


# ---------------------------------------------------------------------- quality
def test_alternation_beats_deepdpm_on_the_raw_input(data, tmp_path):
    x, y = data
    raw = DeepDPM(**SHORT_CLUSTER).fit(x, y)
    alt = AEAlternation({**SMALL_AE, "pretrain_epochs": 60, "ae_epochs": 20,
                         "n_alternations": 3}, SHORT_CLUSTER).fit(x, y, out_dir=tmp_path)
    assert alt.metrics_["nmi"] >= raw.metrics_["nmi"], (alt.history_, raw.metrics_)
    assert len(alt.history_) == 3


def test_pull_term_tightens_clusters_in_code_space(data, tmp_path):
    """After the AE block the previous clusters are more compact relative to the spread."""
    x, y = data
    records: list[dict] = []
    alt = AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, out_dir=tmp_path, on_epoch=records.append)

    def within_ratio(codes: np.ndarray, labels: np.ndarray) -> float:
        c = torch.as_tensor(codes)
        lab = torch.as_tensor(labels)
        means = cluster_means(c, lab)
        idx = torch.unique(lab, return_inverse=True)[1]
        return float((c - means[idx]).pow(2).sum() / (c - c.mean(0)).pow(2).sum())

    labels0 = np.load(tmp_path / "alt_0" / "labels.npy")
    before = within_ratio(np.load(tmp_path / "alt_0" / "codes.npy"), labels0)
    after = within_ratio(np.load(tmp_path / "alt_1" / "codes.npy"), labels0)
    assert after < before
    pulls = [r["pull_loss"] for r in records if r["stage"] == "ae"]
    assert len(pulls) == SMALL_AE["ae_epochs"] and pulls[-1] < pulls[0]
    assert alt.n_clusters_ >= 1


def test_soft_assignment_runs_and_differs_from_hard(data, tmp_path):
    x, _ = data
    hard = AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, out_dir=tmp_path / "hard")
    soft = AEAlternation({**SMALL_AE, "assignment": "soft"}, SHORT_CLUSTER).fit(
        x, out_dir=tmp_path / "soft")
    # identical pretraining and first clustering; the AE blocks differ
    np.testing.assert_array_equal(np.load(tmp_path / "hard" / "alt_0" / "codes.npy"),
                                  np.load(tmp_path / "soft" / "alt_0" / "codes.npy"))
    assert not np.allclose(hard.codes_, soft.codes_)
    assert soft.history_[-1]["pull_loss"] > 0


def test_warm_start_carries_k_and_cold_start_uses_init_k(data, tmp_path):
    x, _ = data
    warm = AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, out_dir=tmp_path / "warm")
    assert warm.history_[1]["init_k"] == warm.history_[0]["k_used"]
    scale = DeepDPMConfig().prior_sigma_scale
    assert warm.history_[1]["prior_sigma_scale"] == pytest.approx(scale)  # scale / 1
    cold = AEAlternation({**SMALL_AE, "warm_start": False, "n_alternations": 3,
                          "prior_sigma_scale_step": True}, SHORT_CLUSTER).fit(x)
    assert [h["init_k"] for h in cold.history_] == [SHORT_CLUSTER["init_k"]] * 3
    assert cold.history_[2]["prior_sigma_scale"] == pytest.approx(scale / 2)


# ---------------------------------------------------------------------- resume
class Interrupted(RuntimeError):
    pass


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, obj: object, name: str, call: int) -> None:
    """Make obj.name raise on its `call`-th call (1-based)."""
    original = getattr(obj, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call:
            raise Interrupted(f"simulated interruption in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(obj, name, wrapper)


def test_resume_after_interrupted_clustering_skips_pretraining_and_ae_block(data, tmp_path):
    x, y = data
    with pytest.MonkeyPatch.context() as mp:  # second DeepDPM run (alternation 1) crashes
        _fail_on_call(mp, alternation_mod.DeepDPM, "fit", call=2)
        with pytest.raises(Interrupted):
            AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, y, out_dir=tmp_path)
    assert (tmp_path / "alt_0" / "summary.json").is_file()
    assert (tmp_path / "alt_1" / "encoder.pt").is_file()
    assert not (tmp_path / "alt_1" / "summary.json").exists()
    stamp = (tmp_path / "ae_pretrained.pt").stat().st_mtime_ns
    alt0 = (tmp_path / "alt_0" / "deepdpm.pt").stat().st_mtime_ns

    records: list[dict] = []
    resumed = AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, y, out_dir=tmp_path,
                                                   on_epoch=records.append)
    stages = {(r["stage"], r["alternation"]) for r in records}
    assert stages == {("cluster", 1), ("alternation", 1)}  # no pretrain, no AE block, no alt 0
    assert (tmp_path / "ae_pretrained.pt").stat().st_mtime_ns == stamp
    assert (tmp_path / "alt_0" / "deepdpm.pt").stat().st_mtime_ns == alt0
    assert [h["alternation"] for h in resumed.history_] == [0, 1]

    fresh = AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, y, out_dir=tmp_path / "fresh")
    np.testing.assert_array_equal(resumed.labels_, fresh.labels_)
    np.testing.assert_allclose(resumed.codes_, fresh.codes_, rtol=0, atol=1e-5)


def test_resume_after_interrupted_ae_block_continues_from_alternation_1(data, tmp_path):
    x, _ = data
    with pytest.MonkeyPatch.context() as mp:  # call 1 = pretraining, call 2 = AE block 1
        _fail_on_call(mp, alternation_mod, "train_autoencoder", call=2)
        with pytest.raises(Interrupted):
            AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, out_dir=tmp_path)
    assert not (tmp_path / "alt_1").exists()
    records: list[dict] = []
    AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, out_dir=tmp_path, on_epoch=records.append)
    assert {r["stage"] for r in records} == {"ae", "cluster", "alternation"}
    assert {r["alternation"] for r in records} == {1}
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("alternation,k,")


def test_finished_run_is_not_recomputed_and_more_alternations_extend_it(data, tmp_path):
    x, _ = data
    first = AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, out_dir=tmp_path)
    records: list[dict] = []
    again = AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, out_dir=tmp_path, on_epoch=records.append)
    assert records == []
    np.testing.assert_array_equal(first.labels_, again.labels_)
    more: list[dict] = []
    AEAlternation({**SMALL_AE, "n_alternations": 3}, SHORT_CLUSTER).fit(x, out_dir=tmp_path,
                                                                  on_epoch=more.append)
    assert {r["alternation"] for r in more} == {2}


def test_changed_settings_keep_pretraining_but_restart_alternations(data, tmp_path):
    x, _ = data
    AEAlternation({**SMALL_AE, "n_alternations": 1}, SHORT_CLUSTER).fit(x, out_dir=tmp_path)
    records: list[dict] = []
    with pytest.warns(UserWarning, match="settings changed"):
        AEAlternation({**SMALL_AE, "n_alternations": 1}, {**SHORT_CLUSTER, "alpha": 5.0}).fit(
            x, out_dir=tmp_path, on_epoch=records.append)
    assert {r["stage"] for r in records} == {"cluster", "alternation"}  # no pretraining


def test_pretrained_weights_of_another_architecture_are_refused(data, tmp_path):
    x, _ = data
    AEAlternation({**SMALL_AE, "n_alternations": 1}, SHORT_CLUSTER).fit(x, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="ae_pretrained.pt was trained with other settings"):
        AEAlternation({**SMALL_AE, "latent_dim": 4}, SHORT_CLUSTER).fit(x, out_dir=tmp_path)
    with pytest.raises(InputError, match="pretrained on other data"):
        AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x[:-1], out_dir=tmp_path)


# ---------------------------------------------------------------------- persistence
def test_save_load_predict_round_trip(data, tmp_path):
    x, y = data
    records: list[dict] = []
    alt = AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, y, out_dir=tmp_path,
                                                     on_epoch=records.append)
    for name in ("encoder.pt", "deepdpm.pt", "labels.npy", "codes.npy", "history.csv",
                 "alternation.json", "alt_0/labels.npy", "alt_1/deepdpm.pt"):
        assert (tmp_path / name).is_file(), name
    assert all("alternation" in r for r in records)
    cluster_recs = [r for r in records if r["stage"] == "cluster"]
    for a in (0, 1):  # every epoch of each alternation's clustering (converged: fewer)
        epochs = [r["epoch"] for r in cluster_recs if r["alternation"] == a]
        assert epochs == list(range(len(epochs))) and len(epochs) <= SHORT_CLUSTER["max_epochs"]
    assert "k" in cluster_recs[0]
    summaries = [r for r in records if r["stage"] == "alternation"]
    assert [s["alternation"] for s in summaries] == [0, 1] and "nmi" in summaries[0]

    loaded = AEAlternation.load(tmp_path)
    assert loaded.n_clusters_ == alt.n_clusters_
    np.testing.assert_array_equal(loaded.labels_, alt.labels_)
    np.testing.assert_allclose(loaded.transform(x), np.load(tmp_path / "codes.npy"), atol=1e-5)
    np.testing.assert_array_equal(loaded.predict(x), alt.labels_)
    np.testing.assert_array_equal(loaded.predict(x[:7]), alt.labels_[:7])
    proba = loaded.predict_proba(x[:5])
    assert proba.shape == (5, alt.n_clusters_)
    assert loaded.history_ == json.loads((tmp_path / "alternation.json").read_text())["history"]
    with pytest.raises(InputError, match="columns"):
        loaded.predict(x[:, :-1])


def test_fit_without_out_dir_keeps_everything_in_memory(data):
    x, _ = data
    alt = AEAlternation({**SMALL_AE, "n_alternations": 1}, SHORT_CLUSTER).fit(x)
    assert alt.codes_.shape == (len(x), SMALL_AE["latent_dim"])
    np.testing.assert_array_equal(alt.predict(x), alt.labels_)


def test_load_of_an_unfinished_dir_fails_clearly(tmp_path):
    with pytest.raises(InputError, match="not a finished AE alternation output"):
        AEAlternation.load(tmp_path)


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(("override", "match"), [
    ({"pretrain_epochs": 0}, "pretrain_epochs must be >= 1"),
    ({"ae_epochs": 0}, "ae_epochs must be >= 1"),
    ({"ae_epochs": -3}, "ae_epochs must be >= 1"),
    ({"n_alternations": 0}, "n_alternations must be >= 1"),
    ({"assignment": "fuzzy"}, "assignment must be one of"),
    ({"lambda_": -0.1}, "lambda_ must be >= 0"),
    ({"beta": -1.0}, "beta must be >= 0"),
    ({"lambda_": 0.0, "beta": 0.0}, "both 0"),
    ({"latent_dim": 0}, "latent_dim must be >= 1"),
    ({"hidden_dims": [32, 0]}, "hidden_dims must all be >= 1"),
    ({"input_transform": "zscore"}, "input_transform must be one of"),
    ({"latent": 3}, "unknown key"),
])
def test_bad_settings_fail_with_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as info:
        AEAlternation({**SMALL_AE, **override}, SHORT_CLUSTER)
    assert "\n" not in str(info.value)


def test_bad_cluster_settings_and_bad_data_fail_clearly(data):
    x, _ = data
    with pytest.raises(ConfigError, match="unknown key"):
        AEAlternation(SMALL_AE, {"init_kk": 3})
    with pytest.raises(ConfigError, match=r"latent_dim \(30\) must be smaller than the input"):
        AEAlternation({**SMALL_AE, "latent_dim": 30}, SHORT_CLUSTER).fit(x)
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(bad)
    with pytest.raises(InputError, match="labels have"):
        AEAlternation(SMALL_AE, SHORT_CLUSTER).fit(x, np.zeros(3))
    with pytest.raises(InputError, match="not fitted"):
        AEAlternation(SMALL_AE, SHORT_CLUSTER).predict(x)


def test_config_accepts_dataclasses_and_omegaconf():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(AlternationConfig(latent_dim=4))
    assert make_alternation_config(cfg).latent_dim == 4
    assert make_alternation_config(AlternationConfig()).hidden_dims == [500, 500, 2000]
    ae = AutoEncoder(30, [500, 500, 2000], 10)
    assert ae.encoder[0].in_features == 30 and ae.encoder[-1].out_features == 10
    assert ae.decoder[-1].out_features == 30


def test_ae_weights_of_another_format_say_so(tmp_path):
    from clustering.autoencoder import ae_state, load_ae_state
    from data.files import save_torch

    x = np.zeros((4, 3), dtype=np.float32) + np.arange(3, dtype=np.float32)
    state = ae_state(AutoEncoder(3, [4], 2), InputTransform("none").fit(x, torch.device("cpu")))
    save_torch(tmp_path / "old.pt", {**state, "format": "deepdpm-ae-v1"})
    with pytest.raises(InputError, match="saved by another version .* delete it"):
        load_ae_state(tmp_path / "old.pt", torch.device("cpu"))
    save_torch(tmp_path / "other.pt", {**state, "format": "something-else"})
    with pytest.raises(InputError, match="not an autoencoder weights file"):
        load_ae_state(tmp_path / "other.pt", torch.device("cpu"))
