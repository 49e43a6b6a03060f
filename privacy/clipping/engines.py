"""DP-SGD clipping engines: each returns the sum over the batch of per-example gradients clipped to C.

Every engine returns the same quantity, so they are interchangeable and are checked against each
other at noise 0; none adds noise (that is `privacy.noise`, once, for all of them).

* ``reference``: TF-Privacy's ``DPKerasSGDOptimizer`` (jacobian + per-example clipping) at noise 0;
  its clipped mean times the batch size is the clipped sum. Slow; the yardstick.
* ``fast``: TF-Privacy's fast clipping: per-example norms from its layer registry (Dense,
  Embedding), then a second backward pass of the clip-weighted loss.
* ``ghost``: book-keeping clipping (Bu et al. 2023) over this project's per-layer rules
  (`privacy/clipping/registry.py`): ONE forward and ONE backward pass give each layer's input and
  output gradient, hence per-example norms, and the clipped sum A^T (w * G) with
  w_i = min(1, C / ||g_i||), with no second backward pass.
* ``vectorized``: per-example gradients with ``tf.vectorized_map``, then clipping (the path
  TF-Privacy's ``DPModel`` falls back to); works for any model.
* ``auto``: the first of ghost, fast, vectorized that supports the model.

An engine is one builder function plus one "why not" function in the table `ENGINES`. Before any of
them, `dp_refusal` turns away what no engine can make private (trainable BatchNormalization).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import (
    clip_grads,
    gradient_clipping_utils,
    layer_registry,
)
from tensorflow_privacy.privacy.optimizers.dp_optimizer_keras import DPKerasSGDOptimizer

from privacy.clipping import registry
from privacy.config import DP_SGD_ENGINES

ClippedSumFn = Callable[[tf.Tensor, tf.Tensor], list[tf.Tensor]]
LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]  # (labels, outputs) -> per-example losses


def reference(model: tf.keras.Model, loss_fn: LossFn, l2_norm_clip: float) -> ClippedSumFn:
    opt = DPKerasSGDOptimizer(
        l2_norm_clip=l2_norm_clip, noise_multiplier=0.0, num_microbatches=None, learning_rate=1.0
    )
    variables = model.trainable_variables

    def clipped_sum(x, y):
        with tf.GradientTape(persistent=True) as tape:
            losses = loss_fn(y, model(x, training=True))
        grads_and_vars = opt._compute_gradients(losses, variables, tape=tape)  # noqa: SLF001
        batch = tf.cast(tf.shape(losses)[0], tf.float32)
        return [g * batch for g, _ in grads_and_vars]

    return clipped_sum


def fast(model: tf.keras.Model, loss_fn: LossFn, l2_norm_clip: float) -> ClippedSumFn:
    tfp_registry = layer_registry.make_default_layer_registry()
    variables = model.trainable_variables

    def clipped_sum(x, y):
        norms = clip_grads.compute_gradient_norms(
            model,
            tfp_registry,
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


def _ghost_pass(model: tf.keras.Model, loss_fn: LossFn, x, y) -> tuple[list, list]:
    """One forward and one backward pass: every registered layer's record and its output gradient."""
    records = []

    def forward(layer, args, kwargs):
        rule = registry.rule_for(layer) if layer.trainable_weights else None
        if rule is None:  # parameter-free (or frozen) layer: run it as it is
            return layer(*args, **kwargs, training=True), None
        outputs, record = rule(layer, args, {**kwargs, "training": True})
        records.append(record)
        return outputs, None

    with tf.GradientTape() as tape:
        outputs, _ = gradient_clipping_utils.model_forward_pass(model, x, forward)
        total = tf.reduce_sum(loss_fn(y, outputs))
    # Row i of each gradient is d loss_i / d z_i: the losses are summed and example-separable.
    return records, tape.gradient(total, [r.watched for r in records])


