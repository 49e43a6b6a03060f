"""Your own model, for every binary: `--model=examples/my_model.py:build`.

  python -m pipelines.train_centralized --model=examples/my_model.py:build --dp --target_epsilon=3
  python -m pipelines.train_federated --model=examples/my_model.py:build --rounds=10

`build(input_shape, num_classes)` returns an uncompiled Keras model that outputs logits, one per class
(the pipelines add the softmax in the loss, and the optimizer: DP-SGD or FedAvg). A functional model
whose trainable layers are all Dense runs on the fastest DP engine (ghost: one forward and one backward
pass per batch); tanh, a bounded activation, keeps clipped gradients informative.
"""

from __future__ import annotations

import tensorflow as tf


def build(input_shape: tuple[int, ...], num_classes: int) -> tf.keras.Model:
    """Input -> Flatten -> two tanh Dense branches -> Concatenate -> Dense logits."""
    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=input_shape, name="input")
    flat = layers.Flatten(name="flatten")(inputs)
    wide = layers.Dense(64, activation="tanh", name="wide")(flat)
    narrow = layers.Dense(16, activation="tanh", name="narrow")(flat)
    merged = layers.Concatenate(name="merge")([wide, narrow])
    logits = layers.Dense(num_classes, name="logits")(merged)
    return tf.keras.Model(inputs, logits, name="two_branch")
