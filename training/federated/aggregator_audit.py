"""The canary audit of a federated run (the unit is the user, so canaries are users).

* Black box (`--audit_canary_clients=K`): K canary clients, each holding out-of-distribution examples
  (as many as a median client) under one random label, half of them inserted into the population
  (N counts them). Their score is minus the final model's mean loss on their label.
* White box (`--audit_canaries=M`): M canary users whose model update has the real model's
  structure (every trainable tensor) and points along the difference of two coordinates at the same
  offset in two different tensors (`UpdateCanaries`: it also sees noise shared between tensors), run
  through the run's own DP aggregator (the factory `privacy.aggregators` built for the run: same
  clip, noise multiplier, expected clients per round, model tensors) with the run's client sampling,
  for the run's rounds. Score: the sum over rounds of the released aggregate projected on the
  canary's direction. This is the mechanism the accountant analyses, seen by an adversary who sees
  every round's aggregate and knows every other user's update (the other sampled users contribute
  only to one coordinate no canary uses); it is what catches a noise, clipping or sampling bug in the
  aggregation. It does not replay the run's model training: the aggregator is audited, not FedAvg's
  client work (which only post-processes user data before clipping).

Adjacency decides what a left-out canary is when its slot is sampled: absent (Poisson,
add-or-remove), an ordinary user (uniform sampling, replace-one) or a zero update (tree
aggregation, replace-special).
"""

from __future__ import annotations

import numpy as np

from data.clients import ClientPopulation, ExtendedPopulation
from privacy.auditing.canaries import ExampleCanaries, UpdateCanaries, inclusion, poisson_sample
from privacy.config import DpFedAvgConfig
from privacy.randomness import derive_seed
from training.canary_audit import WhiteBoxObserver

ADAPTIVE_CANARY_SCALE = 1e3  # canary updates far above any clip: each adds exactly the round's clip


def insert_canary_clients(
    population: ClientPopulation, num: int, seed: int
) -> tuple[ClientPopulation, ExampleCanaries | None]:
    """The population with the inserted canary clients appended (their ids follow the real ones)."""
    if num == 0:
        return population, None
    if population.task != "classification":
        raise ValueError("--audit_canary_clients needs a classification dataset (scores are label losses)")
    try:
        per_client = max(1, int(np.median(population.client_sizes())))
    except NotImplementedError:  # sizes unknown without reading every client (EMNIST)
        per_client = 20
    canaries = ExampleCanaries.make(
        num, population.input_shape, population.num_classes, seed, per_unit=per_client
    )
    rows = np.flatnonzero(canaries.inserted)
    extra = [
        (canaries.x[i * per_client : (i + 1) * per_client], canaries.y[i * per_client : (i + 1) * per_client])
        for i in rows
    ]
    return ExtendedPopulation(population, extra), canaries


def aggregator_canaries(num: int, dp: DpFedAvgConfig, seed: int, shapes) -> UpdateCanaries:
    """M canary users over the real model's update structure (`shapes`: its trainable tensors)."""
    if dp.client_sampling == "uniform" or dp.aggregator == "tree":
        if num > dp.num_clients:
            raise ValueError(
                f"--audit_canaries={num} exceeds the {dp.num_clients} clients: with fixed-size or once-only "
                "client sampling the canary users take slots of the population"
            )
    return UpdateCanaries.make(num, shapes, float(dp.clip_norm), seed, inclusion(num, seed, 0xD2))


def _factory(dp: DpFedAvgConfig, shapes, noise_seed: int | None):
    import tensorflow as tf
    import tensorflow_federated as tff

    from privacy import aggregators

    if not dp.is_private:  # the mechanism of a non-private run: a plain mean, no clip, no noise
        return tff.aggregators.UnweightedMeanFactory()
    specs = [tf.TensorSpec(s, tf.float32) for s in shapes]
    return aggregators.build_factory(dp, specs, noise_seed=noise_seed)


def _round_records(
    dp: DpFedAvgConfig, canaries: UpdateCanaries, r: int, seed: int, slots: np.ndarray | None
) -> list[list[np.ndarray]]:
    """Round r's sampled users as model updates (a canary's along its direction, others' apart)."""
    from privacy.sampling import sample_clients

    scale = ADAPTIVE_CANARY_SCALE if dp.is_private else 1.0
    other = canaries.other_update()
    if slots is None:  # Poisson: every user, canary or not, joins with probability q on its own
        rng = np.random.default_rng([seed, r, 0xA6])
        sampled = poisson_sample(canaries.inserted, dp.sampling_rate, rng)
        records = [canaries.canary_update(int(i), scale) for i in np.flatnonzero(sampled)]
        return records + [other] * int(rng.binomial(dp.num_clients, dp.sampling_rate))
    records = []
    left_out = canaries.zeros() if dp.aggregator == "tree" else other
    position = {int(s): i for i, s in enumerate(slots)}
    for client in sample_clients(dp, r, seed):
        i = position.get(int(client))
        if i is None:
            records.append(other)
        else:
            records.append(canaries.canary_update(i, scale) if canaries.inserted[i] else left_out)
    return records


def simulate_aggregator(
    dp: DpFedAvgConfig, canaries: UpdateCanaries, rounds: int, seed: int, noise_seed: int | None
) -> WhiteBoxObserver:
    """The white-box scores: `rounds` rounds of the run's aggregator, over the model's real update
    structure (every trainable tensor), with the canary users among the sampled ones.

    Runs in the current TFF execution context (the run's own).
    """
    import tensorflow_federated as tff

    shapes = canaries.shapes
    value_type = tff.types.StructWithPythonType([tff.types.TensorType(np.float32, s) for s in shapes], list)
    # its own stream: an offset of the run's seed could meet the run's noise (tree aggregation's
    # generator steps its seed by the number of tensors every round)
    audit_seed = None if noise_seed is None else derive_seed(noise_seed, "aggregator_audit")
    process = _factory(dp, shapes, audit_seed).create(value_type)
    slots = None
    if dp.client_sampling == "uniform" or dp.aggregator == "tree":
        slots = np.random.default_rng([seed, 0xA7]).permutation(dp.num_clients)[: len(canaries.inserted)]
    observer = WhiteBoxObserver(canaries)
    state = process.initialize()
    for r in range(rounds):
        output = process.next(state, _round_records(dp, canaries, r, seed, slots))
        state = output.state
        observer.add(canaries.observe(output.result))
    return observer
