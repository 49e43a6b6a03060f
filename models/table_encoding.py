"""Keras preprocessing layers that apply a filled-in table preprocessing inside the model.

Why: the released SavedModel takes raw columns (numbers with NaN for missing, strings), so `predict`
on a raw CSV gives the answers of the model that was trained, with no hand-written transform to drift
from the training one. The model's inputs are two tensors in the schema's column order (schema.json):
"numeric" (float32, one column per numeric feature, NaN = missing) and "categorical" (string, one
column per categorical feature, "" = missing); a table without one of the kinds has no such input.
The math equals `privacy.preprocessing.encode` (tested), which the training data goes through; a
category's one-hot block is [other, vocabulary...], StringLookup's order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUMERIC, CATEGORICAL = "numeric", "categorical"


def _impute_clip_class():
    import tensorflow as tf

    @tf.keras.utils.register_keras_serializable(package="ppml")
    class ImputeClip(tf.keras.layers.Layer):
        """NaN -> fill, then clip to [lower, upper]; appends a 0/1 missing indicator for `indicator` columns.

        No built-in Keras layer imputes; scaling is left to tf.keras.layers.Normalization."""

        def __init__(self, fill, lower, upper, indicator, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.fill, self.lower, self.upper = list(fill), list(lower), list(upper)
            self.indicator = [bool(i) for i in indicator]

        def call(self, x):
            missing = tf.math.is_nan(x)
            filled = tf.where(missing, tf.constant(self.fill, x.dtype), x)
            clipped = tf.clip_by_value(
                filled, tf.constant(self.lower, x.dtype), tf.constant(self.upper, x.dtype)
            )
            idx = [i for i, on in enumerate(self.indicator) if on]
            return clipped, tf.cast(tf.gather(missing, tf.constant(idx, tf.int32), axis=1), x.dtype)

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "fill": self.fill,
                "lower": self.lower,
                "upper": self.upper,
                "indicator": self.indicator,
            }

    return ImputeClip


_CLASSES: dict[str, Any] = {}


def impute_clip_layer():
    """The registered ImputeClip class (defined once per process, on first use: TensorFlow is heavy)."""
    if "ImputeClip" not in _CLASSES:
        _CLASSES["ImputeClip"] = _impute_clip_class()
    return _CLASSES["ImputeClip"]


def register() -> None:
    """Makes saved table models loadable with tf.keras.models.load_model in this process."""
    impute_clip_layer()


def build_encoder(fitted):
    """A Keras model: raw {"numeric", "categorical"} inputs -> the encoded float32 features."""
    import tensorflow as tf

    layers = tf.keras.layers
    inputs, outputs = {}, []
    if fitted.numeric:
        num = layers.Input(shape=(len(fitted.numeric),), dtype=tf.float32, name=NUMERIC)
        inputs[NUMERIC] = num
        t = fitted.numeric
        clipped, indicators = impute_clip_layer()(
            [c.fill for c in t],
            [c.lower for c in t],
            [c.upper for c in t],
            [c.indicator for c in t],
            name="impute_clip",
        )(num)
        scaled = layers.Normalization(
            mean=[c.center for c in t], variance=[c.scale**2 for c in t], name="normalize"
        )(clipped)
        outputs.append(_interleave(scaled, indicators, [c.indicator for c in t]))
    if fitted.categorical:
        cat = layers.Input(shape=(len(fitted.categorical),), dtype=tf.string, name=CATEGORICAL)
        inputs[CATEGORICAL] = cat
        for j, c in enumerate(fitted.categorical):
            lookup = layers.StringLookup(
                vocabulary=list(c.vocabulary),
                num_oov_indices=1,
                mask_token=None,
                output_mode="one_hot",
                name=f"lookup_{j + 1}",
            )
            outputs.append(lookup(layers.Reshape((1,), name=f"column_{j + 1}")(cat[:, j])))
    merged = outputs[0] if len(outputs) == 1 else layers.Concatenate(name="features")(outputs)
    return tf.keras.Model(inputs, merged, name="table_encoder")


def _interleave(scaled, indicators, flags: list[bool]):
    """[x1, (m1), x2, (m2), ...]: each indicator right after its column, as `encode` orders them."""
    import tensorflow as tf

    if not any(flags):
        return scaled
    parts, k = [], 0
    for i, on in enumerate(flags):
        parts.append(scaled[:, i : i + 1])
        if on:
            parts.append(indicators[:, k : k + 1])
            k += 1
    return tf.keras.layers.Concatenate(name="numeric_features")(parts)


def raw_input_model(model, fitted, name: str | None = None):
    """`model` (trained on encoded features) behind the encoder: the model to save and release."""
    import tensorflow as tf

    encoder = build_encoder(fitted)
    outputs = model(encoder.outputs[0] if isinstance(encoder.outputs, list) else encoder.output)
    return tf.keras.Model(encoder.inputs, outputs, name=name or model.name)


def raw_inputs(
    numeric: list[str], categorical: list[str], columns: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The raw model's input arrays from a table's columns (data.table_files format), in schema order."""
    out = {}
    if numeric:
        out[NUMERIC] = np.stack([columns[c].astype(np.float32) for c in numeric], axis=1)
    if categorical:
        out[CATEGORICAL] = np.stack([columns[c].astype(str) for c in categorical], axis=1).astype(object)
    return out
