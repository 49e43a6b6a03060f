"""Keras model builders. No DP and no data in here: shapes come from the dataset."""

from __future__ import annotations

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


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0):
    """Returns an uncompiled Keras Sequential model that outputs logits (or a scalar)."""
    import tensorflow as tf

    check_compatible(name, input_shape, num_classes)
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inputs = [layers.InputLayer(input_shape=input_shape)]
    if name == "linear":
        body = [layers.Flatten(), layers.Dense(1)]
    elif name == "logistic":
        body = [layers.Flatten(), layers.Dense(num_classes)]
    elif name == "mlp":
        # tanh, not relu: bounded activations keep DP-SGD's clipped gradients informative
        # (Papernot et al., "Tempered Sigmoid Activations for Deep Learning with DP", 2021).
        body = [layers.Flatten(), layers.Dense(128, activation="tanh"), layers.Dense(num_classes)]
    else:  # cnn
        small = min(input_shape[:2]) < 16
        body = [
            layers.Conv2D(16, 3, activation="relu", padding="same"),
            *([] if small else [layers.MaxPooling2D()]),
            layers.Conv2D(32, 3, activation="relu", padding="same"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(num_classes),
        ]
    return tf.keras.Sequential(inputs + body, name=name)
