"""The seed's linear regression (y = 3x + noise), done right, beside the seed's own loop.

The seed trained a 2-parameter linear model by adding Gaussian noise to full-batch
gradients, with no clipping and no accounting. That gives no privacy guarantee at all:

* without clipping, one example's gradient r * (x, 1) grows with its residual r, so the
  sensitivity of the gradient to one record is unbounded and no fixed noise scale can mask it;
* without accounting, nothing says how the per-step leaks add up over the steps.

`dp_sgd_fit` is the correct version: Poisson-sampled batches (privacy.sampling), each
per-example gradient clipped to L2 norm C, the clipped sum noised with N(0, (z C)^2 I) and
divided by the expected batch size q N, and z calibrated from the same DpSgdConfig by the
accountant, so the epsilon printed is the epsilon of the run. The model is small enough to
do exactly in numpy: no framework, no approximation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from privacy.accounting import calibrate_dp_sgd, dp_sgd_guarantee
from privacy.config import DpSgdConfig
from privacy.report import privacy_report
from privacy.sampling import poisson_batches

TRUE_SLOPE, TRUE_INTERCEPT = 3.0, 0.0


@dataclasses.dataclass(frozen=True)
class FitResult:
    method: str
    target_epsilon: float | None
    epsilon: float  # inf: no guarantee
    noise_multiplier: float | None
    slope: float
    intercept: float
    test_mse: float
    guarantee: str

    @property
    def slope_error(self) -> float:
        return abs(self.slope - TRUE_SLOPE)


def _per_example_gradients(x: np.ndarray, y: np.ndarray, w: float, b: float) -> np.ndarray:
    """Gradients of 0.5 (w x + b - y)^2 with respect to (w, b), one row per example."""
    r = w * x + b - y
    return np.stack([r * x, r], axis=1)


class _TailAverage:
    """Mean of the iterates over the second half of training (Polyak-Ruppert averaging).

    It removes most of the step-to-step jitter of the last iterate; being a function of the
    released iterates only, it is post-processing and costs no privacy.
    """

    def __init__(self, steps: int) -> None:
        self.start, self.step, self.total, self.count = steps // 2, 0, np.zeros(2), 0

    def add(self, params: np.ndarray) -> None:
        if self.step >= self.start:
            self.total += params
            self.count += 1
        self.step += 1

    def result(self) -> tuple[float, float]:
        w, b = self.total / max(self.count, 1)
        return float(w), float(b)


def dp_sgd_fit(
    x: np.ndarray, y: np.ndarray, config: DpSgdConfig, learning_rate: float, seed: int
) -> tuple[float, float]:
    """DP-SGD on (w, b): Poisson batches, per-example L2 clipping, Gaussian noise on the sum."""
    if len(x) != config.num_examples:
        raise ValueError(f"config.num_examples={config.num_examples} but the data has {len(x)} examples")
    if config.sampling != "poisson":
        raise ValueError("this example accounts for Poisson sampling only")
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    rng = np.random.default_rng(seed)
    params = np.zeros(2)
    c, z = config.l2_norm_clip, config.noise_multiplier
    expected_batch = config.sampling_rate * config.num_examples
    average = _TailAverage(config.steps)
    for idx in poisson_batches(config.num_examples, config.sampling_rate, config.steps, rng):
        g = _per_example_gradients(x[idx], y[idx], params[0], params[1])
        norms = np.linalg.norm(g, axis=1, keepdims=True)
        g = g * np.minimum(1.0, c / np.maximum(norms, 1e-12))
        noisy_sum = g.sum(axis=0) + rng.normal(0.0, z * c, size=2)
        params -= learning_rate * noisy_sum / expected_batch
        average.add(params)
    return average.result()


def sgd_fit(
    x: np.ndarray, y: np.ndarray, batch_size: int, steps: int, learning_rate: float, seed: int
) -> tuple[float, float]:
    """Plain (non-private) minibatch SGD, same loss and schedule: the epsilon = inf baseline."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    rng = np.random.default_rng(seed)
    params = np.zeros(2)
    average = _TailAverage(steps)
    for idx in poisson_batches(len(x), batch_size / len(x), steps, rng):
        if len(idx):
            params -= learning_rate * _per_example_gradients(x[idx], y[idx], *params).mean(axis=0)
        average.add(params)
    return average.result()


