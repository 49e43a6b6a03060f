"""Prediction-level DP: the release mechanisms for a trained model's answers (numpy only).

This is the third of the seed's places for noise. A query is one input x; the model's
class probabilities p(x) are never released, only a noisy function of them:

* release='label': one label per query.
  - 'exponential' (default): report-noisy-max with Gumbel noise = the exponential mechanism,
    P(label r) proportional to exp(eps * p_r / 2);
  - 'noisy_max_laplace': report-noisy-max with Laplace(2/eps) on each p_r;
  - 'randomized_response': the model's top label, then k-ary randomized response.
* release='scores': the whole probability vector plus noise:
  - 'laplace': Laplace(2/eps) per class (L1 sensitivity 2);
  - 'gaussian': analytic-Gaussian sigma for (eps, delta) at L2 sensitivity sqrt(2).

What the per-query epsilon protects (the neighbouring relation). We make no assumption
about how much one training record can move the model: two score vectors are neighbours
whenever both are probability vectors, i.e. ANY two models. Each p_r is in [0, 1]
(sensitivity 1 per score, L-infinity), two points of the simplex are at most 2 apart in
L1 and sqrt(2) in L2. A released answer is therefore eps-indistinguishable between any two
training sets (a fortiori between two that differ in one record). The query input x itself
is not protected: the querier chose it. Under this worst-case relation randomized response
on the top label is the most accurate of the three label mechanisms; the exponential
mechanism only beats it when scores have small sensitivity (e.g. PATE vote counts).

What each answer costs is charged by `privacy.prediction_ledger`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from privacy import mechanisms

RELEASES = ("label", "scores")
LABEL_MECHANISMS = ("exponential", "noisy_max_laplace", "randomized_response")
SCORE_MECHANISMS = ("laplace", "gaussian")
SCORE_SENSITIVITY_LINF = 1.0  # each probability is in [0, 1]
SCORE_SENSITIVITY_L1 = 2.0  # two points of the probability simplex
SCORE_SENSITIVITY_L2 = math.sqrt(2.0)


@dataclasses.dataclass(frozen=True)
class PredictionConfig:
    """How each query is answered and what it costs."""

    release: str = "label"
    mechanism: str = "exponential"
    epsilon: float = 1.0  # per query
    delta: float = 0.0  # per query; only the Gaussian score release uses it

    def __post_init__(self) -> None:
        if self.release not in RELEASES:
            raise ValueError(f"release must be one of {RELEASES}, got {self.release!r}")
        allowed = LABEL_MECHANISMS if self.release == "label" else SCORE_MECHANISMS
        if self.mechanism not in allowed:
            raise ValueError(f"release={self.release!r} takes mechanism in {allowed}, got {self.mechanism!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"prediction epsilon must be a finite number > 0, got {self.epsilon}")
        if self.uses_delta and not (0 < self.delta < 1):
            raise ValueError(
                f"the Gaussian score release needs a per-query delta in (0, 1), got {self.delta}"
            )
        if not self.uses_delta and self.delta != 0:
            raise ValueError(f"mechanism {self.mechanism!r} is pure epsilon-DP; leave delta at 0")

    @property
    def uses_delta(self) -> bool:
        return self.release == "scores" and self.mechanism == "gaussian"

    def describe(self) -> str:
        texts = {
            "exponential": "exponential mechanism (report-noisy-max, Gumbel noise of scale 2/eps)",
            "noisy_max_laplace": "report-noisy-max with Laplace(2/eps) per class score",
            "randomized_response": "k-ary randomized response on the model's top label",
            "laplace": f"Laplace(2/eps) per class probability (L1 sensitivity {SCORE_SENSITIVITY_L1:g})",
            "gaussian": "analytic Gaussian per class probability (L2 sensitivity sqrt(2))",
        }
        cost = f"eps={self.epsilon:g}" + (f", delta={self.delta:g}" if self.uses_delta else "")
        return f"{texts[self.mechanism]}; {cost} per query; neighbours: any two probability vectors"


def release(probs: np.ndarray, config: PredictionConfig, rng: np.random.Generator) -> np.ndarray:
    """The noisy answers to a batch of queries: labels (n,) or scores (n, k). No budget check."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"class probabilities must be (num_queries, num_classes>=2), got {probs.shape}")
    eps, k = config.epsilon, probs.shape[1]
    if config.mechanism == "exponential":
        return mechanisms.report_noisy_max(probs, eps, rng, SCORE_SENSITIVITY_LINF, noise="gumbel")
    if config.mechanism == "noisy_max_laplace":
        return mechanisms.report_noisy_max(probs, eps, rng, SCORE_SENSITIVITY_LINF, noise="laplace")
    if config.mechanism == "randomized_response":
        return mechanisms.randomized_response(np.argmax(probs, axis=1), k, eps, rng)
    if config.mechanism == "laplace":
        return mechanisms.laplace_mechanism(probs, SCORE_SENSITIVITY_L1, eps, rng)
    return mechanisms.gaussian_mechanism(probs, SCORE_SENSITIVITY_L2, eps, config.delta, rng, "analytic")


