"""Models an engine must refuse rather than mis-clip: trainable BatchNormalization (every engine), layers
called more than once (ghost and fast miss the cross terms of their norms), and layers random in
training (fast computes norms and sums in two passes, with different randomness)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from privacy.clipping import ENGINES, engines, make_clipped_sum_fn, per_example_loss, resolve_engine

L = tf.keras.layers
LOSS = per_example_loss("classification")
ALL_ENGINES = ["reference", "fast", "ghost", "vectorized", "auto"]


def _global_norm(grads) -> float:
    return float(np.sqrt(sum(float(tf.reduce_sum(tf.square(g))) for g in grads)))


class CustomBatchNorm(L.BatchNormalization):
    """A subclass is as unsafe as the class itself."""


def _bn_sequential() -> tf.keras.Model:
    return tf.keras.Sequential([L.InputLayer((8,)), L.Dense(4), L.BatchNormalization(), L.Dense(2)])


def _bn_subclass_in_nested_model() -> tf.keras.Model:
    inner = tf.keras.Sequential([L.InputLayer((4,)), L.Dense(4), CustomBatchNorm(center=False, scale=False)])
    inp = tf.keras.Input((8,))
    return tf.keras.Model(inp, L.Dense(2)(inner(L.Dense(4)(inp))))


def _bn_without_weights() -> tf.keras.Model:
    # no gamma or beta, yet its moving statistics still move in training: refused as well
    return tf.keras.Sequential(
        [L.InputLayer((8,)), L.Dense(4), L.BatchNormalization(center=False, scale=False)]
    )


@pytest.mark.parametrize("build", [_bn_sequential, _bn_subclass_in_nested_model, _bn_without_weights])
@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_trainable_batch_normalization_is_refused_on_every_engine(build, engine):
    with pytest.raises(ValueError, match="BatchNormalization.*GroupNormalization") as error:
        resolve_engine(engine, build())
    assert "without noise" in str(error.value) and "trainable=False" in str(error.value)


def test_frozen_batch_normalization_runs_with_fixed_statistics():
    """The refusal's advice holds: frozen, it runs in inference mode, so DP steps leave its statistics."""
    tf.keras.utils.set_random_seed(0)
    model = _bn_sequential()
    bn = model.layers[1]
    bn.trainable = False
    assert resolve_engine("auto", model) == "ghost"
    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, (6, 8)), tf.float32)
    y = tf.constant([0, 1, 0, 1, 1, 0])
    before = [w.numpy() for w in bn.weights]
    ref = tf.function(make_clipped_sum_fn("reference", model, LOSS, 0.1))(x, y)
    for engine in ("ghost", "vectorized"):
        got = tf.function(make_clipped_sum_fn(engine, model, LOSS, 0.1))(x, y)
        for a, b in zip(ref, got):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    for w, b in zip(bn.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def _shared_dense() -> tuple[tf.keras.Model, np.ndarray]:
    """One input split in two halves, one Dense layer applied to both."""
    inp = tf.keras.Input((12,))
    shared = L.Dense(5, activation="tanh", name="shared_dense")
    h = L.Concatenate()([shared(inp[:, :6]), shared(inp[:, 6:])])
    x = np.random.default_rng(0).normal(size=(10, 12))
    return tf.keras.Model(inp, L.Dense(3)(h)), x


def _shared_embedding_and_dense() -> tuple[tf.keras.Model, np.ndarray]:
    inp = tf.keras.Input((8,), dtype=tf.int32)
    embed = L.Embedding(12, 6, name="shared_embedding")
    shared = L.Dense(5, activation="tanh", name="shared_dense")
    branches = [shared(L.GlobalAveragePooling1D()(embed(part))) for part in (inp[:, :4], inp[:, 4:])]
    ids = np.random.default_rng(1).integers(0, 12, (10, 8))
    ids[:, 5] = ids[:, 1]  # the same id in both halves: the two calls' gradients meet in one row
    return tf.keras.Model(inp, L.Dense(3)(L.Concatenate()(branches))), ids


def _shared_nested_model() -> tuple[tf.keras.Model, np.ndarray]:
    """A sub-model called twice: its Dense layer runs twice, though it has one node in its own graph."""
    tower = tf.keras.Sequential([L.InputLayer((6,)), L.Dense(5, activation="tanh", name="shared_dense")])
    inp = tf.keras.Input((12,))
    h = L.Concatenate()([tower(inp[:, :6]), tower(inp[:, 6:])])
    x = np.random.default_rng(2).normal(size=(10, 12))
    return tf.keras.Model(inp, L.Dense(3)(h)), x


SHARED = {
    "dense": _shared_dense,
    "embedding_and_dense": _shared_embedding_and_dense,
    "nested_model": _shared_nested_model,
}


def _shared_model_and_batch(name: str):
    tf.keras.utils.set_random_seed(5)
    model, x = SHARED[name]()
    x = tf.constant(x, dtype=model.inputs[0].dtype)
    return model, x, tf.constant(np.random.default_rng(3).integers(0, 3, len(x)).astype(np.int32))


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_layers_are_refused_by_ghost_and_fast(name):
    model, x, y = _shared_model_and_batch(name)
    assert resolve_engine("auto", model) == "vectorized"
    shared = "'shared_dense' is called 2 times.*--engine=auto"
    with pytest.raises(ValueError, match=shared):
        resolve_engine("ghost", model)
    # fast refuses any nested model before it looks at calls (its check does not recurse)
    with pytest.raises(ValueError, match="engine 'fast'.*Sequential" if name == "nested_model" else shared):
        resolve_engine("fast", model)
    # and ghost built directly, past the check, refuses when traced rather than overwrite the first call
    with pytest.raises(ValueError, match="engine 'ghost' cannot clip shared_"):
        tf.function(engines.ghost(model, LOSS, 0.05))(x, y)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_auto_clips_shared_layers_like_the_reference_engine(name):
    model, x, y = _shared_model_and_batch(name)
    clip = 0.05
    ref = tf.function(make_clipped_sum_fn("reference", model, LOSS, clip))(x, y)
    got = tf.function(make_clipped_sum_fn("auto", model, LOSS, clip))(x, y)
    for var, a, b in zip(model.trainable_variables, ref, got):
        np.testing.assert_allclose(
            tf.convert_to_tensor(b), tf.convert_to_tensor(a), rtol=1e-4, atol=1e-6, err_msg=var.name
        )
    # clipping is active: the unclipped sum is larger
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(LOSS(y, model(x, training=True)))
    assert _global_norm(tape.gradient(loss, model.trainable_variables)) > 2 * _global_norm(ref)


def _dropout_model(*middle: L.Layer) -> tf.keras.Model:
    return tf.keras.Sequential([L.InputLayer((10,)), L.Dense(16, activation="tanh"), *middle, L.Dense(3)])


RANDOM_LAYERS = {
    "dropout": lambda: [L.Dropout(0.5)],
    "spatial_dropout": lambda: [L.Reshape((4, 4)), L.SpatialDropout1D(0.5), L.Flatten()],
    "alpha_dropout": lambda: [L.AlphaDropout(0.5)],
    "gaussian_dropout": lambda: [L.GaussianDropout(0.5)],
    "gaussian_noise": lambda: [L.GaussianNoise(1.0)],
    "dropout_in_nested_model": lambda: [tf.keras.Sequential([L.InputLayer((16,)), L.Dropout(0.5)])],
}


@pytest.mark.parametrize("name", sorted(RANDOM_LAYERS))
def test_fast_refuses_layers_random_in_training(name, monkeypatch):
    model = _dropout_model(*RANDOM_LAYERS[name]())
    with pytest.raises(ValueError, match="engine 'fast'.*training.*--engine=auto"):
        resolve_engine("fast", model)
    assert resolve_engine("auto", model) == "ghost"
    # and were ghost unable to run it, auto would skip fast too (it picks fast for a model without one)
    no_ghost = dataclasses.replace(ENGINES["ghost"], unsupported=lambda model: "no")
    monkeypatch.setitem(ENGINES, "ghost", no_ghost)
    assert resolve_engine("auto", model) == "vectorized"
    assert resolve_engine("auto", _dropout_model(L.Activation("tanh"))) == "fast"


def _one_example_clipped_norms(build, model, clip: float, count: int) -> list[float]:
    fn = tf.function(build(model, LOSS, clip))
    rng = np.random.default_rng(7)
    return [
        _global_norm(fn(tf.constant(rng.normal(size=(1, 10)), tf.float32), tf.constant([i % 3])))
        for i in range(count)
    ]


def test_ghost_bounds_each_example_under_dropout():
    """Ghost's norms and sums come from one forward pass, hence one dropout mask: a clipped example has
    norm C exactly (its raw norm is far above a tiny C)."""
    tf.keras.utils.set_random_seed(6)
    clip = 1e-3
    norms = _one_example_clipped_norms(engines.ghost, _dropout_model(L.Dropout(0.5)), clip, 8)
    assert max(norms) <= clip * (1 + 1e-5)
    np.testing.assert_allclose(norms, clip, rtol=1e-4)


def test_fast_would_break_the_bound_under_dropout():
    """Why `fast` is refused: called directly, its clipped sums under dropout exceed C (its norm pass runs
    without dropout, its sum pass with it)."""
    tf.keras.utils.set_random_seed(6)
    clip = 1e-3
    norms = _one_example_clipped_norms(engines.fast, _dropout_model(L.Dropout(0.5)), clip, 8)
    assert max(norms) > clip * 1.01
