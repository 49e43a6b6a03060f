"""DP-SGD engines: per-example clipped gradient sums, plus the one place noise is added.

Every engine returns the same thing, the sum over the batch of per-example gradients
clipped to L2 norm C, so they are interchangeable and can be checked against each other
at noise 0:

* ``reference``: TF-Privacy's ``DPKerasSGDOptimizer`` (jacobian + per-example clipping),
  used with noise 0; its clipped mean times the batch size is the clipped sum.
* ``fast``: TF-Privacy's fast-clipping ("ghost norm") path: per-example gradient norms from
  the layer registry (Dense, Embedding), then one backward pass of the clip-weighted loss.
  Only valid when every trainable layer is in the registry.
* ``vectorized``: per-example gradients with ``tf.vectorized_map`` then clipping: the path
  TF-Privacy's ``DPModel`` falls back to for unregistered layers (e.g. Conv2D).
* ``ghost``: book-keeping ghost clipping (Bu et al., 2023) for Sequential models whose
  trainable layers are all Dense on flat inputs: ONE forward and backward pass gives each
  Dense layer's inputs a and output gradients g; per-example norms are ||a_i||^2 ||g_i||^2
  (the quantity TF-Privacy's Dense registry entry computes) and the clipped sum is
  a^T (w * g) with w_i = min(1, C / norm_i), with no second backward pass.
* ``auto``: ``ghost`` when the model allows it, else ``fast``, else ``vectorized``.

Noise is added once, by :func:`noisy_mean_gradient`, for all engines: N(0, (zC)^2) on the
sum, divided by the *expected* batch size (a data-independent denominator, as the Poisson
analysis requires), so the engine choice cannot change the privacy guarantee.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import clip_grads, layer_registry
from tensorflow_privacy.privacy.optimizers.dp_optimizer_keras import DPKerasSGDOptimizer

from privacy.config import DP_SGD_ENGINES as ENGINES

ClippedSumFn = Callable[[tf.Tensor, tf.Tensor], list[tf.Tensor]]


def per_example_loss(task: str) -> tf.keras.losses.Loss:
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


def fast_clipping_supported(model: tf.keras.Model) -> bool:
    """True when every layer with trainable weights has a fast-clipping registry entry."""
    registry = layer_registry.make_default_layer_registry()
    return all(registry.is_elem(layer) for layer in model.layers if layer.trainable_weights)


_PASS_THROUGH = ("InputLayer", "Flatten", "Dropout", "Activation")


def ghost_clipping_supported(model: tf.keras.Model) -> bool:
    """Sequential, trainable layers all Dense on 2-D inputs, everything else parameter-free."""
    if not isinstance(model, tf.keras.Sequential):
        return False
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Dense):
            if len(layer.input_shape) != 2:
                return False
        elif layer.trainable_weights or type(layer).__name__ not in _PASS_THROUGH:
            return False
    return True


def resolve_engine(engine: str, model: tf.keras.Model) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown DP engine {engine!r}; expected one of {ENGINES}")
    if engine == "auto":
        if ghost_clipping_supported(model):
            return "ghost"
        return "fast" if fast_clipping_supported(model) else "vectorized"
    if engine == "ghost" and not ghost_clipping_supported(model):
        raise ValueError(
            "engine 'ghost' needs a Sequential model of Dense layers on flat inputs (plus Flatten/"
            "Dropout/Activation); use --engine=fast, vectorized or auto"
        )
    if engine == "fast" and not fast_clipping_supported(model):
        unsupported = sorted(
            {type(layer).__name__ for layer in model.layers if layer.trainable_weights}
            - {"Dense", "Embedding"}
        )
        raise ValueError(
            f"engine 'fast' needs every trainable layer in TF-Privacy's fast-clipping registry "
            f"(Dense, Embedding); this model has {unsupported}. Use --engine=vectorized or auto."
        )
    return engine


def make_clipped_sum_fn(engine: str, model: tf.keras.Model, task: str, l2_norm_clip: float) -> ClippedSumFn:
    """(x, y) -> list of per-variable sums of per-example gradients clipped to `l2_norm_clip`."""
    engine = resolve_engine(engine, model)
    loss_fn = per_example_loss(task)
    variables = model.trainable_variables

    if engine == "reference":
        opt = DPKerasSGDOptimizer(
            l2_norm_clip=l2_norm_clip, noise_multiplier=0.0, num_microbatches=None, learning_rate=1.0
        )

        def clipped_sum(x, y):
            with tf.GradientTape(persistent=True) as tape:
                losses = loss_fn(y, model(x, training=True))
            grads_and_vars = opt._compute_gradients(losses, variables, tape=tape)  # noqa: SLF001
            batch = tf.cast(tf.shape(losses)[0], tf.float32)
            return [g * batch for g, _ in grads_and_vars]

        return clipped_sum

    if engine == "fast":
        registry = layer_registry.make_default_layer_registry()

        def clipped_sum(x, y):
            norms = clip_grads.compute_gradient_norms(
                model,
                registry,
                x,
                y,
                per_example_loss_fn=lambda yt, yp, _w: loss_fn(yt, yp),
                trainable_vars=variables,
            )
            weights = tf.stop_gradient(clip_grads.compute_clip_weights(l2_norm_clip, norms))
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(weights * loss_fn(y, model(x, training=True)))
            return tape.gradient(total, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)

        return clipped_sum

    if engine == "ghost":

        def clipped_sum(x, y):
            inputs, preacts = [], []
            with tf.GradientTape() as tape:
                h = x
                for layer in model.layers:
                    if isinstance(layer, tf.keras.layers.Dense):
                        z = tf.matmul(h, layer.kernel)
                        if layer.use_bias:
                            z = tf.nn.bias_add(z, layer.bias)
                        inputs.append(h)
                        preacts.append(z)
                        h = layer.activation(z)
                    else:
                        h = layer(h, training=True)
                total = tf.reduce_sum(loss_fn(y, h))
            # Row i of each dz is d loss_i / d z_i: the losses are summed and example-separable.
            dzs = tape.gradient(total, preacts)
            dense = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Dense)]
            sq = 0.0
            for layer, a, dz in zip(dense, inputs, dzs):
                g2 = tf.reduce_sum(tf.square(dz), axis=1)
                sq = sq + tf.reduce_sum(tf.square(a), axis=1) * g2 + (g2 if layer.use_bias else 0.0)
            weights = tf.minimum(1.0, l2_norm_clip / tf.maximum(tf.sqrt(sq), 1e-12))
            grads = {}
            for layer, a, dz in zip(dense, inputs, dzs):
                wdz = dz * weights[:, None]
                grads[layer.kernel.ref()] = tf.matmul(a, wdz, transpose_a=True)
                if layer.use_bias:
                    grads[layer.bias.ref()] = tf.reduce_sum(wdz, axis=0)
            return [grads[v.ref()] for v in variables]

        return clipped_sum

    def clipped_sum(x, y):  # vectorized
        def one(example):
            xi, yi = example
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(loss_fn(yi[None], model(xi[None], training=True)))
            grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # explicit norm: tf.clip_by_global_norm's L2Loss has no vectorized_map converter
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
            scale = tf.minimum(1.0, l2_norm_clip / tf.maximum(norm, 1e-12))
            return [g * scale for g in grads]

        per_example = tf.vectorized_map(one, (x, y))
        return [tf.reduce_sum(g, axis=0) for g in per_example]

    return clipped_sum


def noisy_mean_gradient(
    clipped_sums: list[tf.Tensor],
    noise_multiplier: float,
    l2_norm_clip: float,
    expected_batch_size: float,
    generator: tf.random.Generator,
) -> list[tf.Tensor]:
    """(sum + N(0, (z C)^2 I)) / expected batch size, per variable."""
    stddev = noise_multiplier * l2_norm_clip
    return [
        (s + generator.normal(tf.shape(s), stddev=stddev, dtype=s.dtype)) / expected_batch_size
        for s in clipped_sums
    ]
