"""Clipping engines: the clipping bound, and equal clipped sums across engines at noise 0."""

import numpy as np
import pytest
import tensorflow as tf

from models.builders import build_model
from privacy.clipping import make_clipped_sum_fn, per_example_loss, resolve_engine

CLIP = 0.5


def _sums(engine, model, x, y, task="classification", clip=CLIP):
    fn = tf.function(make_clipped_sum_fn(engine, model, per_example_loss(task), clip))
    return [g.numpy() for g in fn(tf.constant(x), tf.constant(y))]


def _global_norm(grads):
    return float(np.sqrt(sum(np.sum(g**2) for g in grads)))


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_engines_agree_at_noise_zero(digits, model_name):
    model = build_model(model_name, digits.input_shape, 10)
    x, y = digits.x_train[:48], digits.y_train[:48]
    engines = ["reference", "vectorized", "ghost"] + (["fast"] if model_name == "mlp" else [])
    ref = _sums("reference", model, x, y)
    for engine in engines[1:]:
        other = _sums(engine, model, x, y)
        for a, b in zip(ref, other):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # and clipping is active: the clipped sum differs from the unclipped sum
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(per_example_loss("classification")(y, model(x)))
    raw = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    assert _global_norm(raw) > _global_norm(ref) * 1.5


@pytest.mark.parametrize("engine", ["reference", "fast", "ghost", "vectorized"])
def test_each_clipped_example_norm_at_most_c(digits, engine):
    model = build_model("mlp", digits.input_shape, 10)
    loss_fn = per_example_loss("classification")
    for i in range(6):
        x, y = digits.x_train[i : i + 1], digits.y_train[i : i + 1]
        clipped = _sums(engine, model, x, y)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(y, model(x)))
        raw = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
        raw_norm = _global_norm(raw)
        assert _global_norm(clipped) <= CLIP * (1 + 1e-5)
        expected = min(raw_norm, CLIP)
        assert _global_norm(clipped) == pytest.approx(expected, rel=1e-4)
        # clipping rescales, it does not change the direction
        scale = min(1.0, CLIP / raw_norm)
        for c, r in zip(clipped, raw):
            np.testing.assert_allclose(c, r * scale, rtol=1e-3, atol=1e-6)


def test_regression_engines_agree():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (32, 1)).astype(np.float32)
    y = (3 * x[:, 0] + rng.normal(0, 0.5, 32)).astype(np.float32)
    model = build_model("linear", (1,), 0)
    ref = _sums("reference", model, x, y, task="regression", clip=0.3)
    for engine in ("fast", "ghost", "vectorized"):
        for a, b in zip(ref, _sums(engine, model, x, y, task="regression", clip=0.3)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_auto_picks_ghost_and_fast_refuses_conv(digits):
    model = build_model("cnn", digits.input_shape, 10)
    assert resolve_engine("auto", model) == "ghost"  # Conv2D has a rule in this project's registry
    with pytest.raises(ValueError, match="Conv2D"):
        resolve_engine("fast", model)  # TF-Privacy's registry has none
    assert resolve_engine("auto", build_model("mlp", digits.input_shape, 10)) == "ghost"
