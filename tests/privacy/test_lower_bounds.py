"""Empirical epsilon lower bounds, pinned to independent values and to properties that can fail."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from scipy import special, stats

from privacy.auditing.lower_bounds import (
    clopper_pearson_upper,
    many_runs_epsilon,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)

# independent values: the closed form below, and jax_privacy's published test values


@pytest.mark.parametrize("r, expected", [(100, 3.4930), (1000, 5.8091)])
def test_all_correct_without_delta_is_the_closed_form(r, expected):
    # v = r, delta = 0: p(eps) = q^r, so the bound solves q^r = significance: logit(0.05^(1/r)).
    closed = special.logit(0.05 ** (1 / r))
    assert closed == pytest.approx(expected, abs=1e-4)
    assert one_run_epsilon(2 * r, r, r, 0.05, 0.0) == pytest.approx(closed, abs=1e-6)


def _deterministic_normal(mu: float, n: int) -> np.ndarray:
    """N(mu, 1) quantiles at evenly spaced probabilities (the score model of jax_privacy's tests)."""
    return stats.norm.ppf(np.linspace(0, 1, n, endpoint=False) + 1 / (2 * n)) + mu


def _roc_hull_thresholds(inn: np.ndarray, out: np.ndarray) -> np.ndarray:
    """jax_privacy's candidates: the thresholds on the upper hull of (false negatives, true negatives)."""
    thresholds = np.concatenate([np.union1d(inn, out), [np.inf]])
    x = np.searchsorted(np.sort(inn), thresholds, side="left").astype(float)
    y = np.searchsorted(np.sort(out), thresholds, side="left").astype(float)
    hull: list[int] = []
    for k in range(len(x)):
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            if (x[a] - x[o]) * (y[k] - y[o]) - (y[a] - y[o]) * (x[k] - x[o]) < 0:
                break
            hull.pop()
        hull.append(k)
    return thresholds[hull]


@pytest.mark.parametrize("shift, expected", [(0, 0.0), (1, 1.13346), (2, 2.311945), (4, 4.395568)])
def test_p_value_and_search_reproduce_jax_privacy(shift, expected):
    # jax_privacy/auditing_test.py, test_epsilon_one_run_close: 10,000 canaries on each side,
    # significance 0.05, delta 1e-6, one-sided guesses, Bonferroni over the ROC hull's vertices.
    out, inn = _deterministic_normal(0, 10_000), _deterministic_normal(shift, 10_000)
    thresholds = _roc_hull_thresholds(inn, out)
    best = 0.0
    for t in thresholds:
        correct = int(np.sum(inn >= t))
        guesses = correct + int(np.sum(out >= t))
        best = max(best, one_run_epsilon(20_000, guesses, correct, 0.05 / len(thresholds), 1e-6))
    assert best == pytest.approx(expected, rel=1e-5, abs=1e-9)
    # The project's grid of k, fixed in advance, pays for ~14 candidates where a smooth ROC curve puts
    # nearly every one of the 20,000 thresholds on the hull: more power here, and still below the
    # true epsilon of this Gaussian mechanism (PLD accountant, shift / noise = `shift`).
    ours = one_run_audit(inn, out, delta=1e-6, significance=0.05).epsilon_lower_bound
    if shift == 0:
        assert ours == 0.0
        return
    true_eps = dp_accounting.pld.PLDAccountant().compose(dp_accounting.GaussianDpEvent(1 / shift))
    assert best <= ours < true_eps.get_epsilon(1e-6)


def _naive_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The paper's loop, term by term (Steinke et al. 2023, Algorithm 2)."""
    q = special.expit(eps)
    beta = stats.binom.sf(v - 1, r, q)
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, total / i)
    return min(beta + alpha * delta * 2 * m, 1.0)


@pytest.mark.parametrize("m, r, v", [(10, 10, 7), (100, 40, 33), (1000, 100, 100), (1000, 100, 0)])
@pytest.mark.parametrize("eps, delta", [(0.0, 0.0), (0.5, 1e-6), (1.0, 1e-3), (2.0, 0.1)])
def test_p_value_agrees_with_the_papers_loop(m, r, v, eps, delta):
    naive = _naive_p_value(m, r, v, eps, delta)
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(naive, abs=1e-12)


