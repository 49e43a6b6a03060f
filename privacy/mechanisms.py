"""Output-perturbation mechanisms: sensitivity in, calibrated noise out.

Every mechanism here is the textbook one with its exact calibration, so a privacy claim
can be read straight off its arguments:

* Laplace: scale b = Delta_1 / epsilon gives epsilon-DP for a query of L1 sensitivity Delta_1.
* Gaussian, classic (Dwork & Roth Thm A.1): sigma = sqrt(2 ln(1.25/delta)) Delta_2 / epsilon,
  proven only for epsilon < 1 (we accept epsilon <= 1 like the usual statement and refuse
  anything larger rather than hand out an unproven guarantee).
* Gaussian, analytic (Balle & Wang 2018, Thm 8): the smallest sigma with
  Phi(Delta/(2 sigma) - eps sigma/Delta) - e^eps Phi(-Delta/(2 sigma) - eps sigma/Delta) <= delta.
  Exact for every epsilon > 0 and never larger than the classic sigma.
* k-ary randomized response: keep the true label with probability e^eps / (e^eps + k - 1),
  else report one of the other k - 1 labels uniformly. epsilon-DP per label (local DP).
* Report-noisy-max / exponential mechanism over class scores (see `report_noisy_max`).
* L1 / L2 clipping of per-record vectors, which is what bounds the sensitivity that the
  noise above is calibrated to.

All randomness comes from an explicit `np.random.Generator`, so callers decide whether a
run is reproducible (tests) or unpredictable (real releases: the noise must be secret).
"""

from __future__ import annotations

import math

import numpy as np

NOISY_MAX_NOISES = ("gumbel", "laplace")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float | np.integer | np.floating) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_delta(delta: float) -> None:
    if not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


# ---------------------------------------------------------------- Laplace


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    """b = Delta_1 / epsilon: the Laplace scale for epsilon-DP at L1 sensitivity Delta_1."""
    _check_positive("sensitivity", sensitivity)
    _check_positive("epsilon", epsilon)
    return sensitivity / epsilon


def laplace_mechanism(
    value: np.ndarray | float, sensitivity: float, epsilon: float, rng: np.random.Generator
) -> np.ndarray:
    """value + Laplace(Delta_1/epsilon) noise on every coordinate (epsilon-DP)."""
    value = np.asarray(value, dtype=np.float64)
    return value + rng.laplace(0.0, laplace_scale(sensitivity, epsilon), size=value.shape)


# ---------------------------------------------------------------- Gaussian


def classic_gaussian_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """sqrt(2 ln(1.25/delta)) Delta_2 / epsilon; the proof needs epsilon <= 1."""
    _check_positive("sensitivity", sensitivity)
    _check_positive("epsilon", epsilon)
    _check_delta(delta)
    if epsilon > 1:
        raise ValueError(
            f"the classic Gaussian calibration is only proven for epsilon <= 1, got {epsilon}; "
            "use the analytic calibration (calibration='analytic') for larger epsilon"
        )
    return math.sqrt(2 * math.log(1.25 / delta)) * sensitivity / epsilon


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """The exact delta(epsilon) of the Gaussian mechanism (Balle & Wang 2018, Thm 8)."""
    from scipy.special import log_ndtr, ndtr  # the standard normal CDF and its log

    a = sensitivity / (2 * sigma)
    b = epsilon * sigma / sensitivity
    # e^eps Phi(-a - b) in log space: e^eps overflows long before the product does.
    return float(ndtr(a - b) - math.exp(epsilon + log_ndtr(-a - b)))


def analytic_gaussian_sigma(sensitivity: float, epsilon: float, delta: float, rtol: float = 1e-10) -> float:
    """Smallest sigma (to `rtol`) for which the Gaussian mechanism is (epsilon, delta)-DP.

    delta(sigma) is decreasing, so bisection on log sigma; we return the upper end of the
    final bracket, so gaussian_delta(result) <= delta always holds.
    """
    _check_positive("sensitivity", sensitivity)
    _check_positive("epsilon", epsilon)
    _check_delta(delta)
    lo, hi = sensitivity * 1e-3, sensitivity
    while gaussian_delta(hi, sensitivity, epsilon) > delta:
        lo, hi = hi, hi * 2
    while gaussian_delta(lo, sensitivity, epsilon) <= delta:
        lo /= 2
        if lo < sensitivity * 1e-12:
            return lo  # pragma: no cover - only for absurd (epsilon, delta)
    while hi - lo > rtol * hi:
        mid = math.sqrt(lo * hi)
        if gaussian_delta(mid, sensitivity, epsilon) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float, calibration: str = "analytic") -> float:
    if calibration == "analytic":
        return analytic_gaussian_sigma(sensitivity, epsilon, delta)
    if calibration == "classic":
        return classic_gaussian_sigma(sensitivity, epsilon, delta)
    raise ValueError(f"calibration must be 'analytic' or 'classic', got {calibration!r}")


