"""DeepDPM is a scikit-learn estimator: clone, get/set_params, pipelines, and sklearn's
own estimator checks (every check that applies to a clusterer: the list below)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.utils.estimator_checks as checks
from conftest import make_mixture
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from clustering import DeepDPM
from clustering.config import CONFIG_KEYS

# scikit-learn's checks that apply to a clusterer without partial_fit, sample weights or
# sparse input (sparse input must fail with a message that says so: checked here too)
SKLEARN_CHECKS = (
    "check_estimator_cloneable", "check_estimator_repr", "check_mixin_order",
    "check_no_attributes_set_in_init", "check_parameters_default_constructible",
    "check_get_params_invariance", "check_set_params",
    "check_do_not_raise_errors_in_init_or_set_params", "check_valid_tag_types",
    "check_estimator_tags_renamed", "check_estimators_fit_returns_self",
    "check_fit_score_takes_y", "check_requires_y_none", "check_fit_check_is_fitted",
    "check_estimators_unfitted", "check_n_features_in", "check_n_features_in_after_fitting",
    "check_dont_overwrite_parameters", "check_estimators_overwrite_params",
    "check_dict_unchanged", "check_fit_idempotent", "check_pipeline_consistency",
    "check_estimators_pickle", "check_estimators_dtypes", "check_dtype_object",
    "check_f_contiguous_array_estimator", "check_complex_data", "check_estimator_sparse_array",
    "check_estimators_empty_data_messages", "check_estimators_nan_inf", "check_fit1d",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_fit2d_predict1d",
    "check_methods_subset_invariance", "check_methods_sample_order_invariance",
    "check_clustering", "check_clusterer_compute_labels_predict",
    "check_positive_only_tag_during_fit",
)


@pytest.mark.parametrize("name", SKLEARN_CHECKS)
def test_sklearn_estimator_checks(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks' tiny data sets warn (few points)
        getattr(checks, name)("DeepDPM", DeepDPM(max_epochs=20))


def test_clone_get_and_set_params_cover_every_config_key():
    model = DeepDPM(cluster_hidden=[20], alpha=3.0)
    twin = clone(model)
    assert twin is not model and twin.get_params() == model.get_params()
    assert set(model.get_params()) == set(CONFIG_KEYS)
    assert twin.cluster_hidden == [20] and twin.config.cluster_hidden == [20]
    twin.set_params(alpha=5.0, max_epochs=30)
    assert (twin.config.alpha, twin.config.max_epochs, model.alpha) == (5.0, 30, 3.0)
    assert repr(model) == "DeepDPM(alpha=3.0, cluster_hidden=[20])"


def test_in_a_pipeline_after_a_scaler():
    x, y = make_mixture(600, 4, 3, seed=1)
    pipe = make_pipeline(StandardScaler(), DeepDPM(init_k=1, seed=0, max_epochs=40))
    labels = pipe.fit_predict(x * 50.0 + 7.0)
    assert pipe[-1].n_clusters_ == 3 and len(labels) == 600
    assert np.array_equal(pipe.predict(x * 50.0 + 7.0)[:50], labels[:50])
    with pytest.raises(NotFittedError):
        DeepDPM().predict(x)
