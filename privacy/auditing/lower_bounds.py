"""Empirical lower bounds on epsilon from canary scores: evidence beside every proven epsilon.

An attack that tells inserted canaries from left-out ones better than e^eps/(1+e^eps) allows is
evidence that the run is not eps-DP. These functions turn the attack's success into the largest
epsilon it refutes at a chosen significance (the probability that a correct (eps, delta)-DP run would
still show that much success). A lower bound is a floor found by one attack, not the true epsilon:
a weak attack gives a low bound whatever the truth; a bound above the claimed epsilon is evidence of a
bug (noise not added, clipping skipped, accounting for the wrong sampling).

* One run (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training Run"): m canaries,
  each inserted independently with probability 1/2; the attacker guesses "in" for the k highest
  scores (k- = 0: one-sided, as jax_privacy's `epsilon_one_run`) and abstains on the rest.
  With r guesses of which v are correct, for an (eps, delta)-DP run
      P[v or more correct] <= beta + 2 m delta alpha,  q = e^eps / (1 + e^eps),
      beta = P[Bin(r, q) >= v],  alpha = max_{i=1..v} (1/i) sum_{j=1..i} P[Bin(r, q) = v - j],
  and the bound is the largest eps whose p-value is below the significance (bracketing, then
  Brent's method). k is chosen after the scores are seen, so the significance is divided among a
  grid of k fixed in advance (Bonferroni). jax_privacy divides it among the vertices of the observed
  ROC hull instead, which is data-dependent; the tests reproduce its published values from the
  same p-value and search, with its candidate set.
* Many runs (Jagielski et al. 2020; Nasr et al. 2021): one canary per run, independent trials, exact
  Clopper-Pearson intervals: eps = max(0, log(TPR_lo - delta) - log(FPR_hi)), also with the roles
  of in and out swapped. Not for many canaries of one model: they are not independent trials.

numpy/scipy only: no training here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize, special, stats

DEFAULT_SIGNIFICANCE = 0.05


def one_run_p_value(m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[>= `correct` right of `guesses`] for an (epsilon, delta)-DP run with m canaries."""
    q = special.expit(epsilon)
    beta = stats.binom.sf(correct - 1, guesses, q)  # P[Bin(r, q) >= v]
    if delta == 0 or correct == 0:
        return float(min(beta, 1.0))
    i = np.arange(1, correct + 1)
    partial = stats.binom.sf(correct - i - 1, guesses, q) - beta  # sum_{j=1..i} P[Bin = v - j]
    alpha = float(np.max(partial / i))
    return float(min(beta + 2 * m * delta * alpha, 1.0))


def one_run_epsilon(
    m: int, guesses: int, correct: int, significance: float, delta: float, at_least: float = 0.0
) -> float:
    """The largest epsilon that `correct` right guesses out of `guesses` refute at `significance`.

    Brackets the root of significance - p(eps) by doubling, then Brent's method (to 1e-7). Returns
    `at_least` when not even that epsilon is refuted.
    """

    def margin(eps: float) -> float:  # > 0 while eps is refuted
        return significance - one_run_p_value(m, guesses, correct, eps, delta)

    if guesses == 0 or one_run_p_value(m, guesses, correct, at_least, 0.0) >= significance:
        return at_least  # with delta = 0 the p-value is smallest: a cheap first test
    if margin(at_least) <= 0:
        return at_least
    lo, hi = at_least, max(1.0, 2 * at_least)
    while margin(hi) > 0:
        lo, hi = hi, 2 * hi
        if hi > 1e3:
            return float("inf")
    return float(optimize.brentq(margin, lo, hi, xtol=1e-7))


def guess_counts(num_canaries: int) -> np.ndarray:
    """The numbers of "in" guesses tried: m/2, m/4, ..., 1 (fixed before any score is seen)."""
    return np.unique([max(1, num_canaries >> j) for j in range(1, max(2, num_canaries.bit_length()))])


@dataclasses.dataclass(frozen=True)
class LowerBound:
    """An empirical lower bound and the guesses behind it."""

    epsilon_lower_bound: float
    significance: float
    num_canaries: int
    guesses: int
    correct: int
    threshold: float  # the lowest score guessed "in"
    candidates_tried: int
    method: str


METHOD = (
    "one-run audit (Steinke, Nasr & Jagielski 2023): guess 'in' for the k highest scores, k from the "
    "fixed grid m/2, m/4, ..., 1, the best k paid for with a Bonferroni correction over the grid"
)


