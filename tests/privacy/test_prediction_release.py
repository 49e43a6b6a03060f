"""Prediction release mechanisms: configs, output shapes, calibrated noise, accuracy against epsilon."""

from __future__ import annotations

import numpy as np
import pytest

from privacy import prediction_release as rel


def _probs(n: int = 4000, k: int = 10, top: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    probs = np.full((n, k), (1 - top) / (k - 1))
    probs[np.arange(n), labels] = top
    return probs, labels


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(release="text"), "release"),
        (dict(release="label", mechanism="laplace"), "mechanism"),
        (dict(release="scores", mechanism="exponential"), "mechanism"),
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=float("inf")), "epsilon"),
        (dict(release="scores", mechanism="gaussian", delta=0.0), "delta"),
        (dict(release="label", mechanism="exponential", delta=1e-6), "pure"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rel.PredictionConfig(**kwargs)


def test_release_shapes_and_score_noise_scale():
    probs, labels = _probs(n=50_000, k=4)
    rng = np.random.default_rng(0)
    for mech in rel.LABEL_MECHANISMS:
        out = rel.release(probs, rel.PredictionConfig("label", mech, 2.0), rng)
        assert out.shape == (50_000,) and out.min() >= 0 and out.max() < 4
    noisy = rel.release(probs, rel.PredictionConfig("scores", "laplace", 0.5), rng)
    assert noisy.shape == probs.shape
    b = rel.SCORE_SENSITIVITY_L1 / 0.5  # Laplace(2/eps): L1 sensitivity of the simplex
    assert np.var(noisy - probs) == pytest.approx(2 * b * b, rel=0.02)
    gauss = rel.release(probs, rel.PredictionConfig("scores", "gaussian", 1.0, delta=1e-6), rng)
    from privacy.mechanisms import analytic_gaussian_sigma

    assert np.std(gauss - probs) == pytest.approx(analytic_gaussian_sigma(np.sqrt(2), 1.0, 1e-6), rel=0.02)


def test_report_noisy_max_accuracy_increases_with_epsilon():
    probs, labels = _probs()
    epsilons = [0.5, 2, 8, 32]
    rows = rel.accuracy_vs_epsilon(probs, labels, epsilons, repeats=3, seed=1)
    assert rows[0]["mechanism"].startswith("argmax") and rows[0]["accuracy"] == 1.0
    for mech in ("exponential", "noisy_max_laplace", "randomized_response"):
        accs = [r["accuracy"] for r in rows if r["mechanism"] == mech]
        assert len(accs) == len(epsilons)
        assert all(a < b for a, b in zip(accs, accs[1:], strict=False)), (mech, accs)
        assert accs[0] < 0.25 and accs[-1] > 0.95
    exact = [r["expected_accuracy_exact"] for r in rows if r["mechanism"] == "exponential"]
    sampled = [r["accuracy"] for r in rows if r["mechanism"] == "exponential"]
    assert np.allclose(exact, sampled, atol=0.03)
    assert "exponential" in rel.format_accuracy_table(rows)
