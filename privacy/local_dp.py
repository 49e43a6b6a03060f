"""Data-level (local) DP: perturb each training record before any training sees it.

This is the first of the seed's three places for noise. Every training record is
randomized on its own, as if its owner did it before handing it over:

* labels: k-ary randomized response, epsilon_label-DP per record;
* features: the record's feature vector is clipped (L1 for Laplace, L2 for Gaussian) to
  norm `feature_clip`, then noised. Neighbouring inputs are two feature vectors of one
  record (replace-one), both inside the clip ball, so the sensitivity is 2 * clip and the
  noise is Laplace(2C / epsilon) per coordinate or Gaussian with the analytic
  (Balle & Wang) sigma for (epsilon, delta) at L2 sensitivity 2C.

The two guarantees compose per record: a record whose label and features are both
perturbed is (epsilon_label + epsilon_feature, delta)-local-DP. A client holding m records
is protected at m times that (group privacy). Local DP is a separate guarantee from the
DP-SGD / DP-FedAvg epsilon of training: training on the perturbed data is
post-processing, so the local epsilon holds whatever training does afterwards, and the
training epsilon (if any) is a second, independent statement about the same records.

The test set is never perturbed: it measures the model, it is not released by training.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from privacy import mechanisms

FEATURE_MECHANISMS = ("laplace", "gaussian")


@dataclasses.dataclass(frozen=True)
class LocalDpConfig:
    """Per-record local DP. None means "leave that part of the record untouched"."""

    label_epsilon: float | None = None
    feature_epsilon: float | None = None
    feature_clip: float | None = None
    feature_mechanism: str = "laplace"
    feature_delta: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("label_epsilon", "feature_epsilon", "feature_clip"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"local DP {name} must be a finite number > 0 (or unset), got {value!r}")
        if self.feature_mechanism not in FEATURE_MECHANISMS:
            raise ValueError(
                f"local DP feature_mechanism must be one of {FEATURE_MECHANISMS}, "
                f"got {self.feature_mechanism!r}"
            )
        if self.feature_epsilon is not None and self.feature_clip is None:
            raise ValueError(
                "local DP on features needs a clip norm (--local_dp_feature_clip): without it the "
                "sensitivity of a feature vector is unbounded and no noise scale gives a guarantee"
            )
        if self.feature_clip is not None and self.feature_epsilon is None:
            raise ValueError("local_dp_feature_clip was set without local_dp_feature_epsilon")
        if not (0 < self.feature_delta < 1):
            raise ValueError(f"local DP feature_delta must be in (0, 1), got {self.feature_delta!r}")

    @property
    def enabled(self) -> bool:
        return self.label_epsilon is not None or self.feature_epsilon is not None

    @property
    def feature_norm(self) -> str:
        """The clipping norm that matches the mechanism's sensitivity (L1 Laplace, L2 Gaussian)."""
        return "l1" if self.feature_mechanism == "laplace" else "l2"

    @property
    def feature_sensitivity(self) -> float | None:
        """2 * clip: two vectors inside a ball of radius C are at most 2C apart."""
        return None if self.feature_clip is None else 2.0 * self.feature_clip

    def feature_noise_scale(self) -> float | None:
        """Laplace scale b, or Gaussian sigma, per coordinate."""
        if self.feature_epsilon is None:
            return None
        if self.feature_mechanism == "laplace":
            return mechanisms.laplace_scale(self.feature_sensitivity, self.feature_epsilon)
        return mechanisms.analytic_gaussian_sigma(
            self.feature_sensitivity, self.feature_epsilon, self.feature_delta
        )

    @property
    def per_record_epsilon(self) -> float:
        return (self.label_epsilon or 0.0) + (self.feature_epsilon or 0.0)

    @property
    def per_record_delta(self) -> float:
        return self.feature_delta if (self.feature_epsilon and self.feature_mechanism == "gaussian") else 0.0


NOTE = (
    "Local (data-level) DP: each training record was randomized on its own before training. "
    "This per-record epsilon is separate from, and does not add to or replace, the training "
    "(DP-SGD / DP-FedAvg) epsilon reported elsewhere in this file; the test set was not perturbed."
)


def local_dp_report(config: LocalDpConfig, num_classes: int | None = None) -> dict:
    """What goes under "local_dp" in privacy.json. Contains no statistic of the raw data."""
    if not config.enabled:
        return {"enabled": False}
    report: dict = {
        "enabled": True,
        "unit": "record (one training example); a client with m records gets m x epsilon",
        "per_record_epsilon": config.per_record_epsilon,
        "per_record_delta": config.per_record_delta,
        "composition": "basic: label epsilon + feature epsilon for the same record",
        "note": NOTE,
    }
    if config.label_epsilon is not None:
        k = num_classes
        report["labels"] = {
            "epsilon": config.label_epsilon,
            "mechanism": "k-ary randomized response",
            "num_classes": k,
            "keep_probability": (
                mechanisms.randomized_response_keep_probability(config.label_epsilon, k) if k else None
            ),
            "adjacency": "replace one record's label",
        }
    if config.feature_epsilon is not None:
        report["features"] = {
            "epsilon": config.feature_epsilon,
            "delta": config.per_record_delta,
            "mechanism": config.feature_mechanism
            + (
                " (analytic calibration, Balle & Wang 2018)" if config.feature_mechanism == "gaussian" else ""
            ),
            "clip": config.feature_clip,
            "clip_norm": config.feature_norm,
            "sensitivity": config.feature_sensitivity,
            "sensitivity_note": f"2 x clip in {config.feature_norm.upper()} norm under replace-one "
            "of a record's feature vector",
            "noise_scale_per_coordinate": config.feature_noise_scale(),
            "noise_scale_kind": "Laplace b" if config.feature_mechanism == "laplace" else "Gaussian sigma",
        }
    return report


def apply_local_dp(
    x_train: np.ndarray, y_train: np.ndarray, num_classes: int, config: LocalDpConfig, seed: int | None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Perturbs each training record; returns (features, labels, report for privacy.json).

    `num_classes` 0 means regression (labels cannot be randomized then). `seed` None draws the noise
    from OS entropy. The inputs are not modified.
    """
    report = local_dp_report(config, num_classes)
    if not config.enabled:
        return x_train, y_train, report
    if config.label_epsilon is not None and num_classes < 2:
        raise ValueError(
            "local DP on labels uses randomized response over classes, but this dataset is a "
            "regression task; unset --local_dp_label_epsilon"
        )
    rng = np.random.default_rng(None if seed is None else [seed, 0x10CA1D9])
    if config.label_epsilon is not None:
        y_train = mechanisms.randomized_response(y_train, num_classes, config.label_epsilon, rng)
    if config.feature_epsilon is not None:
        clip = mechanisms.clip_l1 if config.feature_norm == "l1" else mechanisms.clip_l2
        clipped = clip(x_train, config.feature_clip)
        scale = config.feature_noise_scale()
        if config.feature_mechanism == "laplace":
            noise = rng.laplace(0.0, scale, size=clipped.shape)
        else:
            noise = rng.normal(0.0, scale, size=clipped.shape)
        x_train = (clipped + noise).astype(x_train.dtype)
    return x_train, y_train, report
