"""The noise a real DP-SGD step adds, observed in the weights it changes: N(0, (zC)^2) / B, once.

With plain SGD at learning rate 1, a step moves the weights by -(clipped sum + noise) / B, so
B * (w_before - w_after) - (clipped sum) is exactly the noise the step added, whatever the engine.
"""

import numpy as np
import pytest
import tensorflow as tf

from models.builders import build_model
from privacy.clipping import ENGINES, make_clipped_sum_fn, per_example_loss
from privacy.config import DpSgdConfig
from tests.noise_checks import assert_independent_noise
from training.train_steps import make_train_steps

Z, CLIP, BATCH = 1.3, 0.5, 64


def _flat(tensors) -> np.ndarray:
    return np.concatenate([np.asarray(t).ravel() for t in tensors])


def _step_noise(engine: str, digits, noise_only: bool) -> np.ndarray:
    model = build_model("mlp", digits.input_shape, 10, seed=1)
    dp = DpSgdConfig(
        num_examples=digits.num_train, batch_size=BATCH, epochs=1, noise_multiplier=Z, l2_norm_clip=CLIP
    )
    step, noise_step = make_train_steps(
        model,
        "classification",
        digits.input_shape,
        tf.int32,
        tf.keras.optimizers.SGD(1.0),
        dp,
        engine,
        seed=3,
    )
    x, y = tf.constant(digits.x_train[:50]), tf.constant(digits.y_train[:50])
    before = _flat(model.trainable_variables)
    if noise_only:
        clipped = np.zeros_like(before)
        noise_step()
    else:
        clipped = _flat(
            tf.function(make_clipped_sum_fn(engine, model, per_example_loss("classification"), CLIP))(x, y)
        )
        step(x, y)
    return BATCH * (before - _flat(model.trainable_variables)) - clipped


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_dp_step_adds_noise_of_stddev_z_c_once(engine, digits):
    noise = _step_noise(engine, digits, noise_only=False)
    # 9,610 weights of the MLP: the sample stddev is within 0.7% of the truth (1 sd); noise added twice
    # would give sqrt(2) z C, none would give ~0.
    assert noise.std() == pytest.approx(Z * CLIP, rel=0.03)
    assert abs(noise.mean()) < 5 * Z * CLIP / np.sqrt(noise.size)


def test_an_empty_poisson_batch_still_adds_the_same_noise(digits):
    noise = _step_noise("ghost", digits, noise_only=True)
    assert noise.std() == pytest.approx(Z * CLIP, rel=0.03)


def test_gradient_canaries_join_the_clipped_sum_and_are_observed_exactly(digits):
    """Noise 0: a sampled canary moves its coordinate by exactly C / B, and the step reports exactly
    that (the other examples' contribution subtracted); with noise, the report is that plus N(0, zC)/B."""
    from privacy.auditing.canaries import GradientCanaries

    for z in (0.0, Z):
        model = build_model("mlp", digits.input_shape, 10, seed=1)
        num_parameters = sum(v.shape.num_elements() for v in model.trainable_variables)
        canaries = GradientCanaries.make(200, num_parameters, CLIP, 0)
        dp = DpSgdConfig(
            num_examples=digits.num_train, batch_size=BATCH, epochs=1, noise_multiplier=z, l2_norm_clip=CLIP
        )
        step, noise_step = make_train_steps(
            model, "classification", digits.input_shape, tf.int32, tf.keras.optimizers.SGD(1.0), dp,
            "vectorized", seed=3, canaries=canaries,
        )  # fmt: skip
        mask = (np.arange(200) % 2).astype(np.float32)
        x, y = tf.constant(digits.x_train[:50]), tf.constant(digits.y_train[:50])
        clipped_sum = make_clipped_sum_fn("vectorized", model, per_example_loss("classification"), CLIP)
        clipped = _flat(tf.function(clipped_sum)(x, y))
        before = _flat(model.trainable_variables)
        seen = np.asarray(step(x, y, tf.constant(mask)))
        moved = BATCH * (before - _flat(model.trainable_variables)) - clipped
        expected = mask * CLIP
        if z == 0:
            np.testing.assert_allclose(BATCH * seen, expected, atol=1e-4)
            np.testing.assert_allclose(moved[canaries.coordinates], expected, atol=1e-4)
            others = np.delete(moved, canaries.coordinates)
            assert np.abs(others).max() < 1e-4  # nothing else moved beyond the clipped sum
            np.testing.assert_allclose(BATCH * np.asarray(noise_step(tf.constant(mask))), expected, atol=1e-4)
        else:
            residual = BATCH * seen - expected
            assert residual.std() == pytest.approx(Z * CLIP, rel=0.15)  # 200 draws: ~5% sd


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_coordinate_of_a_dp_step_gets_its_own_noise(engine, digits):
    """Over repeated DP steps of the real MLP (kernel, bias, kernel, bias), the noise each step adds
    is independent across tensors and coordinates, with stddev z C per coordinate, on every engine."""
    model = build_model("mlp", digits.input_shape, 10, seed=1)
    dp = DpSgdConfig(
        num_examples=digits.num_train, batch_size=BATCH, epochs=1, noise_multiplier=Z, l2_norm_clip=CLIP
    )
    step, _ = make_train_steps(
        model, "classification", digits.input_shape, tf.int32, tf.keras.optimizers.SGD(1.0), dp, engine,
        seed=5,
    )  # fmt: skip
    clipped_sum = tf.function(make_clipped_sum_fn(engine, model, per_example_loss("classification"), CLIP))
    draws = []
    for i in range(12):
        x, y = (
            tf.constant(digits.x_train[i * 20 : i * 20 + 20]),
            tf.constant(digits.y_train[i * 20 : i * 20 + 20]),
        )
        clipped = [np.asarray(t) for t in clipped_sum(x, y)]
        before = [v.numpy() for v in model.trainable_variables]
        step(x, y)
        after = [v.numpy() for v in model.trainable_variables]
        draws.append([BATCH * (b - a) - c for b, a, c in zip(before, after, clipped)])
    assert_independent_noise(draws, Z * CLIP)
