"""Data-level (local) DP: each training record perturbed on its own (numpy arrays in, arrays out)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from data.datasets import Dataset, synthetic_classification, synthetic_regression
from privacy import mechanisms
from privacy.local_dp import LocalDpConfig, apply_local_dp


def _apply(ds: Dataset, config: LocalDpConfig, seed: int) -> tuple[Dataset, dict]:
    x, y, report = apply_local_dp(ds.x_train, ds.y_train, ds.num_classes, config, seed)
    return dataclasses.replace(ds, x_train=x, y_train=y), report


@pytest.fixture(scope="module")
def clf() -> Dataset:
    return synthetic_classification(num_examples=20_000, num_features=20, num_classes=4, seed=1)


def test_disabled_is_identity(clf):
    config = LocalDpConfig()
    assert not config.enabled
    out, report = _apply(clf, config, seed=0)
    assert out.x_train is clf.x_train and out.y_train is clf.y_train
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
    out, report = _apply(clf, LocalDpConfig(label_epsilon=eps), seed=3)
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
    out, report = _apply(clf, config, seed=0)
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
    out, report = _apply(reg, config, seed=0)
    sigma = mechanisms.analytic_gaussian_sigma(1.0, 1.0, 1e-6)
    noise = out.x_train.astype(np.float64) - mechanisms.clip_l2(reg.x_train, 0.5)
    assert report["features"]["clip_norm"] == "l2"
    assert report["features"]["noise_scale_per_coordinate"] == pytest.approx(sigma)
    assert np.std(noise) == pytest.approx(sigma, rel=0.02)
    assert report["per_record_delta"] == 1e-6


def test_regression_labels_are_refused():
    reg = synthetic_regression(num_examples=200)
    with pytest.raises(ValueError, match="regression"):
        _apply(reg, LocalDpConfig(label_epsilon=1.0), seed=0)


def test_seeded(clf):
    config = LocalDpConfig(label_epsilon=0.5, feature_epsilon=1.0, feature_clip=2.0)
    a, _ = _apply(clf, config, seed=5)
    b, _ = _apply(clf, config, seed=5)
    c, _ = _apply(clf, config, seed=6)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_report_is_json_and_says_it_is_separate_from_training_epsilon(clf):
    config = LocalDpConfig(
        label_epsilon=1.0, feature_epsilon=2.0, feature_clip=1.0, feature_mechanism="gaussian"
    )
    _, report = _apply(clf, config, seed=0)
    loaded = json.loads(json.dumps({"local_dp": report}, allow_nan=False))["local_dp"]
    assert loaded["per_record_epsilon"] == 3.0
    assert "separate" in loaded["note"] and "training" in loaded["note"]
