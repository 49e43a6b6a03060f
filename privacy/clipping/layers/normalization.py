"""LayerNormalization and GroupNormalization: exact per-example norms of gamma's and beta's gradients.

Both compute y = gamma * xhat + beta with xhat normalized per example (never across the batch, which is
why they suit DP-SGD and BatchNormalization does not). Example i's gradients are
dgamma_i = sum over positions of G_i * xhat_i and dbeta_i = sum of G_i, reduced over every axis but
the parameter axes. The forward pass computes xhat itself (as Keras does) and the output from it, so G
is the gradient at the layer's output.
"""

from __future__ import annotations

import tensorflow as tf

from privacy.clipping.layers.base import LayerRecord


def _axes(layer, rank: int) -> list[int]:
    axis = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
    return sorted(a % rank for a in axis)


def _broadcast(param: tf.Tensor, rank: int, axes: list[int]) -> tf.Tensor:
    shape = [1] * rank
    for a, d in zip(axes, param.shape):
        shape[a] = d
    return tf.reshape(param, shape)


def layer_norm_xhat(layer: tf.keras.layers.LayerNormalization, x: tf.Tensor) -> tf.Tensor:
    axes = _axes(layer, x.shape.rank)
    mean, variance = tf.nn.moments(x, axes=axes, keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + layer.epsilon)


def group_norm_xhat(layer: tf.keras.layers.GroupNormalization, x: tf.Tensor) -> tf.Tensor:
    axis = layer.axis % x.shape.rank
    channels = x.shape[axis]
    shape = tf.concat(
        [tf.shape(x)[:axis], [layer.groups, channels // layer.groups], tf.shape(x)[axis + 1 :]], 0
    )
    grouped = tf.reshape(x, shape)  # the channel axis split into (groups, channels per group)
    reduce = [a for a in range(1, x.shape.rank + 1) if a != axis]
    mean, variance = tf.nn.moments(grouped, axes=reduce, keepdims=True)
    return tf.reshape((grouped - mean) * tf.math.rsqrt(variance + layer.epsilon), tf.shape(x))


class AffineNormRecord(LayerRecord):
    """y = gamma * xhat + beta with per-example xhat; gamma/beta on `param_axes`."""

    def __init__(self, layer, xhat: tf.Tensor, param_axes: list[int], outputs: tf.Tensor) -> None:
        self.layer, self.xhat, self.watched = layer, xhat, outputs
        self.reduce = [a for a in range(1, xhat.shape.rank) if a not in param_axes]

    def _per_example(self, grad: tf.Tensor) -> list[tuple[tf.Variable, tf.Tensor]]:
        out = []
        if self.layer.scale:
            out.append((self.layer.gamma, tf.reduce_sum(grad * self.xhat, axis=self.reduce)))
        if self.layer.center:
            out.append((self.layer.beta, tf.reduce_sum(grad, axis=self.reduce)))
        return out

    def squared_norms(self, grad: tf.Tensor) -> tf.Tensor:
        norms = [
            tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1)
            for _, g in self._per_example(grad)
        ]
        return tf.add_n(norms)

    def clipped_sums(self, grad: tf.Tensor, weights: tf.Tensor) -> dict:
        return {
            var.ref(): tf.reshape(tf.tensordot(weights, g, axes=1), var.shape)
            for var, g in self._per_example(grad)
        }


def _affine(layer, x: tf.Tensor, xhat: tf.Tensor, param_axes: list[int]):
    rank = x.shape.rank
    y = xhat
    if layer.scale:
        y = y * tf.cast(_broadcast(layer.gamma, rank, param_axes), x.dtype)
    if layer.center:
        y = y + tf.cast(_broadcast(layer.beta, rank, param_axes), x.dtype)
    return y, AffineNormRecord(layer, xhat, param_axes, y)


def layer_norm_forward(layer: tf.keras.layers.LayerNormalization, args: tuple, kwargs: dict):
    x = tf.convert_to_tensor(args[0])
    return _affine(layer, x, layer_norm_xhat(layer, x), _axes(layer, x.shape.rank))


def group_norm_forward(layer: tf.keras.layers.GroupNormalization, args: tuple, kwargs: dict):
    x = tf.convert_to_tensor(args[0])
    return _affine(layer, x, group_norm_xhat(layer, x), [layer.axis % x.shape.rank])