def ghost_squared_norms(
    model: tf.keras.Model, loss_fn: LossFn
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """(x, y) -> [B]: each example's squared gradient norm, as the ghost engine computes it."""

    def squared_norms(x, y):
        records, grads = _ghost_pass(model, loss_fn, x, y)
        return tf.add_n([r.squared_norms(g) for r, g in zip(records, grads)])

    return squared_norms


def ghost(model: tf.keras.Model, loss_fn: LossFn, l2_norm_clip: float) -> ClippedSumFn:
    variables = model.trainable_variables

    def clipped_sum(x, y):
        records, grads = _ghost_pass(model, loss_fn, x, y)
        squared = tf.add_n([r.squared_norms(g) for r, g in zip(records, grads)])
        weights = tf.minimum(1.0, l2_norm_clip / tf.maximum(tf.sqrt(squared), 1e-12))
        sums = {}
        for r, g in zip(records, grads):
            for ref, total in r.clipped_sums(g, weights).items():
                # a second record for a variable is a layer called twice: its norms lack cross terms
                if ref in sums:
                    raise ValueError(f"engine 'ghost' cannot clip {ref.deref().name}: {SHARED_LAYER_WHY}")
                sums[ref] = total
        return [sums[v.ref()] for v in variables]

    return clipped_sum


def vectorized(model: tf.keras.Model, loss_fn: LossFn, l2_norm_clip: float) -> ClippedSumFn:
    variables = model.trainable_variables

    def clipped_sum(x, y):
        def one(example):
            xi, yi = example
            batch_of_one = tf.nest.map_structure(lambda t: t[None], xi)  # a model's inputs may be nested
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(loss_fn(yi[None], model(batch_of_one, training=True)))
            grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            grads = [tf.convert_to_tensor(g) for g in grads]  # an Embedding's IndexedSlices, densified
            # explicit norm: tf.clip_by_global_norm's L2Loss has no vectorized_map converter
            norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
            scale = tf.minimum(1.0, l2_norm_clip / tf.maximum(norm, 1e-12))
            return [g * scale for g in grads]

        per_example = tf.vectorized_map(one, (x, y))
        return [tf.reduce_sum(g, axis=0) for g in per_example]

    return clipped_sum


def _sublayers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
    """Every layer inside `model`, nested models and layers' own sub-layers included."""
    return [m for m in model.submodules if isinstance(m, tf.keras.layers.Layer)]


def _names(layers: list[tf.keras.layers.Layer]) -> str:
    return ", ".join(sorted(f"{layer.name!r} ({type(layer).__name__})" for layer in layers))


_L = tf.keras.layers
BATCH_NORMALIZATION = (_L.BatchNormalization, _L.experimental.SyncBatchNormalization)


def dp_refusal(model: tf.keras.Model) -> str | None:
    """Why no engine can train `model` under DP, or None; consulted by `resolve_engine` for every engine.

    A trainable BatchNormalization normalizes each example with statistics of the whole batch, so one
    example changes the others' outputs and gradients (per-example clipping no longer bounds its
    influence), and its moving statistics are updated without noise and released with the model.
    Frozen (trainable=False), Keras runs it in inference mode with fixed statistics: that is safe.
    """
    batch_norms = [
        layer for layer in _sublayers(model) if isinstance(layer, BATCH_NORMALIZATION) and layer.trainable
    ]
    if not batch_norms:
        return None
    return (
        f"DP-SGD cannot train BatchNormalization layers ({_names(batch_norms)}): BatchNormalization mixes "
        "the examples of a batch, and its moving statistics are computed without noise and released with "
        "the model; use GroupNormalization or LayerNormalization instead, or freeze it with "
        "trainable=False (it then runs in inference mode with fixed statistics)"
    )


SHARED_LAYER_WHY = (
    "its per-example gradient is a sum over calls, whose norm has cross terms between the calls that "
    "one norm per call misses"
)


def _call_counts(model: tf.keras.Model, counts: dict[int, list] | None = None) -> dict[int, list]:
    """{id(layer): [layer, number of calls]} over the model's graph, nested models expanded per call.

    Counts the nodes in `model._nodes_by_depth` (the graph the ghost and fast passes walk), not a
    layer's `_inbound_nodes`, which also hold calls outside this model.
    """
    counts = {} if counts is None else counts
    for nodes in model._nodes_by_depth.values():  # noqa: SLF001
        for node in nodes:
            if node.is_input:
                continue
            if gradient_clipping_utils.has_internal_compute_graph(node.layer):
                _call_counts(node.layer, counts)  # a sub-model called twice runs its layers twice
            else:
                counts.setdefault(id(node.layer), [node.layer, 0])[1] += 1
    return counts


def _shared_layers(model: tf.keras.Model, engine: str) -> str | None:
    """Why `engine` (one norm per layer call, summed) cannot clip a layer with weights called twice."""
    if not gradient_clipping_utils.has_internal_compute_graph(model):
        return None  # no graph to read; the engine's other checks refuse such a model
    shared = [
        (layer, calls)
        for layer, calls in _call_counts(model).values()
        if calls > 1 and layer.trainable_weights
    ]
    if not shared:
        return None
    calls = "; ".join(f"layer {layer.name!r} is called {n} times" for layer, n in shared)
    return f"engine {engine!r} cannot clip a layer called more than once: {calls}: {SHARED_LAYER_WHY}"


# Layers whose training-mode output is random (Dropout covers SpatialDropout1D/2D/3D).
RANDOM_IN_TRAINING = tuple(
    getattr(_L, name)
    for name in (
        "Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise", "RandomBrightness",
        "RandomContrast", "RandomCrop", "RandomFlip", "RandomHeight", "RandomRotation",
        "RandomTranslation", "RandomWidth", "RandomZoom",
    )
    if hasattr(_L, name)
)  # fmt: skip


def _no_graph(model: tf.keras.Model, engine: str) -> str | None:
    """Why `engine`, which walks the model's layer graph, cannot run a model that has none."""
    if gradient_clipping_utils.has_internal_compute_graph(model):
        return None
    return (
        f"engine {engine!r} walks the model's layer graph, which a subclassed model "
        f"({type(model).__name__}) does not have; build it with the functional API or Sequential"
    )


def _fast_unsupported(model: tf.keras.Model) -> str | None:
    no_graph = _no_graph(model, "fast")
    if no_graph:
        return no_graph
    tfp_registry = layer_registry.make_default_layer_registry()
    missing = sorted(
        {
            type(layer).__name__
            for layer in model.layers
            if layer.trainable_weights and not tfp_registry.is_elem(layer)
        }
    )
    if missing:
        return (
            "engine 'fast' needs every trainable layer in TF-Privacy's fast-clipping registry "
            f"(Dense, Embedding); this model has {missing}"
        )
    random = [layer for layer in _sublayers(model) if isinstance(layer, RANDOM_IN_TRAINING)]
    if random:
        # TF-Privacy's norm pass runs the layers without training=True, its summed pass with it (and
        # two passes draw two masks anyway): the summed gradients are not the ones whose norms were bounded
        return (
            "engine 'fast' computes the norms and the clipped sum in two forward passes, the first without "
            "training=True, so a layer random in training gives the sum other gradients than the ones "
            f"whose norms were clipped; this model has {_names(random)}"
        )
    return _shared_layers(model, "fast")


def _ghost_unsupported(model: tf.keras.Model) -> str | None:
    no_graph = _no_graph(model, "ghost")
    if no_graph:
        return no_graph
    missing = registry.unsupported_layers(model)
    if missing:
        known = ", ".join(sorted(t.__name__ for t in registry.LAYER_RULES))
        return f"engine 'ghost' has per-layer clipping rules for {known}; this model has {missing}"
    return _shared_layers(model, "ghost")


@dataclasses.dataclass(frozen=True)
class Engine:
    build: Callable[[tf.keras.Model, LossFn, float], ClippedSumFn]
    unsupported: Callable[[tf.keras.Model], str | None]  # why the engine cannot run a model, or None


ENGINES: dict[str, Engine] = {
    "reference": Engine(reference, lambda model: None),
    "fast": Engine(fast, _fast_unsupported),
    "ghost": Engine(ghost, _ghost_unsupported),
    "vectorized": Engine(vectorized, lambda model: None),
}
AUTO_ORDER = ("ghost", "fast", "vectorized")  # fastest first
assert set(ENGINES) | {"auto"} == set(DP_SGD_ENGINES)


def explain_engine(engine: str, model: tf.keras.Model) -> tuple[str, str | None]:
    """(the engine that will run, why the fastest one does not): `auto` picks the fastest engine that
    supports `model`; when that is not ghost, the reason is ghost's (None otherwise, and for an engine
    named explicitly). Users see why their model runs slower and what to change.

    ValueError (a message for the user) if `dp_refusal` turns the model away, whatever the engine, or if
    the engine named cannot run it.
    """
    if engine != "auto" and engine not in ENGINES:
        raise ValueError(f"unknown DP engine {engine!r}; expected one of {DP_SGD_ENGINES}")
    refusal = dp_refusal(model)
    if refusal:
        raise ValueError(refusal)
    if engine == "auto":
        reasons: dict[str, str] = {}
        for name in AUTO_ORDER:
            reason = ENGINES[name].unsupported(model)
            if reason is None:
                return name, reasons.get(AUTO_ORDER[0])
            reasons[name] = reason
        raise AssertionError("the last engine of AUTO_ORDER runs any model")
    reason = ENGINES[engine].unsupported(model)
    if reason:
        raise ValueError(f"{reason}; use --engine=auto (or vectorized, which runs any model)")
    return engine, None


def resolve_engine(engine: str, model: tf.keras.Model) -> str:
    """The engine that will run (see `explain_engine`)."""
    return explain_engine(engine, model)[0]


def make_clipped_sum_fn(
    engine: str, model: tf.keras.Model, loss_fn: LossFn, l2_norm_clip: float
) -> ClippedSumFn:
    """(x, y) -> list of per-variable sums of per-example gradients clipped to `l2_norm_clip`."""
    return ENGINES[resolve_engine(engine, model)].build(model, loss_fn, l2_norm_clip)
