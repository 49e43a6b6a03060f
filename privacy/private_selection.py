"""Private selection: the epsilon of a hyperparameter search, not only of the run it picked.

Papernot & Steinke (ICLR 2022, "Hyperparameter tuning with Renyi differential privacy"): run a DP
algorithm K times, K drawn at random (Poisson, geometric or truncated negative binomial) and
independent of the data, and release only the best run (its output and score). If every run
satisfies one common RDP curve (the *per-run event*), the whole search satisfies a bound that
dp_accounting computes for `RepeatAndSelectDpEvent(per_run, mean, shape)` with its RDP accountant.
A fixed K enjoys no such bound, which is why K is random here.

The per-run event composes the training (DP-SGD) with the release of the selection score: a count
of correct validation predictions (sensitivity 1 under add/remove one example) plus Gaussian noise.
A configuration whose batch size or epochs differ from the reference gets its own noise multiplier,
the smallest one whose RDP curve lies at or below the reference event's at every order the
accountant uses (`dominating_noise`), so the common-bound premise holds run by run.

numpy and dp_accounting only: no TensorFlow, no data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import dp_accounting
import numpy as np
from dp_accounting.dp_event import RepeatAndSelectDpEvent
from dp_accounting.rdp import rdp_privacy_accountant

from privacy.accounting import RDP_ORDERS, calibrate_noise, dp_sgd_event, fedavg_event
from privacy.config import DpFedAvgConfig, DpSgdConfig

RunConfig = DpSgdConfig | DpFedAvgConfig  # one run of the search: DP-SGD, or DP-FedAvg

DISTRIBUTIONS = ("poisson", "geometric", "truncated_negative_binomial")


@dataclasses.dataclass(frozen=True)
class RunsDistribution:
    """How many runs K the search makes: drawn once, from a recorded seed, before any data is seen."""

    name: str
    mean: float
    eta: float | None = None  # truncated negative binomial only: its shape, in (0, inf)

    def __post_init__(self) -> None:
        if self.name not in DISTRIBUTIONS:
            raise ValueError(f"num_runs_distribution must be one of {DISTRIBUTIONS}, got {self.name!r}")
        if not (math.isfinite(self.mean) and self.mean > 1):
            raise ValueError(
                f"mean_runs must be > 1 (the Papernot-Steinke bound needs a mean of at least 1 run, and "
                f"a mean of 1 is no search), got {self.mean}"
            )
        if self.name == "truncated_negative_binomial":
            if self.eta is None or not (0 < self.eta < math.inf):
                raise ValueError(
                    f"tnb_eta must be in (0, inf) for the truncated negative binomial, got {self.eta}"
                )

    @property
    def shape(self) -> float:
        """dp_accounting's shape parameter: inf (Poisson), 1 (geometric), eta (truncated neg. binomial)."""
        return {"poisson": math.inf, "geometric": 1.0}.get(self.name, self.eta)

    @property
    def gamma(self) -> float | None:
        """The success probability of the (truncated) negative binomial, from dp_accounting's own map
        from mean to gamma, so that the K we draw is the K the accountant analyses."""
        if self.name == "poisson":
            return None
        return float(rdp_privacy_accountant._gamma_truncated_negative_binomial(self.shape, self.mean))  # noqa: SLF001

    def draw(self, rng: np.random.Generator) -> int:
        """One K. Poisson may give 0 (then nothing is released); the others give K >= 1."""
        if self.name == "poisson":
            return int(rng.poisson(self.mean))
        if self.name == "geometric":
            return int(rng.geometric(self.gamma))
        while True:  # negative binomial conditioned on K >= 1 (P[K=0] = gamma^eta < 1)
            k = int(rng.negative_binomial(self.eta, self.gamma))
            if k >= 1:
                return k

    def report(self) -> dict:
        out = {"distribution": self.name, "mean_runs": self.mean, "shape": self.shape}
        if self.name == "truncated_negative_binomial":
            out["eta"] = self.eta
        if self.gamma is not None:
            out["gamma"] = self.gamma
        return out


