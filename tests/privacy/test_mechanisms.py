"""Statistical tests of the noise mechanisms, at fixed seeds, with >= 1e5 draws each.

Every bound below is a confidence bound (5 sigma, or a KS p-value) that a wrong scale or a
wrong keep-probability would break; the `*_detects_*` tests check that it does.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from privacy import mechanisms as m

N = 200_000


def _within(observed: float, expected: float, sd: float, z: float = 5.0) -> bool:
    return abs(observed - expected) <= z * sd


# ---------------------------------------------------------------- randomized response


@pytest.mark.parametrize("k,eps", [(2, 0.5), (5, 1.0), (10, 2.0)])
def test_randomized_response_keep_probability_and_uniform_off_diagonal(k, eps):
    rng = np.random.default_rng(1234)
    labels = rng.integers(0, k, size=N)
    out = m.randomized_response(labels, k, eps, rng)
    p = math.exp(eps) / (math.exp(eps) + k - 1)
    assert m.randomized_response_keep_probability(eps, k) == pytest.approx(p, rel=1e-12)
    kept = np.mean(out == labels)
    assert _within(kept, p, math.sqrt(p * (1 - p) / N)), (kept, p)
    # Off the diagonal: given a flip, the output is uniform over the k-1 other labels.
    for true in range(k):
        flipped = out[(labels == true) & (out != true)]
        assert np.all(flipped != true)
        if k > 2:
            counts = np.bincount(flipped, minlength=k)[np.arange(k) != true]
            assert stats.chisquare(counts).pvalue > 1e-4, counts
    assert out.dtype == labels.dtype and out.min() >= 0 and out.max() < k


def test_randomized_response_detects_a_wrong_keep_probability():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=N)
    out = m.randomized_response(labels, 4, 1.0, rng)
    wrong = m.randomized_response_keep_probability(1.1, 4)
    assert not _within(np.mean(out == labels), wrong, math.sqrt(wrong * (1 - wrong) / N))


def test_randomized_response_extremes_and_errors():
    rng = np.random.default_rng(0)
    assert m.randomized_response_keep_probability(1000.0, 10) == 1.0  # no overflow
    assert np.array_equal(m.randomized_response(np.arange(10), 10, 1000.0, rng), np.arange(10))
    with pytest.raises(ValueError, match="labels must be in"):
        m.randomized_response(np.array([0, 3]), 3, 1.0, rng)
    with pytest.raises(ValueError, match="at least 2 classes"):
        m.randomized_response(np.array([0]), 1, 1.0, rng)
    with pytest.raises(ValueError, match="epsilon"):
        m.randomized_response(np.array([0]), 2, 0.0, rng)


# ---------------------------------------------------------------- Laplace


def test_laplace_variance_and_ks():
    rng = np.random.default_rng(2024)
    b = m.laplace_scale(sensitivity=2.0, epsilon=0.5)
    assert b == 4.0
    noise = m.laplace_mechanism(np.zeros(N), 2.0, 0.5, rng)
    # Var of the sample variance of Laplace(b) is (mu4 - sigma^4)/n = 20 b^4 / n.
    assert _within(np.var(noise), 2 * b * b, math.sqrt(20 * b**4 / N))
    assert stats.kstest(noise, "laplace", args=(0, b)).pvalue > 1e-3
    assert stats.kstest(noise, "laplace", args=(0, 1.05 * b)).pvalue < 1e-6  # the test can fail
    shifted = m.laplace_mechanism(np.full(N, 3.0), 2.0, 0.5, np.random.default_rng(2024))
    assert np.allclose(shifted - 3.0, noise)


# ---------------------------------------------------------------- Gaussian


@pytest.mark.parametrize("calibration", ["analytic", "classic"])
def test_gaussian_variance_and_ks(calibration):
    rng = np.random.default_rng(99)
    sigma = m.gaussian_sigma(1.5, 0.8, 1e-5, calibration)
    noise = m.gaussian_mechanism(np.zeros(N), 1.5, 0.8, 1e-5, rng, calibration)
    assert _within(np.var(noise), sigma**2, math.sqrt(2 * sigma**4 / N))
    assert stats.kstest(noise, "norm", args=(0, sigma)).pvalue > 1e-3
    assert stats.kstest(noise, "norm", args=(0, 1.03 * sigma)).pvalue < 1e-6


def test_classic_gaussian_formula_and_refusal_above_one():
    assert m.classic_gaussian_sigma(1.0, 1.0, 1e-5) == pytest.approx(math.sqrt(2 * math.log(1.25e5)))
    with pytest.raises(ValueError, match="epsilon <= 1"):
        m.classic_gaussian_sigma(1.0, 1.5, 1e-5)
    with pytest.raises(ValueError, match="delta"):
        m.classic_gaussian_sigma(1.0, 0.5, 0.0)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-8])
def test_analytic_sigma_is_below_classic_and_exact(eps, delta):
    sigma = m.analytic_gaussian_sigma(1.0, eps, delta)
    assert sigma < m.classic_gaussian_sigma(1.0, eps, delta)
    assert m.gaussian_delta(sigma, 1.0, eps) <= delta
    assert m.gaussian_delta(sigma * (1 - 1e-6), 1.0, eps) > delta  # smallest such sigma


def test_analytic_sigma_matches_pinned_value_and_dp_accounting():
    # Balle & Wang (2018): eps=1, delta=1e-5, Delta=1 needs sigma ~= 3.73 (classic: 4.84).
    sigma = m.analytic_gaussian_sigma(1.0, 1.0, 1e-5)
    assert sigma == pytest.approx(3.7306, abs=1e-4)
    from dp_accounting.pld import privacy_loss_mechanism

    # An independent implementation of the same exact delta(epsilon) curve.
    for sens, eps, delta in [(1.0, 1.0, 1e-5), (2.0, 3.0, 1e-6), (0.5, 8.0, 1e-5)]:
        s = m.analytic_gaussian_sigma(sens, eps, delta)
        loss = privacy_loss_mechanism.GaussianPrivacyLoss(s, sensitivity=sens)
        assert loss.get_delta_for_epsilon(eps) == pytest.approx(delta, rel=1e-4)
    # And via the PLD accountant (pessimistic discretization: epsilon slightly above target).
    import dp_accounting

    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    acc.compose(dp_accounting.GaussianDpEvent(sigma))
    assert acc.get_epsilon(1e-5) == pytest.approx(1.0, abs=2e-3)


def test_analytic_gaussian_scales_with_sensitivity():
    assert m.analytic_gaussian_sigma(3.0, 2.0, 1e-5) == pytest.approx(
        3 * m.analytic_gaussian_sigma(1.0, 2.0, 1e-5)
    )


# ---------------------------------------------------------------- report-noisy-max


def test_report_noisy_max_gumbel_is_the_exponential_mechanism():
    rng = np.random.default_rng(5)
    scores = np.array([[0.7, 0.2, 0.1, 0.0]])
    eps = 4.0
    labels = m.report_noisy_max(np.repeat(scores, N, axis=0), eps, rng, noise="gumbel")
    expected = m.exponential_mechanism_probabilities(scores, eps)[0]
    counts = np.bincount(labels, minlength=4)
    assert stats.chisquare(counts, expected * N).pvalue > 1e-4
    # The DP ratio at the worst pair of neighbours (every score moved by the sensitivity).
    p = m.exponential_mechanism_probabilities(np.array([[1.0, 0.0], [0.0, 1.0]]), eps)
    assert p[0, 0] / p[1, 0] <= math.exp(eps) * (1 + 1e-12)


def test_report_noisy_max_accuracy_increases_with_epsilon():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, size=20_000)
    scores = np.full((20_000, 10), 0.02)
    scores[np.arange(20_000), truth] = 0.82
    for noise in m.NOISY_MAX_NOISES:
        accs = [np.mean(m.report_noisy_max(scores, e, rng, noise=noise) == truth) for e in (0.1, 1, 5, 50)]
        assert all(a < b for a, b in zip(accs, accs[1:], strict=False)), (noise, accs)
        assert accs[0] < 0.2 and accs[-1] > 0.99


def test_report_noisy_max_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="shape"):
        m.report_noisy_max(np.ones(3), 1.0, rng)
    with pytest.raises(ValueError, match="noise"):
        m.report_noisy_max(np.ones((2, 3)), 1.0, rng, noise="uniform")


# ---------------------------------------------------------------- clipping


@pytest.mark.parametrize("clip_fn,order", [(m.clip_l2, 2), (m.clip_l1, 1)])
def test_clipping_bounds_norm_and_keeps_short_rows(clip_fn, order):
    rng = np.random.default_rng(3)
    x = rng.normal(0, 3, size=(10_000, 4, 4))
    x[:100] *= 1e-3  # short rows: must be untouched
    clipped = clip_fn(x, 1.5)
    assert clipped.shape == x.shape
    norms = np.linalg.norm(clipped.reshape(len(x), -1), ord=order, axis=1)
    assert np.all(norms <= 1.5 * (1 + 1e-12))
    assert np.allclose(clipped[:100], x[:100])
    long = np.linalg.norm(x.reshape(len(x), -1), ord=order, axis=1) > 1.5
    assert np.allclose(norms[long], 1.5)
    # Clipping only rescales: the direction is kept.
    cos = np.sum(clipped.reshape(len(x), -1) * x.reshape(len(x), -1), axis=1)
    assert np.all(cos >= 0)
    with pytest.raises(ValueError, match="clip"):
        clip_fn(x, 0.0)
