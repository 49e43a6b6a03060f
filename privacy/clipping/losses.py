"""Per-example losses: DP-SGD clips each example's gradient, so the loss is never reduced first."""

from __future__ import annotations

import tensorflow as tf


def per_example_loss(task: str) -> tf.keras.losses.Loss:
    """Cross-entropy on logits (classification) or squared error (regression), one value per example."""
    if task == "regression":
        return _SquaredError()
    return tf.keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=tf.keras.losses.Reduction.NONE
    )


class _SquaredError(tf.keras.losses.Loss):
    """Per-example squared error for a (B, 1) output and (B,) targets."""

    def __init__(self, reduction=tf.keras.losses.Reduction.NONE, name="squared_error"):
        super().__init__(reduction=reduction, name=name)

    def call(self, y_true, y_pred):
        y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), [-1])
        return tf.square(tf.reshape(y_pred, [-1]) - y_true)
