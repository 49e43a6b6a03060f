"""Data-level (local) DP on a Dataset's training split."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from data.datasets import Dataset, synthetic_classification, synthetic_regression
from pipelines.outputs import atomic_write_json
from privacy import mechanisms
from privacy.local_dp import LocalDpConfig, apply_local_dp


@pytest.fixture(scope="module")
def clf() -> Dataset:
    return synthetic_classification(num_examples=20_000, num_features=20, num_classes=4, seed=1)


def test_disabled_is_identity(clf):
    config = LocalDpConfig()
    assert not config.enabled
    out, report = apply_local_dp(clf, config, seed=0)
    assert out is clf
    assert report == {"enabled": False}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(label_epsilon=0.0),
        dict(label_epsilon=-1.0),
        dict(label_epsilon=math.inf),
        dict(feature_epsilon=1.0),  # no clip: unbounded sensitivity
        dict(feature_clip=1.0),  # clip without epsilon
        dict(feature_epsilon=1.0, feature_clip=1.0, feature_mechanism="uniform"),
        dict(feature_epsilon=1.0, feature_clip=1.0, feature_mechanism="gaussian", feature_delta=0.0),
    ],
)
def test_bad_config_is_a_clear_value_error(kwargs):
    with pytest.raises(ValueError, match="local"):
        LocalDpConfig(**kwargs)


def test_labels_randomized_response_keep_rate_and_test_set_untouched(clf):
    eps = 1.0
    out, report = apply_local_dp(clf, LocalDpConfig(label_epsilon=eps), seed=3)
    n = clf.num_train
    p = mechanisms.randomized_response_keep_probability(eps, clf.num_classes)
    kept = np.mean(out.y_train == clf.y_train)
    assert abs(kept - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert np.array_equal(out.x_train, clf.x_train)  # features untouched
    assert out.x_test is clf.x_test and out.y_test is clf.y_test
    assert out.y_train.dtype == clf.y_train.dtype
    assert report["enabled"] and report["labels"]["keep_probability"] == pytest.approx(p)
    assert report["per_record_epsilon"] == eps and report["per_record_delta"] == 0.0


def test_features_laplace_are_l1_clipped_then_noised_with_scale_2c_over_eps(clf):
    config = LocalDpConfig(feature_epsilon=2.0, feature_clip=1.5, feature_mechanism="laplace")
    out, report = apply_local_dp(clf, config, seed=0)
    noise = out.x_train.astype(np.float64) - mechanisms.clip_l1(clf.x_train, 1.5)
    b = 2 * 1.5 / 2.0
    assert report["features"]["sensitivity"] == 3.0
    assert report["features"]["noise_scale_per_coordinate"] == pytest.approx(b)
    # Laplace(b) has variance 2 b^2 and mean |X| = b.
    assert np.var(noise) == pytest.approx(2 * b * b, rel=0.03)
    assert np.mean(np.abs(noise)) == pytest.approx(b, rel=0.02)
    assert np.array_equal(out.y_train, clf.y_train)
    assert out.x_test is clf.x_test


def test_features_gaussian_use_l2_clip_and_analytic_sigma():
    reg = synthetic_regression(num_examples=30_000, seed=2)
    config = LocalDpConfig(
        feature_epsilon=1.0, feature_clip=0.5, feature_mechanism="gaussian", feature_delta=1e-6
    )
    out, report = apply_local_dp(reg, config, seed=0)
    sigma = mechanisms.analytic_gaussian_sigma(1.0, 1.0, 1e-6)
    noise = out.x_train.astype(np.float64) - mechanisms.clip_l2(reg.x_train, 0.5)
    assert report["features"]["clip_norm"] == "l2"
    assert report["features"]["noise_scale_per_coordinate"] == pytest.approx(sigma)
    assert np.std(noise) == pytest.approx(sigma, rel=0.02)
    assert report["per_record_delta"] == 1e-6


def test_regression_labels_are_refused():
    reg = synthetic_regression(num_examples=200)
    with pytest.raises(ValueError, match="regression"):
        apply_local_dp(reg, LocalDpConfig(label_epsilon=1.0), seed=0)


def test_seeded_and_client_ids_kept(clf):
    with_ids = dataclasses.replace(clf, client_ids=np.arange(clf.num_train) % 7)
    config = LocalDpConfig(label_epsilon=0.5, feature_epsilon=1.0, feature_clip=2.0)
    a, _ = apply_local_dp(with_ids, config, seed=5)
    b, _ = apply_local_dp(with_ids, config, seed=5)
    c, _ = apply_local_dp(with_ids, config, seed=6)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.client_ids is with_ids.client_ids


def test_report_is_json_and_says_it_is_separate_from_training_epsilon(clf, tmp_path):
    config = LocalDpConfig(
        label_epsilon=1.0, feature_epsilon=2.0, feature_clip=1.0, feature_mechanism="gaussian"
    )
    _, report = apply_local_dp(clf, config, seed=0)
    path = tmp_path / "privacy.json"
    atomic_write_json(str(path), {"local_dp": report})
    loaded = json.loads(path.read_text())["local_dp"]
    assert loaded["per_record_epsilon"] == 3.0
    assert "separate" in loaded["note"] and "training" in loaded["note"]