def one_run_audit(
    in_scores, out_scores, delta: float, significance: float = DEFAULT_SIGNIFICANCE
) -> LowerBound:
    """One-run lower bound from the scores of inserted (`in_scores`) and left-out canaries.

    Higher score = "more likely inserted". The attacker guesses "in" for the k highest scores and
    abstains on the rest (k- = 0). k is chosen after the scores are seen, so every k of a grid fixed
    in advance is tested at significance / (grid size): a union bound that holds whatever the data
    (a correction over data-dependent candidates, such as the vertices of the observed ROC hull,
    would not). Ties are broken by a fixed random order, independent of which canaries are in.
    """
    inn = np.asarray(in_scores, dtype=np.float64).ravel()
    out = np.asarray(out_scores, dtype=np.float64).ravel()
    if inn.size == 0 or out.size == 0:
        raise ValueError("a one-run audit needs inserted and left-out canaries (got an empty side)")
    if not (0 < significance < 1 and 0 <= delta < 1):
        raise ValueError(f"significance must be in (0, 1) and delta in [0, 1), got {significance}, {delta}")
    if not (np.all(np.isfinite(inn)) and np.all(np.isfinite(out))):
        raise ValueError("canary scores must be finite")
    m = inn.size + out.size
    scores = np.concatenate([inn, out])
    is_in = np.arange(m) < inn.size
    tie_break = np.random.default_rng(0).permutation(m)
    order = tie_break[np.argsort(-scores[tie_break], kind="stable")]  # highest score first
    correct_by_k = np.concatenate([[0], np.cumsum(is_in[order])])
    grid = guess_counts(m)
    per_test = significance / len(grid)
    best = (0.0, 0, 0, float("inf"))
    for k in sorted(grid, key=lambda k: -correct_by_k[k] / k):  # most precise first: later ones prune
        correct = int(correct_by_k[k])
        if correct / k <= special.expit(best[0]):
            continue  # precision no better than the best bound's q: cannot refute a larger eps
        eps = one_run_epsilon(m, int(k), correct, per_test, delta, at_least=best[0])
        if eps > best[0]:
            best = (eps, int(k), correct, float(scores[order[k - 1]]))
    eps, guesses, correct, threshold = best
    return LowerBound(eps, significance, m, guesses, correct, threshold, len(grid), METHOD)


def one_run_ceiling(
    num_canaries: int, num_inserted: int, delta: float, significance: float = DEFAULT_SIGNIFICANCE
) -> float:
    """The largest bound `one_run_audit` can give with these canaries: every guess right.

    A run whose claimed epsilon is above this cannot be refuted by the audit, whatever the bug;
    more canaries raise it (about logarithmically).
    """
    grid = guess_counts(num_canaries)
    return max(
        (
            one_run_epsilon(num_canaries, int(k), int(k), significance / len(grid), delta)
            for k in grid
            if k <= num_inserted
        ),
        default=0.0,
    )


def clopper_pearson_upper(k: int, n: int, significance: float) -> float:
    """One-sided exact upper confidence bound on a binomial proportion (k successes of n)."""
    return 1.0 if k >= n else float(stats.beta.ppf(1 - significance, k + 1, n - k))


def many_runs_epsilon(
    true_positives: int,
    positives: int,
    false_positives: int,
    negatives: int,
    delta: float,
    significance: float = DEFAULT_SIGNIFICANCE,
) -> float:
    """Lower bound from independent runs: TPR and FPR of one attack over many runs, both directions.

    eps = max(0, log(TPR_lo - delta) - log(FPR_hi)) with exact Clopper-Pearson bounds, each at
    significance / 2, and the same with in/out swapped: log(TNR_lo - delta) - log(FNR_hi).

    Taking the larger direction costs no further correction: both directions are made of the same
    two one-sided bounds (TPR_lo = 1 - FNR_hi, TNR_lo = 1 - FPR_hi), so with probability at least
    1 - significance (a union bound over those two) FNR <= FNR_hi and FPR <= FPR_hi hold together,
    and then both directions are below the true epsilon at once. Halving again per direction would
    only make the bound weaker (tests compute the exact miss rate of the maximum).
    """
    if not (0 <= true_positives <= positives and 0 <= false_positives <= negatives):
        raise ValueError(
            "counts must satisfy 0 <= true positives <= positives, 0 <= false positives <= negatives"
        )

    def bound(tp: int, pos: int, fp: int, neg: int) -> float:
        tpr_lo = 1 - clopper_pearson_upper(pos - tp, pos, significance / 2)
        fpr_hi = clopper_pearson_upper(fp, neg, significance / 2)
        if tpr_lo <= delta:
            return 0.0
        return max(0.0, float(np.log(tpr_lo - delta) - np.log(fpr_hi)))

    forward = bound(true_positives, positives, false_positives, negatives)
    backward = bound(negatives - false_positives, negatives, positives - true_positives, positives)
    return max(forward, backward)
