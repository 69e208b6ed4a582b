"""`python -m clustering` and the embedding file formats, including every bad-input message."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clustering.cli import main
from clustering.metrics import cluster_acc, evaluate
from data.errors import InputError
from data.files import load_array, load_labels

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def embeddings(tmp_path, mixture):
    x, y = mixture(900, 4, 3, seed=2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, x, y


def test_fit_writes_outputs_and_predict_reuses_the_model(embeddings, capsys):
    tmp, x, y = embeddings
    out = tmp / "run"
    rc = main(["fit", str(tmp / "x.npy"), "--labels", str(tmp / "y.npy"), "--out", str(out),
               "max_epochs=60", "init_k=2", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "K = 3" in printed and "NMI" in printed
    labels = np.load(out / "labels.npy")
    assert labels.shape == (900,)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["k"] == 3 and metrics["nmi"] > 0.9
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and 2 <= len(history) <= 61  # converged: fewer
    assert "log_joint" in history[0].split(",")
    assert "max_epochs: 60" in (out / "config.yaml").read_text()
    assert not list(out.glob(".*.tmp"))  # no temp files left behind
    rc = main(["predict", str(out / "model.pt"), str(tmp / "x.npy"), "--out", str(tmp / "p.npy"),
               "--proba", str(tmp / "proba.npy")])
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp / "p.npy"), labels)
    assert np.load(tmp / "proba.npy").shape == (900, 3)


def _fails(argv: list[str], capsys, message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err, err
    assert len(err.splitlines()) == 1


def test_cli_bad_inputs_give_one_line_and_status_2(embeddings, capsys):
    tmp, x, y = embeddings
    out = str(tmp / "o")
    _fails(["fit", str(tmp / "missing.npy"), "--out", out], capsys, "no such file")
    np.save(tmp / "nan.npy", np.where(np.arange(900)[:, None] % 100 == 0, np.nan, x))
    _fails(["fit", str(tmp / "nan.npy"), "--out", out], capsys, "NaN or Inf in 9 of 900 rows")
    np.save(tmp / "flat.npy", x[:, 0])
    _fails(["fit", str(tmp / "flat.npy"), "--out", out], capsys, "2-D")
    np.save(tmp / "few.npy", x[:3])
    _fails(["fit", str(tmp / "few.npy"), "--out", out], capsys, "at least")
    np.save(tmp / "short.npy", y[:-1])
    _fails(["fit", str(tmp / "x.npy"), "--labels", str(tmp / "short.npy"), "--out", out], capsys,
           "899 labels")
    _fails(["fit", str(tmp / "x.npy"), "--out", out, "bogus_key=1"], capsys,
           "unknown key 'bogus_key'")
    _fails(["fit", str(tmp / "x.npy"), "--out", out, "init_k=0"], capsys, "init_k")
    _fails(["fit", str(tmp / "x.npy"), "--out", out, "init_k=901"], capsys, "init_k")
    _fails(["fit", str(tmp / "x.npy"), "--out", out, "nu=3"], capsys, "nu must be > D - 1")
    (tmp / "text.npy").write_text("not an array")
    _fails(["fit", str(tmp / "text.npy"), "--out", out], capsys, "cannot be read")
    _fails(["predict", str(tmp / "nomodel.pt"), str(tmp / "x.npy"), "--out", out], capsys,
           "no such file; expected a DeepDPM model file")
    assert not (tmp / "o").exists()  # nothing half-written


def test_cli_runs_as_a_module_with_exit_status_2():
    proc = subprocess.run([sys.executable, "-m", "clustering", "fit", "/nonexistent.npy", "--out",
                           "/tmp/x"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: /nonexistent.npy: no such file"


def test_file_formats(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3))
    torch.save(torch.tensor(x), tmp_path / "t.pt")
    np.testing.assert_allclose(load_array(tmp_path / "t.pt"), x)
    np.savez(tmp_path / "one.npz", codes=x)
    np.testing.assert_allclose(load_array(tmp_path / "one.npz"), x)
    np.savez(tmp_path / "two.npz", codes=x, other=x)
    with pytest.raises(InputError, match="name one"):
        load_array(tmp_path / "two.npz")
    np.testing.assert_allclose(load_array(tmp_path / "two.npz", key="other"), x)
    (tmp_path / "x.csv").write_text("1")
    with pytest.raises(InputError, match="unsupported file type"):
        load_array(tmp_path / "x.csv")
    # a pickled numpy array inside a .pt file is refused unless explicitly allowed
    with open(tmp_path / "pickled.pt", "wb") as fh:
        pickle.dump(x, fh)
    with pytest.raises(InputError, match="pickled"):
        load_array(tmp_path / "pickled.pt")
    np.testing.assert_allclose(load_array(tmp_path / "pickled.pt", allow_pickle=True), x)
    (tmp_path / "labels.txt").write_text("cat dog cat\n")
    assert list(load_labels(tmp_path / "labels.txt")) == ["cat", "dog", "cat"]


def test_metrics_hungarian_rectangular_and_string_labels():
    truth = np.array(["a", "a", "b", "b", "c", "c"])
    pred = np.array([5, 5, 7, 7, 7, 9])  # 3 clusters, one class split across two
    assert cluster_acc(truth, pred) == pytest.approx(5 / 6)
    extra = np.array([0, 1, 2, 3, 4, 5])  # more clusters than classes: unmatched ones are errors
    assert cluster_acc(truth, extra) == pytest.approx(3 / 6)
    result = evaluate(truth, np.array([1, 1, 0, 0, 2, 2]))
    assert result == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "acc": 1.0, "k": 3}


# ------------------------------------------------------------- never lose or corrupt work
def _fit_args(tmp: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", str(tmp / "x.npy"), "--out", str(out), "max_epochs=8", "init_k=3",
            "--quiet", *extra]


def test_fit_out_is_replaced_whole_or_not_at_all(embeddings, capsys, monkeypatch):
    import clustering.cli as cli

    tmp, _, _ = embeddings
    out = tmp / "run"
    assert main(_fit_args(tmp, out, "seed=0")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*args, **kwargs):  # the process dies after labels and model were written
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "save_csv", killed)
    assert main(_fit_args(tmp, out, "seed=1")) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old run, whole
    monkeypatch.undo()
    assert main(_fit_args(tmp, out, "seed=1")) == 0  # the next run replaces it, whole
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after.keys() == before.keys() and after["config.yaml"] != before["config.yaml"]
    assert [p.name for p in tmp.iterdir() if p.name.startswith(f".{out.name}.")] == \
        [f".{out.name}.lock"]  # no partial or old folder left


def test_fit_refuses_to_touch_a_folder_it_did_not_write(embeddings, capsys):
    tmp, _, _ = embeddings
    mine = tmp / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    _fails(_fit_args(tmp, mine), capsys, "did not write (notes.txt)")
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    _fails(_fit_args(tmp, tmp / "x.npy"), capsys, "is a file, not a folder")
    _fails(_fit_args(tmp, tmp / "x.npy" / "o"), capsys, "cannot write in")


def test_second_run_on_one_out_folder_is_refused_naming_the_holder(embeddings, capsys):
    import os

    from data.folders import folder_lock

    tmp, _, _ = embeddings
    with folder_lock(tmp / "run", "--out"):  # another run holds it
        _fails(_fit_args(tmp, tmp / "run"), capsys, f"in use by another run (pid {os.getpid()})")
    assert main(_fit_args(tmp, tmp / "run")) == 0  # released when the holder ends


def test_outputs_follow_the_umask(embeddings, capsys):
    import os
    import stat

    tmp, _, _ = embeddings
    old = os.umask(0o027)
    try:
        assert main(_fit_args(tmp, tmp / "run")) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp / "run").iterdir()}
    assert set(modes.values()) == {0o640}, modes


def test_damaged_model_files_and_bad_predict_targets_give_one_line(embeddings, capsys):
    tmp, _, _ = embeddings
    assert main(_fit_args(tmp, tmp / "run")) == 0
    model = tmp / "run" / "model.pt"
    state = torch.load(model, weights_only=True)
    predict = ["predict", None, str(tmp / "x.npy"), "--out", str(tmp / "p.npy")]
    for _case, change in [("missing key", lambda s: s.pop("prior")),
                         ("wrong K", lambda s: s.update(k=s["k"] + 2)),
                         ("wrong means", lambda s: s["params"].update(mu=s["params"]["mu"][:1])),
                         ("bad groups", lambda s: s.update(component_cluster=s[
                             "component_cluster"] + 50)),
                         ("old format", lambda s: s.update(format="deepdpm-v1"))]:
        bad = {**state, "params": dict(state["params"])}
        change(bad)
        torch.save(bad, tmp / "bad.pt")
        predict[1] = str(tmp / "bad.pt")
        _fails(predict, capsys, "saved by another version" if _case == "old format"
               else "damaged DeepDPM model file")
    predict[1] = str(model)
    _fails([*predict[:3], "--out", str(tmp)], capsys, "is a folder")
    _fails([*predict, "--proba", str(tmp)], capsys, "is a folder")
    assert not (tmp / "p.npy").exists()  # refused before anything was written


def test_oversized_npy_header_is_named_as_such(tmp_path, capsys):
    header = ("{'descr': '<f4', 'fortran_order': False, 'shape': (20, 2), }"
              + " " * 200_000 + "\n").encode()
    path = tmp_path / "big.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header
                     + np.zeros(40, np.float32).tobytes())
    _fails(["fit", str(path), "--out", str(tmp_path / "o")], capsys, "header is far larger")


def test_config_errors_are_one_line(embeddings, capsys):
    tmp, _, _ = embeddings
    cases = {"alias": ("a: &a [1, 2]\nb: *a\n", "YAML alias"),
             "scalar": ("just a string\n", "must hold a mapping"),
             "huge": ("# pad\n" * 200_000, "too large for a config")}
    for name, (text, message) in cases.items():
        (tmp / f"{name}.yaml").write_text(text)
        _fails(_fit_args(tmp, tmp / "o", "--config", str(tmp / f"{name}.yaml")), capsys, message)
    _fails(_fit_args(tmp, tmp / "o", "alpha=${oc.env:HOME}"), capsys, "cannot resolve 'alpha'")
    assert not (tmp / "o").exists()


# ---------------------------------------------------------------- defaults in one place
REPO = Path(__file__).resolve().parents[1]
SHOWN_AS = {"nu": "D + 2", "cluster_hidden": "[50]"}  # None defaults the table spells out


def test_clustering_yaml_and_readme_table_match_the_dataclass_defaults():
    """DeepDPMConfig holds every default; configs/clustering.yaml and the README's
    parameter table show them, and must not drift from it."""
    import re
    from dataclasses import asdict

    import yaml

    from clustering.config import DeepDPMConfig

    defaults = asdict(DeepDPMConfig())
    assert yaml.safe_load((REPO / "configs" / "clustering.yaml").read_text()) == defaults
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Parameters"):]
    table = table[table.index("| key |"):]
    table = table[:table.index("\n\n")]
    shown: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        keys = re.findall(r"`(\w+)`", cells[0])
        values = [v.strip() for v in cells[1].split(" / ")] if len(keys) > 1 else [cells[1]]
        assert len(keys) == len(values), row
        shown.update(zip(keys, values, strict=True))
    assert set(shown) == set(defaults), set(shown) ^ set(defaults)
    for key, text in shown.items():
        if key in SHOWN_AS:
            assert text == SHOWN_AS[key] and defaults[key] is None, key
            continue
        value = yaml.safe_load(text.replace("None", "null"))
        if isinstance(value, str) and re.fullmatch(r"[0-9.]+e-?[0-9]+", value):
            value = float(value)  # YAML 1.1 reads 1e-3 as text
        assert value == defaults[key], (key, text, defaults[key])
