"""The one input transform (clustering/transform.py): what each kind does, and how
DeepDPM's model space relates to the transform itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clustering.transform import KINDS, InputTransform
from data.errors import InputError

CPU = torch.device("cpu")


def _data(n: int = 400, d: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 30 + 1e3).astype(np.float32)


def test_none_applies_nothing():
    x = _data()
    np.testing.assert_array_equal(InputTransform("none").fit(x, CPU).apply(x).numpy(), x)


@pytest.mark.parametrize("kind", KINDS)
def test_model_space_maps_back_to_the_transform(kind):
    """transform(x) is apply(x) up to one affine map; to_input_units undoes it, so the
    model's means and covariances are reported where apply puts the rows."""
    x = _data()
    t = InputTransform(kind).fit(x, CPU)
    applied, model = t.apply(x).double(), t.transform(x).double()
    assert model.mean(0).abs().max() < 1e-5  # the model space is centred
    mean, cov = t.to_input_units(model.mean(0), torch.cov(model.T))
    np.testing.assert_allclose(mean, applied.mean(0).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cov, torch.cov(applied.T).numpy(), rtol=1e-3, atol=1e-3)


def test_scale_keeps_the_geometry_at_unit_row_norm():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    y = InputTransform("scale").fit(x, CPU).apply(x).double()
    assert torch.allclose(y.pow(2).sum(1).mean(), torch.tensor(1.0, dtype=torch.float64))
    ratio = torch.cdist(torch.as_tensor(x), torch.as_tensor(x)) / torch.cdist(y, y).clamp_min(1e-12)
    assert torch.allclose(ratio[0, 1], ratio[1, 2]) and torch.allclose(ratio[0, 1], ratio[0, 2])


def test_each_kind_does_what_it_says():
    x = _data()
    rows = InputTransform("normalize").fit(x, CPU).apply(x)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(len(x)))
    z = InputTransform("standardize").fit(x, CPU).apply(x).double()
    torch.testing.assert_close(z.std(0), torch.ones(5, dtype=torch.float64), rtol=1e-4, atol=0)
    w = InputTransform("whiten", whiten_dim=3).fit(x, CPU).apply(x).double()
    torch.testing.assert_close(torch.cov(w.T), torch.eye(3, dtype=torch.float64), atol=1e-4,
                               rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_state_round_trip(kind):
    x = _data()
    t = InputTransform(kind).fit(x, CPU)
    back = InputTransform.from_state(t.state(), CPU)
    torch.testing.assert_close(back.apply(x), t.apply(x), rtol=0, atol=0)
    torch.testing.assert_close(back.transform(x), t.transform(x), rtol=0, atol=0)


def test_unknown_kind_is_one_clear_error():
    with pytest.raises(InputError, match="input_transform must be one of"):
        InputTransform("zscore")
