"""Keras model builders. No DP and no data in here: shapes come from the dataset."""

from __future__ import annotations

MODELS = ("linear", "logistic", "mlp", "cnn")


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0):
    """Returns an uncompiled Keras Sequential model that outputs logits (or a scalar)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inputs = [layers.InputLayer(input_shape=input_shape)]
    if name == "linear":
        if num_classes != 0:
            raise ValueError("model 'linear' is for regression datasets (e.g. synthetic_regression)")
        body = [layers.Flatten(), layers.Dense(1)]
    elif num_classes == 0:
        raise ValueError(f"model {name!r} is a classifier; use --model=linear for regression")
    elif name == "logistic":
        body = [layers.Flatten(), layers.Dense(num_classes)]
    elif name == "mlp":
        body = [layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(num_classes)]
    elif name == "cnn":
        if len(input_shape) != 3:
            raise ValueError(f"model 'cnn' needs image inputs (H, W, C), got shape {input_shape}")
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
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    return tf.keras.Sequential(inputs + body, name=name)
