"""Keras builders: right output shapes for each dataset shape, no DP inside, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from models.builders import MODELS, build_model

DIGITS = ((8, 8, 1), 10)
MNIST = ((28, 28, 1), 10)
CIFAR = ((32, 32, 3), 10)
TABULAR = ((20,), 4)
REGRESSION = ((1,), 0)


def _predict(model, input_shape, n=3):
    x = np.random.default_rng(0).random((n, *input_shape), dtype=np.float32)
    return model(x, training=False).numpy()


@pytest.mark.parametrize(
    "name, shape_and_classes",
    [
        ("logistic", DIGITS),
        ("mlp", DIGITS),
        ("cnn", DIGITS),
        ("cnn", MNIST),
        ("cnn", CIFAR),
        ("logistic", TABULAR),
        ("mlp", TABULAR),
        ("linear", REGRESSION),
    ],
)
def test_builds_with_right_output_shape(name, shape_and_classes):
    input_shape, num_classes = shape_and_classes
    model = build_model(name, input_shape, num_classes)
    assert model.name == name and tuple(model.input_shape) == (None, *input_shape)
    out = _predict(model, input_shape)
    assert out.shape == (3, max(num_classes, 1)) and np.all(np.isfinite(out))
    # Logits (or a raw scalar), not probabilities: the loss applies the softmax.
    assert model.layers[-1].get_config()["activation"] == "linear"


@pytest.mark.parametrize("name", MODELS)
def test_no_dp_in_the_model(name):
    input_shape, num_classes = REGRESSION if name == "linear" else DIGITS
    model = build_model(name, input_shape, num_classes)
    assert model.optimizer is None  # uncompiled: the DP optimizer is the training loop's choice
    for layer in model.layers:
        module = type(layer).__module__
        assert module.startswith("keras."), f"{layer.name} comes from {module}"
        assert "Noise" not in type(layer).__name__ and "privacy" not in module
        assert layer.get_config().get("kernel_regularizer") is None


def test_seed_makes_weights_reproducible():
    a, b, c = (build_model("mlp", (8, 8, 1), 10, seed=s) for s in (7, 7, 8))
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_cnn_is_smaller_on_tiny_images():
    # 8x8 digits skip the first pooling layer so the feature map is not pooled away.
    tiny, big = build_model("cnn", (8, 8, 1), 10), build_model("cnn", (28, 28, 1), 10)
    pools = [sum("pool" in layer.name for layer in m.layers) for m in (tiny, big)]
    assert pools == [1, 2]


@pytest.mark.parametrize(
    "name, input_shape, num_classes, message",
    [
        ("cnn", (20,), 4, r"'cnn' needs image inputs \(H, W, C\), got shape \(20,\)"),
        ("cnn", (8, 8), 10, "needs image inputs"),
        ("linear", (8, 8, 1), 10, "'linear' is for regression"),
        ("logistic", (1,), 0, "'logistic' is a classifier"),
        ("mlp", (1,), 0, "'mlp' is a classifier"),
        ("cnn", (8, 8, 1), 0, "'cnn' is a classifier"),
        ("resnet", (8, 8, 1), 10, "unknown model 'resnet'"),
    ],
)
def test_rejects_wrong_combinations(name, input_shape, num_classes, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, input_shape, num_classes)


@pytest.mark.parametrize(
    "name, shape_and_classes", [("mlp", DIGITS), ("cnn", DIGITS), ("cnn", MNIST), ("linear", REGRESSION)]
)
def test_layer_names_do_not_depend_on_the_models_built_before(name, shape_and_classes):
    """A saved model must not tell how many models the process built (the private search's K)."""
    input_shape, num_classes = shape_and_classes
    first = build_model(name, input_shape, num_classes)
    for other in ("mlp", "logistic", "cnn"):
        build_model(other, *DIGITS)
    again = build_model(name, input_shape, num_classes)
    names = [layer.name for layer in first.layers]
    assert names == [layer.name for layer in again.layers] and again.name == name
    assert [v.name for v in first.variables] == [v.name for v in again.variables]
