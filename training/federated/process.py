"""The TFF computations of a federated run: the learning process (FedAvg / FedProx) and its model.

Pure TFF construction, no driver logic: `round_loop` calls `build_process` and runs its rounds.
"""

from __future__ import annotations

from typing import Any

from data.clients import ClientPopulation
from privacy import aggregators
from privacy.config import DpFedAvgConfig
from training.federated.experiment import SERVER_MOMENTUM, FederatedConfig, noise_seed


def loss_and_metrics(task: str):
    import tensorflow as tf

    if task == "classification":
        return (
            tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            lambda: [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return tf.keras.losses.MeanSquaredError(), lambda: []


def build_process(config: FederatedConfig, dp: DpFedAvgConfig, population: ClientPopulation):
    """The TFF learning process (FedAvg or FedProx, weighted or not, DP aggregator or mean)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from models.specs import build_model

    y_dtype = tf.int32 if population.task == "classification" else tf.float32
    input_spec = (
        tf.TensorSpec([None, *population.input_shape], tf.float32),
        tf.TensorSpec([None], y_dtype),
    )
    loss, metrics = loss_and_metrics(population.task)

    def model_fn():
        # a new model per call, from the spec (TFF traces it in its own graphs); the architecture
        # only: a pretrained run's weights are set into the initial state (round_loop.initial_state)
        keras_model = build_model(
            config.model, population.input_shape, population.num_classes, seed=config.seed
        )
        return tff.learning.models.from_keras_model(
            keras_model, loss=loss, input_spec=input_spec, metrics=metrics()
        )

    record_specs = None
    if dp.aggregator == "tree":
        probe = build_model(config.model, population.input_shape, population.num_classes, seed=config.seed)
        record_specs = [tf.TensorSpec(v.shape, v.dtype) for v in probe.trainable_variables]
    aggregator = aggregators.build_factory(dp, record_specs, noise_seed=noise_seed(config))

    opt = tff.learning.optimizers
    client_opt = opt.build_sgdm(learning_rate=config.client_learning_rate)
    server_opt = {
        "sgd": lambda: opt.build_sgdm(learning_rate=config.server_lr),
        "momentum": lambda: opt.build_sgdm(learning_rate=config.server_lr, momentum=SERVER_MOMENTUM),
        # epsilon 1e-3 as in Reddi et al. (2021), "Adaptive Federated Optimization".
        "adam": lambda: opt.build_adam(learning_rate=config.server_lr, epsilon=1e-3),
    }[config.server_optimizer]()
    algorithms = tff.learning.algorithms
    loop = tff.learning.LoopImplementation
    kwargs: dict[str, Any] = dict(
        client_optimizer_fn=client_opt,
        server_optimizer_fn=server_opt,
        # the iterator loop instantiates no reduce function per client (README "Benchmarks")
        loop_implementation=loop.DATASET_ITERATOR
        if config.client_loop == "iterator"
        else loop.DATASET_REDUCE,
    )
    if aggregator is not None:
        kwargs["model_aggregator"] = aggregator
    if config.fedprox_mu > 0:
        kwargs["proximal_strength"] = config.fedprox_mu
        build = (
            algorithms.build_weighted_fed_prox if config.is_weighted else algorithms.build_unweighted_fed_prox
        )
    else:
        build = (
            algorithms.build_weighted_fed_avg if config.is_weighted else algorithms.build_unweighted_fed_avg
        )
    return build(model_fn, **kwargs)
