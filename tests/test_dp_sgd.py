"""DP-SGD engines: clipping bound, noise-0 equivalence across engines, calibrated noise variance."""

import numpy as np
import pytest
import tensorflow as tf

from data.datasets import load_digits
from models.builders import build_model
from privacy import dp_sgd

CLIP = 0.5


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _sums(engine, model, x, y, task="classification", clip=CLIP):
    fn = tf.function(dp_sgd.make_clipped_sum_fn(engine, model, task, clip))
    return [g.numpy() for g in fn(tf.constant(x), tf.constant(y))]


def _global_norm(grads):
    return float(np.sqrt(sum(np.sum(g**2) for g in grads)))


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_engines_agree_at_noise_zero(digits, model_name):
    model = build_model(model_name, digits.input_shape, 10)
    x, y = digits.x_train[:48], digits.y_train[:48]
    engines = ["reference", "vectorized"] + (["fast", "ghost"] if model_name == "mlp" else [])
    ref = _sums("reference", model, x, y)
    for engine in engines[1:]:
        other = _sums(engine, model, x, y)
        for a, b in zip(ref, other):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # and clipping is active: the clipped sum differs from the unclipped sum
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(dp_sgd.per_example_loss("classification")(y, model(x)))
    raw = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    assert _global_norm(raw) > _global_norm(ref) * 1.5


@pytest.mark.parametrize("engine", ["reference", "fast", "ghost", "vectorized"])
def test_each_clipped_example_norm_at_most_c(digits, engine):
    model = build_model("mlp", digits.input_shape, 10)
    loss_fn = dp_sgd.per_example_loss("classification")
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


def test_noise_has_calibrated_variance():
    z, c, b = 1.3, 0.7, 64.0
    gen = tf.random.Generator.from_seed(0)
    zeros = [tf.zeros([200, 100]), tf.zeros([300])]
    out = dp_sgd.noisy_mean_gradient(zeros, z, c, b, gen)
    sample = np.concatenate([o.numpy().ravel() for o in out])
    expected_std = z * c / b
    n = sample.size
    assert abs(sample.mean()) < 5 * expected_std / np.sqrt(n)
    # sample variance of 20,300 normals: relative sd ~ sqrt(2/n) ~ 1%
    assert sample.std() == pytest.approx(expected_std, rel=0.05)


def test_fast_engine_refuses_unregistered_layers(digits):
    model = build_model("cnn", digits.input_shape, 10)
    assert dp_sgd.resolve_engine("auto", model) == "vectorized"
    with pytest.raises(ValueError, match="Conv2D"):
        dp_sgd.resolve_engine("fast", model)
    with pytest.raises(ValueError, match="Dense"):
        dp_sgd.resolve_engine("ghost", model)
    assert dp_sgd.resolve_engine("auto", build_model("mlp", digits.input_shape, 10)) == "ghost"
