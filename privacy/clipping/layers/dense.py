"""Dense (any input rank): per-example kernel norms from the layer's input A and output gradient G.

Rank-2 inputs (one position per example): ||g_i a_i^T||^2 = ||a_i||^2 ||g_i||^2, the formula of
TF-Privacy's Dense registry entry. Sequence inputs [B, T, D]: ||A_i^T G_i||_F^2 by the ghost or the
explicit form, whichever the mixed rule says is cheaper. Bias: ||sum_t G_i[t]||^2. The clipped sums
are A^T (w * G), from the same backward pass. Shapes are static where possible: at small models the
per-op overhead of dynamic-shape bookkeeping is a measurable part of the step.
"""

from __future__ import annotations

import tensorflow as tf

from privacy.clipping.layers.base import (
    LayerRecord,
    call_without_activation,
    matrix_gradient_squared_norms,
    use_ghost_norm,
)


class DenseRecord(LayerRecord):
    def __init__(self, layer: tf.keras.layers.Dense, inputs: tf.Tensor, z: tf.Tensor) -> None:
        self.layer, self.watched = layer, z
        self.fan_in, self.fan_out = layer.kernel.shape
        self.flat = inputs.shape.rank == 2
        if self.flat:
            self.a = inputs
        else:
            positions = inputs.shape[1:-1].num_elements()  # None when a length is unknown
            self.a = tf.reshape(inputs, [-1, positions or -1, self.fan_in])  # [B, T, D]
            self.ghost = positions is not None and use_ghost_norm(positions, self.fan_in, self.fan_out)

    def _g(self, grad: tf.Tensor) -> tf.Tensor:
        return grad if self.flat else tf.reshape(grad, [-1, self.a.shape[1] or -1, self.fan_out])

    def squared_norms(self, grad: tf.Tensor) -> tf.Tensor:
        if self.flat:
            g2 = tf.reduce_sum(tf.square(grad), axis=1)
            norms = tf.reduce_sum(tf.square(self.a), axis=1) * g2
            return norms + g2 if self.layer.use_bias else norms
        g = self._g(grad)
        norms = matrix_gradient_squared_norms(self.a, g, self.ghost)
        if self.layer.use_bias:
            norms += tf.reduce_sum(tf.square(tf.reduce_sum(g, axis=1)), axis=1)
        return norms

    def clipped_sums(self, grad: tf.Tensor, weights: tf.Tensor) -> dict:
        if self.flat:
            wg = grad * weights[:, None]
            a = self.a
        else:
            wg = tf.reshape(self._g(grad) * weights[:, None, None], [-1, self.fan_out])
            a = tf.reshape(self.a, [-1, self.fan_in])
        out = {self.layer.kernel.ref(): tf.linalg.matmul(a, wg, transpose_a=True)}
        if self.layer.use_bias:
            out[self.layer.bias.ref()] = tf.reduce_sum(wg, axis=0)
        return out


def forward(layer: tf.keras.layers.Dense, args: tuple, kwargs: dict):
    z, outputs = call_without_activation(layer, args, kwargs)
    return outputs, DenseRecord(layer, args[0], z)
