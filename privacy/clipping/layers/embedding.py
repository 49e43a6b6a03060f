"""Embedding: example i's gradient has one row per distinct token id it holds, the sum of the output
gradients at that id's positions; its squared norm is the sum of those rows' squared norms.

Computed with segment sums over (example, id) pairs, so an example's repeated tokens are summed before
squaring (as the true gradient does), and the clipped sum scatters w_i * G_i[t] into the id rows.
"""

from __future__ import annotations

import tensorflow as tf

from privacy.clipping.layers.base import LayerRecord


class EmbeddingRecord(LayerRecord):
    def __init__(self, layer: tf.keras.layers.Embedding, ids: tf.Tensor, outputs: tf.Tensor) -> None:
        self.layer, self.watched = layer, outputs
        batch = tf.shape(ids)[0]
        self.ids = tf.reshape(tf.cast(ids, tf.int64), [batch, -1])  # [B, L]
        self.batch = batch

    def _flat(self, grad: tf.Tensor) -> tf.Tensor:
        return tf.reshape(grad, [-1, self.layer.output_dim])  # [B*L, d], rows in the order of self.ids

    def squared_norms(self, grad: tf.Tensor) -> tf.Tensor:
        length = tf.shape(self.ids, out_type=tf.int64)[1]
        example = tf.repeat(tf.range(tf.cast(self.batch, tf.int64)), length)
        vocab = tf.cast(self.layer.input_dim, tf.int64)
        pairs, segment = tf.unique(example * vocab + tf.reshape(self.ids, [-1]))
        rows = tf.math.unsorted_segment_sum(self._flat(grad), segment, tf.shape(pairs)[0])  # [U, d]
        return tf.math.unsorted_segment_sum(
            tf.reduce_sum(tf.square(rows), axis=1), pairs // vocab, tf.cast(self.batch, tf.int64)
        )

    def clipped_sums(self, grad: tf.Tensor, weights: tf.Tensor) -> dict:
        length = tf.shape(self.ids)[1]
        weighted = self._flat(grad) * tf.repeat(weights, length)[:, None]
        table = tf.math.unsorted_segment_sum(weighted, tf.reshape(self.ids, [-1]), self.layer.input_dim)
        return {self.layer.embeddings.ref(): table}


def forward(layer: tf.keras.layers.Embedding, args: tuple, kwargs: dict):
    outputs = layer(*args, **kwargs)
    return outputs, EmbeddingRecord(layer, args[0], outputs)
