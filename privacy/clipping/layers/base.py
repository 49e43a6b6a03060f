"""What a per-layer clipping rule provides to the book-keeping (ghost) engine.

A rule's forward function runs the layer once, exposing the tensor whose loss gradient G the layer
needs (usually its pre-activation output); the returned record then gives, from G alone:

* each example's squared L2 norm of the gradient of this layer's trainable weights, and
* the sum over examples of those gradients, each example weighted by w_i (w_i = min(1, C/||g_i||)),

so the whole model needs one forward and one backward pass. Shapes: G has the batch first.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import tensorflow as tf


class LayerRecord(abc.ABC):
    """One layer's forward intermediates within one DP step."""

    #: the tensor whose gradient (of the summed per-example losses) this layer needs
    watched: tf.Tensor

    @abc.abstractmethod
    def squared_norms(self, grad: tf.Tensor) -> tf.Tensor:
        """[B]: squared L2 norm of each example's gradient of this layer's trainable weights."""

    @abc.abstractmethod
    def clipped_sums(self, grad: tf.Tensor, weights: tf.Tensor) -> dict[Any, tf.Tensor]:
        """{variable.ref(): sum_i weights[i] * (example i's gradient of that variable)}."""


# (layer, call args, call kwargs) -> (layer outputs, record); outputs must equal layer(*args, **kwargs).
ForwardFn = Callable[[tf.keras.layers.Layer, tuple, dict], tuple[Any, LayerRecord]]


def call_without_activation(layer: tf.keras.layers.Layer, args: tuple, kwargs: dict) -> tuple[tf.Tensor, Any]:
    """(pre-activation output z, activation(z)) of a layer with an `activation` attribute."""
    activation = layer.activation
    layer.activation = tf.keras.activations.linear
    try:
        z = layer(*args, **kwargs)
    finally:
        layer.activation = activation
    return z, activation(z)


# Per-example gradients up to this many floats per example (times the batch) are materialized.
EXPLICIT_MAX_FLOATS_PER_EXAMPLE = 64 * 1024


def use_ghost_norm(positions: int, fan_in: int, fan_out: int) -> bool:
    """The mixed rule of Bu et al. (2022): ghost iff 2 T^2 <= D p (T positions, D fan-in, p fan-out).

    The ghost norm needs two T x T Gram matrices per example, the explicit one the D x p gradient.
    In book-keeping the explicit gradients also give the clipped sum (no second matmul), so in FLOPs
    explicit is never more expensive; the ghost form's gain is memory. The rule therefore decides only
    when the per-example gradients would be large (over EXPLICIT_MAX_FLOATS_PER_EXAMPLE floats each);
    below that the explicit form is used (measured faster on CPU, benchmarks/dp_overhead).
    """
    if fan_in * fan_out <= EXPLICIT_MAX_FLOATS_PER_EXAMPLE:
        return False
    return 2 * positions * positions <= fan_in * fan_out


def matrix_gradient_squared_norms(a: tf.Tensor, g: tf.Tensor, ghost: bool) -> tf.Tensor:
    """[B]: ||A_i^T G_i||_F^2 for A [B, T, D] and G [B, T, p], by the ghost or the explicit form.

    Ghost: sum_{t,t'} (a_t . a_t')(g_t . g_t') = <A A^T, G G^T>; explicit: form A_i^T G_i.
    """
    if ghost:
        aat = tf.linalg.matmul(a, a, transpose_b=True)
        ggt = tf.linalg.matmul(g, g, transpose_b=True)
        return tf.reduce_sum(aat * ggt, axis=[1, 2])
    per_example = tf.linalg.matmul(a, g, transpose_a=True)  # [B, D, p]
    return tf.reduce_sum(tf.square(per_example), axis=[1, 2])
