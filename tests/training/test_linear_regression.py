"""The seed's linear regression done right: DP-SGD recovers slope 3 at epsilon 1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privacy.config import DpSgdConfig
from training import linear_regression as lr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dp_sgd_slope_within_0_1_at_epsilon_1(seed):
    results = lr.run_example(lr.ExampleConfig(num_examples=10_000, epsilons=(1.0,), delta=1e-5), seed=seed)
    dp, nonprivate, seed_loop = results
    assert dp.target_epsilon == 1.0 and dp.epsilon <= 1.0 + 1e-9
    assert dp.noise_multiplier > 1.0  # a real amount of noise, calibrated by the accountant
    assert dp.slope_error < 0.1, dp
    assert abs(dp.intercept) < 0.1
    assert "example level" in dp.guarantee and "Poisson" in dp.guarantee
    assert math.isinf(nonprivate.epsilon) and nonprivate.slope_error < 0.1
    assert seed_loop.guarantee == lr.SEED_LOOP_GUARANTEE


def test_dp_sgd_noise_really_hurts_when_the_budget_is_tiny():
    # Same code, a tiny batch and epsilon: the noise z*C/(qN) dominates and the slope is off.
    # This guards against a DP-SGD that silently adds no noise.
    x = np.random.default_rng(0).uniform(-1, 1, 2000)
    y = 3 * x
    config = DpSgdConfig(num_examples=2000, batch_size=10, epochs=1, noise_multiplier=50.0, l2_norm_clip=1.0)
    errors = [abs(lr.dp_sgd_fit(x, y, config, 1.0, seed=s)[0] - 3) for s in range(5)]
    assert np.median(errors) > 0.5


def test_clipping_bounds_one_records_influence_but_the_seed_loop_does_not():
    # Neighbouring datasets: the same data plus one outlier record. Without clipping the
    # outlier moves the full-batch gradient by an amount that grows with its label; with
    # clipping the summed gradient moves by at most C, whatever the outlier is.
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 100)
    y = 3 * x
    for outlier_y in (1e2, 1e4, 1e6):
        g = lr._per_example_gradients(np.append(x, 1.0), np.append(y, outlier_y), 0.0, 0.0)
        unclipped_shift = np.linalg.norm(g[-1])
        clipped = g * np.minimum(1.0, 1.0 / np.linalg.norm(g, axis=1, keepdims=True))
        assert np.linalg.norm(clipped[-1]) <= 1.0 + 1e-12
        assert unclipped_shift > outlier_y  # unbounded sensitivity


def test_config_errors():
    with pytest.raises(ValueError, match="epsilons"):
        lr.ExampleConfig(epsilons=(0.0,))
    x = np.zeros(10)
    with pytest.raises(ValueError, match="num_examples"):
        lr.dp_sgd_fit(
            x, x, DpSgdConfig(num_examples=20, batch_size=5, epochs=1, noise_multiplier=1.0), 1.0, 0
        )