def released_labels(released: np.ndarray) -> np.ndarray:
    """Labels from a release: themselves, or the argmax of noisy scores (post-processing)."""
    return released if released.ndim == 1 else np.argmax(released, axis=1)


# ---------------------------------------------------------------- accuracy against epsilon


def accuracy_vs_epsilon(
    probs: np.ndarray,
    labels: np.ndarray,
    epsilons: Sequence[float],
    mechanisms_to_compare: Sequence[tuple[str, str]] = (
        ("label", "exponential"),
        ("label", "noisy_max_laplace"),
        ("label", "randomized_response"),
        ("scores", "laplace"),
    ),
    repeats: int = 5,
    seed: int = 0,
) -> list[dict]:
    """Accuracy of released labels vs true labels, per mechanism and per-query epsilon.

    A simulation for choosing epsilon, run on held-out data by the model owner: its noisy
    outputs are never released, so it spends no budget. The non-private accuracy (argmax of
    the model's probabilities) is the ceiling every row approaches as epsilon grows.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    rows = [
        {
            "release": "none",
            "mechanism": "argmax (non-private)",
            "epsilon": math.inf,
            "accuracy": float(np.mean(np.argmax(probs, 1) == labels)),
            "accuracy_std": 0.0,
        }
    ]
    for release_kind, mechanism in mechanisms_to_compare:
        for eps in epsilons:
            config = PredictionConfig(release_kind, mechanism, eps)
            accs = [np.mean(released_labels(release(probs, config, rng)) == labels) for _ in range(repeats)]
            row = {
                "release": release_kind,
                "mechanism": mechanism,
                "epsilon": float(eps),
                "accuracy": float(np.mean(accs)),
                "accuracy_std": float(np.std(accs)),
            }
            if mechanism == "exponential":
                p = mechanisms.exponential_mechanism_probabilities(probs, eps, SCORE_SENSITIVITY_LINF)
                row["expected_accuracy_exact"] = float(np.mean(p[np.arange(len(labels)), labels]))
            rows.append(row)
    return rows


def format_accuracy_table(rows: list[dict]) -> str:
    lines = [f"{'release':<8} {'mechanism':<22} {'eps/query':>9} {'accuracy':>9} {'+-':>6} {'exact':>7}"]
    for r in rows:
        exact = r.get("expected_accuracy_exact")
        lines.append(
            f"{r['release']:<8} {r['mechanism']:<22} {r['epsilon']:>9g} {r['accuracy']:>9.4f} "
            f"{r['accuracy_std']:>6.4f} {'' if exact is None else f'{exact:.4f}':>7}"
        )
    return "\n".join(lines)