def score_event(score_noise: float) -> dp_accounting.DpEvent:
    """The release of one run's score: a count with sensitivity 1 plus N(0, score_noise^2)."""
    if not score_noise > 0:
        raise ValueError(f"score_noise must be > 0, got {score_noise}")
    return dp_accounting.GaussianDpEvent(score_noise)


def training_event(run: RunConfig) -> dp_accounting.DpEvent:
    """DP-SGD (add/remove one example) or DP-FedAvg with fixed clipping and Poisson client sampling
    (add/remove one user): the add/remove events the RDP accountant composes with the score."""
    if isinstance(run, DpSgdConfig):
        return dp_sgd_event(run)
    if run.aggregator != "fixed" or run.client_sampling != "poisson":
        raise ValueError(
            "the federated search accounts DP-FedAvg with fixed clipping and Poisson client sampling"
        )
    return fedavg_event(run)


def per_run_event(run: RunConfig, score_noise: float) -> dp_accounting.DpEvent:
    """One run of the search: its training, then the release of its score."""
    return dp_accounting.ComposedDpEvent([training_event(run), score_event(score_noise)])


def search_event(per_run: dp_accounting.DpEvent, runs: RunsDistribution) -> RepeatAndSelectDpEvent:
    return RepeatAndSelectDpEvent(per_run, runs.mean, runs.shape)


def rdp_curve(event: dp_accounting.DpEvent) -> np.ndarray:
    """The event's RDP at every order of `privacy.accounting.RDP_ORDERS` (add/remove adjacency)."""
    accountant = dp_accounting.rdp.RdpAccountant(RDP_ORDERS)
    accountant.compose(event)
    return accountant.rdp


def search_epsilon(per_run: dp_accounting.DpEvent, runs: RunsDistribution, delta: float) -> float:
    """Epsilon at `delta` of the whole search (RDP accountant; the only one that supports it)."""
    accountant = dp_accounting.rdp.RdpAccountant(RDP_ORDERS)
    accountant.compose(search_event(per_run, runs))
    return float(accountant.get_epsilon(delta))


def calibrate_reference(
    reference: RunConfig, score_noise: float, runs: RunsDistribution, target_epsilon: float
) -> RunConfig:
    """The reference configuration with the smallest noise whose *search* epsilon meets the target."""
    try:
        z = calibrate_noise(
            lambda z: search_epsilon(per_run_event(reference.replace(noise_multiplier=z), score_noise), runs,
                                     reference.delta),
            target_epsilon,
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(
            f"target epsilon {target_epsilon} for the whole search is unreachable: {e}; "
            "raise --target_epsilon, lower --mean_runs or the epochs (rounds), or raise --score_noise"
        ) from None
    return reference.replace(noise_multiplier=z)


def dominating_noise(candidate: RunConfig, score_noise: float, reference_rdp: np.ndarray) -> RunConfig:
    """`candidate` with the smallest noise multiplier whose per-run RDP is at most `reference_rdp` at
    every order the accountant uses (the common RDP bound that Papernot-Steinke need)."""

    def dominated(z: float) -> bool:  # elementwise, so orders where both are infinite compare fine
        return dominates(
            rdp_curve(per_run_event(candidate.replace(noise_multiplier=z), score_noise)), reference_rdp
        )

    z = _smallest(dominated)
    return candidate.replace(noise_multiplier=z)


def dominates(candidate_rdp: np.ndarray, reference_rdp: np.ndarray) -> bool:
    return bool(np.all(candidate_rdp <= reference_rdp))


def _smallest(ok: Callable[[float], bool], tol: float = 1e-3) -> float:
    """Smallest z (to `tol`, returned from the safe side) with ok(z), for ok monotone in z."""
    lo, hi = 0.0, 1.0
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > 1e5:
            raise ValueError("no noise multiplier up to 1e5 makes this configuration dominated")
    while hi - lo > tol * max(1.0, hi):
        mid = (lo + hi) / 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