def test_more_correct_guesses_never_lower_the_bound():
    for r in (20, 100):
        bounds = [one_run_epsilon(1000, r, v, 0.05, 1e-5) for v in range(r + 1)]
        assert all(b2 >= b1 for b1, b2 in zip(bounds, bounds[1:]))
        assert bounds[r // 2] == 0.0 and bounds[-1] > 1.0  # chance refutes nothing; all right does


def test_bound_is_valid_for_a_randomized_response_mechanism():
    # Canaries released through eps-randomized response (exactly the worst case the test is built
    # on): a 95% lower confidence bound may exceed eps in at most 5% of audits; 100 audits with a
    # valid bound exceed it 9 or more times with probability 0.06. Nor is it trivially 0.
    eps, m = 1.0, 2000
    rng = np.random.default_rng(0)
    bounds = []
    for _ in range(100):
        inserted = rng.random(m) < 0.5
        truthful = rng.random(m) < special.expit(eps)
        score = np.where(truthful, inserted, ~inserted).astype(float) + rng.random(m) * 1e-3
        bounds.append(one_run_audit(score[inserted], score[~inserted], 0.0).epsilon_lower_bound)
    assert np.sum(np.array(bounds) > eps) <= 8
    assert np.median(bounds) > 0.5


def test_clopper_pearson_upper_has_its_coverage():
    # P[Bin(n, p_hi) <= k] = significance exactly (the definition of the exact one-sided bound).
    for n, k in [(10, 3), (100, 50), (1000, 900)]:
        p_hi = clopper_pearson_upper(k, n, 0.05)
        assert stats.binom.cdf(k, n, p_hi) == pytest.approx(0.05, rel=1e-6)
    assert clopper_pearson_upper(10, 10, 0.05) == 1.0


def test_many_runs_bound_by_hand_and_in_both_directions():
    # 1000 runs in, 1000 out: TPR 0.9, FPR 0.05.
    tpr_lo = 1 - clopper_pearson_upper(100, 1000, 0.025)
    fpr_hi = clopper_pearson_upper(50, 1000, 0.025)
    expected = np.log(tpr_lo - 1e-5) - np.log(fpr_hi)
    assert many_runs_epsilon(900, 1000, 50, 1000, 1e-5) == pytest.approx(expected)
    # an attack that says "out" well (TNR 0.9, FNR 0.05) is bounded through TNR / FNR the same way
    assert many_runs_epsilon(950, 1000, 100, 1000, 1e-5) == pytest.approx(expected)
    assert many_runs_epsilon(500, 1000, 500, 1000, 1e-5) == 0.0


@pytest.mark.parametrize("eps", [1.0, 2.0])
def test_many_runs_bound_exceeds_the_true_epsilon_at_most_significance_of_the_time(eps):
    # Exact, not sampled: every outcome of n runs with the canary and n without, of a mechanism that
    # is exactly eps-DP and tight in BOTH directions (randomized response: TPR = TNR = e^eps/(1+e^eps)),
    # weighted by its probability. The 95% bound, the larger of its two directions, may exceed eps
    # with probability at most 5%. (Each Clopper-Pearson bound at 10% instead of 2.5% misses 5.9%
    # at eps = 1 and 9.8% at eps = 2; point estimates miss 58%.)
    n, q = 100, special.expit(eps)
    p_tp = stats.binom.pmf(np.arange(n + 1), n, q)
    p_fp = stats.binom.pmf(np.arange(n + 1), n, 1 - q)
    tps, fps = np.flatnonzero(p_tp > 1e-12), np.flatnonzero(p_fp > 1e-12)
    miss = sum(
        p_tp[tp] * p_fp[fp]
        for tp in tps
        for fp in fps
        if many_runs_epsilon(int(tp), n, int(fp), n, 0.0, significance=0.05) > eps
    )
    assert 0 < miss <= 0.05


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="empty"):
        one_run_audit([], [1.0], 0.0)
    with pytest.raises(ValueError, match="finite"):
        one_run_audit([np.nan], [1.0], 0.0)
    with pytest.raises(ValueError, match="counts"):
        many_runs_epsilon(5, 4, 0, 1, 0.0)