def gaussian_mechanism(
    value: np.ndarray | float,
    sensitivity: float,
    epsilon: float,
    delta: float,
    rng: np.random.Generator,
    calibration: str = "analytic",
) -> np.ndarray:
    """value + N(0, sigma^2) on every coordinate; (epsilon, delta)-DP at L2 sensitivity Delta_2."""
    value = np.asarray(value, dtype=np.float64)
    sigma = gaussian_sigma(sensitivity, epsilon, delta, calibration)
    return value + rng.normal(0.0, sigma, size=value.shape)


# ---------------------------------------------------------------- randomized response


def randomized_response_keep_probability(epsilon: float, num_classes: int) -> float:
    """e^eps / (e^eps + k - 1): the probability that k-ary randomized response keeps a label."""
    _check_positive("epsilon", epsilon)
    if num_classes < 2:
        raise ValueError(f"randomized response needs at least 2 classes, got {num_classes}")
    # 1 / (1 + (k-1) e^-eps) is the same number without overflowing e^eps.
    return 1.0 / (1.0 + (num_classes - 1) * math.exp(-epsilon))


def randomized_response(
    labels: np.ndarray, num_classes: int, epsilon: float, rng: np.random.Generator
) -> np.ndarray:
    """Each label independently: kept w.p. e^eps/(e^eps+k-1), else uniform over the other k-1.

    The likelihood ratio of any output under two different true labels is at most
    p_keep / ((1 - p_keep)/(k-1)) = e^eps, so every label is epsilon-local-DP.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    keep = rng.random(labels.shape) < randomized_response_keep_probability(epsilon, num_classes)
    offset = rng.integers(1, num_classes, size=labels.shape)  # uniform over the other k-1 labels
    return np.where(keep, labels, (labels + offset) % num_classes).astype(labels.dtype)


# ---------------------------------------------------------------- report-noisy-max


def report_noisy_max(
    scores: np.ndarray,
    epsilon: float,
    rng: np.random.Generator,
    sensitivity: float = 1.0,
    noise: str = "gumbel",
) -> np.ndarray:
    """One label per row of `scores`, epsilon-DP per row.

    Assumption (the neighbouring relation the per-query epsilon refers to): two inputs are
    neighbours when every score moves by at most `sensitivity` (an L-infinity bound on the
    score vector); scores may move up or down (non-monotone). For class probabilities in
    [0, 1] that holds with sensitivity 1 between ANY two score vectors, i.e. between any two
    models, hence between any two training sets: the guarantee does not depend on how
    much one record changed the model.

    * noise='gumbel' is the exponential mechanism with utility = score,
      P(label = r) proportional to exp(epsilon * score_r / (2 * sensitivity)), sampled exactly
      via the Gumbel-max trick (argmax of score + Gumbel(2 sensitivity / epsilon)).
    * noise='laplace' is report-noisy-max with Laplace(2 sensitivity / epsilon) on every score,
      the scale that is epsilon-DP for non-monotone scores (the familiar 1/epsilon scale needs
      monotone counting queries, which probabilities are not).
    """
    _check_positive("epsilon", epsilon)
    _check_positive("sensitivity", sensitivity)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (num_queries, num_classes>=2), got shape {scores.shape}")
    scale = 2 * sensitivity / epsilon
    if noise == "gumbel":
        noisy = scores + rng.gumbel(0.0, scale, size=scores.shape)
    elif noise == "laplace":
        noisy = scores + rng.laplace(0.0, scale, size=scores.shape)
    else:
        raise ValueError(f"noise must be one of {NOISY_MAX_NOISES}, got {noise!r}")
    return np.argmax(noisy, axis=1)


def exponential_mechanism_probabilities(
    scores: np.ndarray, epsilon: float, sensitivity: float = 1.0
) -> np.ndarray:
    """The exact output distribution of report_noisy_max(noise='gumbel'), for tests and tables."""
    logits = epsilon * np.asarray(scores, dtype=np.float64) / (2 * sensitivity)
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- clipping


def _per_record(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("clipping needs an array of records (first axis = record)")
    return x.reshape(len(x), -1)


def clip_l2(x: np.ndarray, clip: float) -> np.ndarray:
    """Scales each record (row, flattened) down to L2 norm <= clip; shorter rows are untouched."""
    _check_positive("clip", clip)
    flat = _per_record(x)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    factor = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    return (flat * factor).reshape(np.shape(x))


def clip_l1(x: np.ndarray, clip: float) -> np.ndarray:
    """Scales each record (row, flattened) down to L1 norm <= clip; shorter rows are untouched."""
    _check_positive("clip", clip)
    flat = _per_record(x)
    norms = np.abs(flat).sum(axis=1, keepdims=True)
    factor = np.minimum(1.0, clip / np.maximum(norms, 1e-300))
    return (flat * factor).reshape(np.shape(x))
