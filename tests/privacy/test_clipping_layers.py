"""Per-layer clipping rules: patches are the convolution's, per-example norms are the true ones, the
ghost and explicit forms agree, clipped sums equal the reference engine's, and every clipped
per-example gradient has norm at most C."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from privacy.clipping import engines, make_clipped_sum_fn, per_example_loss, resolve_engine
from privacy.clipping.layers import conv

L = tf.keras.layers
LOSS = per_example_loss("classification")
RNG = np.random.default_rng(0)


def _conv(x: np.ndarray, filters: int, kernel, strides, padding: str, dilation) -> L.Conv2D:
    layer = L.Conv2D(filters, kernel, strides=strides, padding=padding, dilation_rate=dilation)
    layer.build(x.shape)
    return layer


# stride and dilation together are refused by Keras; sizes cover both patch paths (one-hot conv and
# extract_patches) and the offset views
CONV_CASES = [
    (shape, kernel, stride, dilation, padding)
    for shape, kernel, stride, dilation, padding in itertools.product(
        [(9, 7, 2), (13, 13, 16), (10, 10, 20)],
        [(1, 1), (3, 3), (4, 2), (5, 5)],
        [(1, 1), (2, 2), (3, 1)],
        [(1, 1), (2, 2)],
        ["same", "valid"],
    )
    if (stride == (1, 1) or dilation == (1, 1))
    and (padding == "same" or all((k - 1) * d + 1 <= s for k, d, s in zip(kernel, dilation, shape[:2])))
]


@pytest.mark.parametrize("shape, kernel, stride, dilation, padding", CONV_CASES)
def test_patches_and_offset_views_reproduce_the_convolution(shape, kernel, stride, dilation, padding):
    x = RNG.normal(size=(3, *shape)).astype(np.float32)
    layer = _conv(x, 4, kernel, stride, padding, dilation)
    expected = tf.nn.convolution(x, layer.kernel, strides=stride, dilations=dilation, padding=padding.upper())
    flat_kernel = tf.reshape(layer.kernel, [-1, 4])
    a = conv.patches(layer, tf.constant(x))
    np.testing.assert_allclose(tf.reshape(a @ flat_kernel, expected.shape), expected, atol=1e-4)
    views = tf.concat(conv.offset_views(layer, tf.constant(x)), axis=2)
    np.testing.assert_array_equal(views, a)


def _per_example_squared_norms(model, x, y) -> np.ndarray:
    """The truth: each example's gradient, one at a time."""
    out = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(LOSS(y[i : i + 1], model(x[i : i + 1], training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        out.append(sum(float(tf.reduce_sum(tf.convert_to_tensor(g) ** 2)) for g in grads))
    return np.array(out)


def _functional_with_norms():
    inp = tf.keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3)(inp)
    h = L.GroupNormalization(4)(h)
    h = L.Activation("tanh")(h)
    h = L.MaxPooling2D()(h)
    h = L.Flatten()(h)
    h = L.Dense(16)(h)
    h = L.LayerNormalization()(h)
    return tf.keras.Model(inp, L.Dense(5)(h)), RNG.normal(size=(12, 12, 12, 3)), 5


def _sequence_model():
    inp = tf.keras.Input((7,), dtype=tf.int32)
    h = L.Embedding(20, 4)(inp)
    h = L.Dense(6, activation="tanh")(h)  # a Dense layer on [B, 7, 4]
    h = L.LayerNormalization(axis=[1, 2])(h)
    ids = RNG.integers(0, 20, (12, 7))
    ids[:, 3] = ids[:, 1]  # repeated tokens: their gradients add before the norm is taken
    return tf.keras.Model(inp, L.Dense(3)(L.Flatten()(h))), ids, 3


def _cnn(offsets: bool):
    # 16 input channels and 16x16 positions: the offset-view path; else the patch path
    shape = (16, 16, 16) if offsets else (14, 14, 2)
    model = tf.keras.Sequential(
        [L.InputLayer(shape), L.Conv2D(8, 3, padding="same", activation="tanh"), L.Conv2D(4, 3, strides=2),
         L.Flatten(), L.Dense(10)]
    )  # fmt: skip
    return model, RNG.normal(size=(10, *shape)), 10


MODELS = {
    "functional_groupnorm_layernorm": _functional_with_norms,
    "embedding_sequence_dense": _sequence_model,
    "cnn_patches": lambda: _cnn(False),
    "cnn_offsets": lambda: _cnn(True),
}


def _model_and_batch(name: str, seed: int):
    tf.keras.utils.set_random_seed(seed)
    model, x, classes = MODELS[name]()
    x = tf.constant(x, dtype=model.inputs[0].dtype)
    return model, x, tf.constant(RNG.integers(0, classes, len(x)).astype(np.int32))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_per_example_norms_are_the_true_ones(name):
    model, x, y = _model_and_batch(name, 1)
    assert resolve_engine("auto", model) == "ghost"
    norms = tf.function(engines.ghost_squared_norms(model, LOSS))(x, y).numpy()
    np.testing.assert_allclose(norms, _per_example_squared_norms(model, x, y), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_clipped_sums_equal_the_reference_engine_at_noise_zero(name):
    model, x, y = _model_and_batch(name, 2)
    clip = 0.3
    ref = tf.function(make_clipped_sum_fn("reference", model, LOSS, clip))(x, y)
    got = tf.function(make_clipped_sum_fn("ghost", model, LOSS, clip))(x, y)
    for a, b in zip(ref, got):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ghost", [False, True], ids=["explicit", "ghost"])
@pytest.mark.parametrize("offsets", [False, True], ids=["patches", "offsets"])
def test_the_four_conv_forms_agree(monkeypatch, ghost, offsets):
    """Forced into each (norm form, unfolding) pair, the Conv2D rule gives the same norms and sums."""
    tf.keras.utils.set_random_seed(3)
    model, x, _ = _cnn(offsets)
    x, y = tf.constant(x, tf.float32), tf.constant(RNG.integers(0, 10, len(x)).astype(np.int32))
    truth = _per_example_squared_norms(model, x, y)
    reference = tf.function(make_clipped_sum_fn("reference", model, LOSS, 0.2))(x, y)
    monkeypatch.setattr(conv, "use_ghost_norm", lambda *shape: ghost)
    record_init = conv.Conv2DRecord.__init__

    def init(self, *args):
        record_init(self, *args)
        assert self.by_offset == offsets or self.layer.kernel.shape[2] < conv.OFFSETS_MIN_CHANNELS

    monkeypatch.setattr(conv.Conv2DRecord, "__init__", init)
    norms = tf.function(engines.ghost_squared_norms(model, LOSS))(x, y).numpy()
    np.testing.assert_allclose(norms, truth, rtol=1e-5)
    for a, b in zip(reference, tf.function(make_clipped_sum_fn("ghost", model, LOSS, 0.2))(x, y)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_every_clipped_conv_example_has_norm_at_most_c():
    tf.keras.utils.set_random_seed(4)
    model, x, _ = _cnn(False)
    fn = tf.function(make_clipped_sum_fn("ghost", model, LOSS, 0.05))
    for i in range(5):
        one = fn(tf.constant(x[i : i + 1], tf.float32), tf.constant([i % 10], tf.int32))
        norm = np.sqrt(sum(float(tf.reduce_sum(g**2)) for g in one))
        assert norm <= 0.05 * (1 + 1e-5)
        assert norm == pytest.approx(
            min(0.05, np.sqrt(_per_example_squared_norms(model, x[i : i + 1], [i % 10])[0])), rel=1e-4
        )


def test_unregistered_layers_fall_back_or_are_refused():
    # (a trainable BatchNormalization is refused by every engine: tests/privacy/test_engine_refusals.py)
    model = tf.keras.Sequential([L.InputLayer((8,)), L.Dense(4), L.PReLU(), L.Dense(2)])
    assert resolve_engine("auto", model) == "vectorized"
    with pytest.raises(ValueError, match="PReLU.*--engine=auto"):
        resolve_engine("ghost", model)
    grouped = tf.keras.Sequential([L.InputLayer((8, 8, 4)), L.Conv2D(4, 3, groups=2)])
    assert resolve_engine("auto", grouped) == "vectorized"
    with pytest.raises(ValueError, match="groups > 1"):
        resolve_engine("ghost", grouped)