def seed_noisy_gradient_fit(
    x: np.ndarray, y: np.ndarray, steps: int, learning_rate: float, noise_std: float, seed: int
) -> tuple[float, float]:
    """The seed's loop: full-batch gradient + N(0, noise_std^2), no clipping, no accounting."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    rng = np.random.default_rng(seed)
    params = np.zeros(2)
    average = _TailAverage(steps)
    for _ in range(steps):
        grad = _per_example_gradients(x, y, *params).mean(axis=0)
        params -= learning_rate * (grad + rng.normal(0.0, noise_std, size=2))
        average.add(params)
    return average.result()


SEED_LOOP_GUARANTEE = (
    "none: gradients are not clipped, so one record's gradient r*(x, 1) is unbounded (an outlier "
    "with a huge residual moves the update arbitrarily far, far beyond any fixed noise), and no "
    "accountant composes the steps; the noise only hides typical records, which is not DP"
)


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """Everything the example runs; the DP-SGD hyperparameters are shared by every epsilon."""

    num_examples: int = 10_000
    epsilons: tuple[float, ...] = (0.5, 1.0, 3.0, 8.0)
    delta: float = 1e-5
    batch_size: int = 800
    epochs: int = 10
    l2_norm_clip: float = 1.0
    learning_rate: float = 1.0
    seed_loop_noise_std: float = 0.1
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if not self.epsilons or any(not (e > 0 and math.isfinite(e)) for e in self.epsilons):
            raise ValueError(f"epsilons must be finite numbers > 0, got {self.epsilons}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.seed_loop_noise_std < 0:
            raise ValueError("seed_loop_noise_std must be >= 0")


def _test_mse(x: np.ndarray, y: np.ndarray, w: float, b: float) -> float:
    return float(np.mean((w * np.ravel(x) + b - np.ravel(y)) ** 2))


def run_example(config: ExampleConfig, seed: int = 0) -> list[FitResult]:
    """DP-SGD at each target epsilon, non-private SGD, and the seed's loop, on one dataset."""
    from data.datasets import synthetic_regression

    data = synthetic_regression(num_examples=config.num_examples, seed=seed)
    x, y = data.x_train[:, 0], data.y_train
    base = DpSgdConfig(
        num_examples=data.num_train,
        batch_size=config.batch_size,
        epochs=config.epochs,
        noise_multiplier=1.0,
        l2_norm_clip=config.l2_norm_clip,
        delta=config.delta,
        accountant=config.accountant,
        sampling="poisson",
    )
    results = []
    for target in config.epsilons:
        dp = calibrate_dp_sgd(base, target)
        report = privacy_report(dp_sgd_guarantee(dp))
        w, b = dp_sgd_fit(x, y, dp, config.learning_rate, seed=seed + 1)
        results.append(
            FitResult(
                "DP-SGD (clip + calibrated noise + accountant)",
                target,
                report["epsilon"],
                dp.noise_multiplier,
                w,
                b,
                _test_mse(data.x_test, data.y_test, w, b),
                report["statement"],
            )
        )
    w, b = sgd_fit(x, y, config.batch_size, base.steps, config.learning_rate, seed=seed + 1)
    results.append(
        FitResult(
            "SGD, non-private", None, math.inf, 0.0, w, b, _test_mse(data.x_test, data.y_test, w, b), "none"
        )
    )
    w, b = seed_noisy_gradient_fit(
        x, y, base.steps, config.learning_rate, config.seed_loop_noise_std, seed=seed + 1
    )
    results.append(
        FitResult(
            f"seed's loop (gradient + N(0, {config.seed_loop_noise_std}^2), no clipping)",
            None,
            math.inf,
            None,
            w,
            b,
            _test_mse(data.x_test, data.y_test, w, b),
            SEED_LOOP_GUARANTEE,
        )
    )
    return results


def format_table(results: list[FitResult]) -> str:
    lines = [
        f"{'method':<52} {'target eps':>10} {'epsilon':>14} {'z':>7} {'slope':>8} {'intercept':>9} "
        f"{'|slope-3|':>9} {'test MSE':>8}"
    ]
    for r in results:
        eps = (
            "no guarantee"
            if r.guarantee == SEED_LOOP_GUARANTEE
            else ("inf" if math.isinf(r.epsilon) else f"{r.epsilon:.3f}")
        )
        target = "-" if r.target_epsilon is None else f"{r.target_epsilon:g}"
        z = "-" if r.noise_multiplier is None else f"{r.noise_multiplier:.3f}"
        lines.append(
            f"{r.method:<52} {target:>10} {eps:>14} {z:>7} {r.slope:>8.4f} {r.intercept:>9.4f} "
            f"{r.slope_error:>9.4f} {r.test_mse:>8.4f}"
        )
    return "\n".join(lines)
