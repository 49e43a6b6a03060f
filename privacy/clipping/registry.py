"""The table of per-layer clipping rules: Keras layer type -> rule (see layers/base.py).

Adding a layer type is one file in `layers/` and one entry here. Layers without trainable weights
need no rule: the engine calls them as they are (pooling, flatten, dropout, activation, reshape).
A rule may decline a configuration it does not cover (e.g. a grouped convolution); such a model then
runs on the `vectorized` engine under `auto`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf

from privacy.clipping.layers import conv, dense, embedding, normalization
from privacy.clipping.layers.base import ForwardFn


@dataclasses.dataclass(frozen=True)
class Rule:
    forward: ForwardFn
    unsupported: Callable[[tf.keras.layers.Layer], str | None] = lambda layer: None


LAYER_RULES: dict[type, Rule] = {
    tf.keras.layers.Dense: Rule(dense.forward),
    tf.keras.layers.Conv2D: Rule(conv.forward, conv.unsupported),
    tf.keras.layers.Embedding: Rule(embedding.forward),
    tf.keras.layers.LayerNormalization: Rule(normalization.layer_norm_forward),
    tf.keras.layers.GroupNormalization: Rule(normalization.group_norm_forward),
}


def rule_for(layer: tf.keras.layers.Layer) -> ForwardFn | None:
    """The rule for `layer`'s exact type and configuration (a subclass may compute something else)."""
    rule = LAYER_RULES.get(type(layer))
    if rule is None or rule.unsupported(layer) is not None:
        return None
    return rule.forward


def unsupported_layers(model: tf.keras.Model) -> list[str]:
    """The model's trainable layers that have no rule (empty: the ghost engine applies)."""
    from tensorflow_privacy.privacy.fast_gradient_clipping import gradient_clipping_utils

    if not gradient_clipping_utils.has_internal_compute_graph(model):
        return [f"{type(model).__name__} (a subclassed or unbuilt model)"]
    missing: set[str] = set()
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            missing.update(unsupported_layers(layer))
        elif layer.trainable_weights and rule_for(layer) is None:
            rule = LAYER_RULES.get(type(layer))
            missing.add(rule.unsupported(layer) if rule else type(layer).__name__)
    return sorted(missing)
