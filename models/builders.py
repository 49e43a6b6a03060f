"""Keras model builders. No DP and no data in here: shapes come from the dataset."""

from __future__ import annotations

from typing import Any

MODELS = ("linear", "logistic", "mlp", "cnn")


def check_compatible(name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Raises ValueError when `name` cannot model this data (no TensorFlow needed)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    if name == "linear" and num_classes != 0:
        raise ValueError("model 'linear' is for regression datasets (e.g. synthetic_regression)")
    if name != "linear" and num_classes == 0:
        raise ValueError(f"model {name!r} is a classifier; use --model=linear for regression")
    if name == "cnn" and len(input_shape) != 3:
        raise ValueError(f"model 'cnn' needs image inputs (H, W, C), got shape {input_shape}")


MLP_WIDTH = 128


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0, width: int | None = None
):
    """Returns an uncompiled Keras Sequential model that outputs logits (or a scalar).

    Every layer has a fixed name (input, flatten, conv_i, pool_i, hidden_1, logits or prediction) and
    the model is named `name`: nothing saved depends on how many models this process built before.

    `width`: the MLP's hidden units (default 128); a narrower layer adds less DP noise in total (the
    noise norm grows with the square root of the number of weights), which can win at small epsilon.
    """
    import tensorflow as tf

    check_compatible(name, input_shape, num_classes)
    if width is not None and (name != "mlp" or width < 1):
        raise ValueError(
            f"width applies to the mlp model only, as a number of hidden units >= 1 (got {width})"
        )
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inputs = [layers.InputLayer(input_shape=input_shape, name="input")]
    if name == "linear":
        body = [layers.Flatten(name="flatten"), layers.Dense(1, name="prediction")]
    elif name == "logistic":
        body = [layers.Flatten(name="flatten"), layers.Dense(num_classes, name="logits")]
    elif name == "mlp":
        # tanh, not relu: bounded activations keep DP-SGD's clipped gradients informative
        # (Papernot et al., "Tempered Sigmoid Activations for Deep Learning with DP", 2021).
        body = [
            layers.Flatten(name="flatten"),
            layers.Dense(width or MLP_WIDTH, activation="tanh", name="hidden_1"),
            layers.Dense(num_classes, name="logits"),
        ]
    else:
        body = _cnn_body(layers, input_shape, num_classes)
    return tf.keras.Sequential(inputs + body, name=name)


def cnn_variant(input_shape: tuple[int, ...]) -> str:
    """Which CNN `build_model("cnn", ...)` builds for these inputs (see `_cnn_body`)."""
    height, width, channels = input_shape
    if min(height, width) < 16:
        return "small"
    return "mnist" if channels == 1 else "cifar"


def _cnn_body(layers, input_shape: tuple[int, ...], num_classes: int) -> list:
    """The CNN for the input size, after published DP recipes for small CNNs.

    * small (under 16 pixels, e.g. the 8x8 digits): two 3x3 convolutions, kept as it was.
    * mnist (28x28 grey): the tanh CNN of Papernot et al. (2021, "Tempered sigmoid activations for
      deep learning with differential privacy") that Tramer & Boneh (2021) train to 98.1% on MNIST at
      epsilon 3: conv 16 8x8/2, max-pool 2/1, conv 32 4x4/2, max-pool 2/1, dense 32, all tanh (26k weights).
    * cifar (32x32 colour): the tanh CNN of Papernot et al. (2021) for CIFAR-10: three blocks of two 3x3
      convolutions (32, 64, 128 filters) with 2x2 max-pooling, then dense 128.
    Bounded activations keep clipped gradients informative; there is no BatchNormalization (its
    statistics mix examples); at these depths GroupNorm did not pay for its cost on CPU.
    """
    variant = cnn_variant(input_shape)
    conv, pool = _Numbered(layers.Conv2D, "conv"), _Numbered(layers.MaxPooling2D, "pool")
    if variant == "small":
        features = [
            conv(16, 3, activation="relu", padding="same"),
            conv(32, 3, activation="relu", padding="same"),
            pool(),
        ]
        hidden = layers.Dense(64, activation="relu", name="hidden_1")
    elif variant == "mnist":
        features = [
            conv(16, 8, strides=2, padding="same", activation="tanh"),
            pool(2, 1),
            conv(32, 4, strides=2, padding="valid", activation="tanh"),
            pool(2, 1),
        ]
        hidden = layers.Dense(32, activation="tanh", name="hidden_1")
    else:
        features = []
        for filters in (32, 64, 128):
            features += [
                conv(filters, 3, padding="same", activation="tanh"),
                conv(filters, 3, padding="same", activation="tanh"),
                pool(),
            ]
        hidden = layers.Dense(128, activation="tanh", name="hidden_1")
    return [*features, layers.Flatten(name="flatten"), hidden, layers.Dense(num_classes, name="logits")]


class _Numbered:
    """Builds layers of one kind named prefix_1, prefix_2, ... in order within one model.

    Explicit names, not Keras's process-wide counter: a saved model must not reveal how many models
    the process built before it (the private search's number of runs K is secret)."""

    def __init__(self, layer_class: type, prefix: str) -> None:
        self.layer_class, self.prefix, self.count = layer_class, prefix, 0

    def __call__(self, *args: Any, **kwargs: Any):
        self.count += 1
        return self.layer_class(*args, name=f"{self.prefix}_{self.count}", **kwargs)
