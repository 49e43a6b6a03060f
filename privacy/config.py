"""Frozen DP configs: one object drives the sampler, the noise and the accountant.

A noise multiplier enters a run once, here, and reaches both the training code and the
accountant from this object, so the epsilon we report cannot drift from what was run.
"""

from __future__ import annotations

import dataclasses
import math

ACCOUNTANTS = ("rdp", "pld")
EXAMPLE_SAMPLINGS = ("poisson", "shuffle")
DP_SGD_ENGINES = ("auto", "reference", "fast", "ghost", "vectorized")
CLIENT_SAMPLINGS = ("poisson", "uniform")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def check_delta(delta: float, units: int, unit: str) -> None:
    """delta must be < 1/(number of privacy units): a larger delta allows releasing one unit outright."""
    _check(
        delta < 1.0 / units,
        f"delta={delta:g} must be < 1/N = {1.0 / units:.3g} (N = {units} {unit}s): a delta that large "
        f"allows releasing one {unit}'s data outright; lower --delta",
    )


def _check_preprocessing(noise_multiplier: float, delta_spent: float, delta: float) -> None:
    _check(noise_multiplier >= 0, "preprocessing noise multiplier must be >= 0")
    _check(
        0 <= delta_spent < delta / 2,
        f"the preprocessing's partition-selection delta {delta_spent:g} must be under delta/2 ({delta:g}/2)",
    )


@dataclasses.dataclass(frozen=True)
class DpSgdConfig:
    """Example-level DP-SGD.

    `batch_size` is the *expected* batch size under Poisson sampling (q = batch_size / N)
    and the fixed batch size under shuffling. `epochs` fixes the number of steps.
    """

    num_examples: int
    batch_size: int
    epochs: int
    noise_multiplier: float
    l2_norm_clip: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    sampling: str = "poisson"
    # a table's DP preprocessing statistics (privacy.preprocessing), composed before training:
    # one Gaussian release of noise multiplier z_pre (0: none) and the partition selection's delta
    preprocessing_noise_multiplier: float = 0.0
    preprocessing_delta: float = 0.0

    def __post_init__(self) -> None:
        _check_preprocessing(self.preprocessing_noise_multiplier, self.preprocessing_delta, self.delta)
        _check(self.num_examples > 0, f"num_examples must be > 0, got {self.num_examples}")
        _check(
            0 < self.batch_size <= self.num_examples,
            f"batch_size must be in (0, num_examples={self.num_examples}], got {self.batch_size}",
        )
        _check(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        _check(self.noise_multiplier >= 0, "noise_multiplier must be >= 0")
        _check(self.l2_norm_clip > 0, "l2_norm_clip must be > 0")
        _check(0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}")
        _check(self.accountant in ACCOUNTANTS, f"accountant must be one of {ACCOUNTANTS}")
        _check(self.sampling in EXAMPLE_SAMPLINGS, f"sampling must be one of {EXAMPLE_SAMPLINGS}")
        if self.noise_multiplier > 0:
            check_delta(self.delta, self.num_examples, "example")

    @classmethod
    def from_sampling_rate(cls, num_examples: int, sampling_rate: float, **kw) -> DpSgdConfig:
        _check(0 < sampling_rate <= 1, f"sampling_rate must be in (0, 1], got {sampling_rate}")
        return cls(num_examples=num_examples, batch_size=max(1, round(sampling_rate * num_examples)), **kw)

    @property
    def sampling_rate(self) -> float:
        return self.batch_size / self.num_examples

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_examples / self.batch_size)

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def replace(self, **changes) -> DpSgdConfig:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class DpFedAvgConfig:
    """User-level DP-FedAvg: one record is one client's whole contribution.

    `aggregator` is one of none/fixed/adaptive/tree; `client_sampling` is poisson (each
    client joins a round with probability clients_per_round / num_clients) or uniform
    (exactly clients_per_round clients drawn without replacement).
    """

    num_clients: int
    clients_per_round: int
    rounds: int
    noise_multiplier: float
    clip_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    client_sampling: str = "poisson"
    aggregator: str = "fixed"
    target_unclipped_quantile: float = 0.5
    clipped_count_stddev: float | None = None
    preprocessing_noise_multiplier: float = 0.0  # as in DpSgdConfig, at the user level
    preprocessing_delta: float = 0.0

    def __post_init__(self) -> None:
        _check_preprocessing(self.preprocessing_noise_multiplier, self.preprocessing_delta, self.delta)
        _check(self.num_clients > 0, "num_clients must be > 0")
        _check(
            0 < self.clients_per_round <= self.num_clients,
            f"clients_per_round must be in (0, num_clients={self.num_clients}], got {self.clients_per_round}",
        )
        _check(self.rounds > 0, "rounds must be > 0")
        _check(self.noise_multiplier >= 0, "noise_multiplier must be >= 0")
        _check(self.clip_norm > 0, "clip_norm must be > 0")
        _check(0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}")
        _check(self.accountant in ACCOUNTANTS, f"accountant must be one of {ACCOUNTANTS}")
        _check(self.client_sampling in CLIENT_SAMPLINGS, f"client_sampling must be one of {CLIENT_SAMPLINGS}")
        _check(
            self.aggregator in ("none", "fixed", "adaptive", "tree"),
            f"unknown aggregator {self.aggregator!r}",
        )
        _check(0 < self.target_unclipped_quantile < 1, "target_unclipped_quantile must be in (0, 1)")
        if self.is_private and self.noise_multiplier > 0:
            check_delta(self.delta, self.num_clients, "user")
        _check(
            self.aggregator != "tree" or self.rounds * self.clients_per_round <= self.num_clients,
            "tree aggregation (DP-FTRL) accounting lets each client contribute at most once: "
            f"rounds x clients_per_round = {self.rounds * self.clients_per_round} exceeds "
            f"num_clients = {self.num_clients}; lower --rounds or --clients_per_round",
        )
        _check(
            not (self.accountant == "pld" and self.aggregator == "tree"),
            "tree aggregation is accounted with RDP only (dp_accounting's PLD does not support "
            "its event); use --accountant=rdp",
        )
        _check(
            not (self.accountant == "pld" and self.client_sampling == "uniform"),
            "uniform (fixed-size) client sampling is accounted with RDP only (replace-one "
            "adjacency); use --accountant=rdp or --client_sampling=poisson",
        )

    @property
    def sampling_rate(self) -> float:
        return self.clients_per_round / self.num_clients

    @property
    def is_private(self) -> bool:
        return self.aggregator != "none"

    def replace(self, **changes) -> DpFedAvgConfig:
        return dataclasses.replace(self, **changes)
