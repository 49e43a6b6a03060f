"""The canary audit of a federated run (the unit is the user, so canaries are users).

* Black box (`--audit_canary_clients=K`): K canary clients, each holding out-of-distribution examples
  (as many as a median client) under one random label, half of them inserted into the population
  (N counts them). Their score is minus the final model's mean loss on their label.
* White box (`--audit_canaries=M`): M canary users whose model update is a Dirac vector (one
  coordinate each), run through the run's own DP aggregator (the factory `privacy.aggregators` built
  for the run: same clip, noise multiplier, expected clients per round) with the run's client
  sampling, for the run's rounds. Score: the sum over rounds of the released aggregate at the
  canary's coordinate. This is the mechanism the accountant analyses, seen by an adversary who sees
  every round's aggregate and knows every other user's update (the other sampled users contribute
  only to one separate coordinate); it is what catches a noise, clipping or sampling bug in the
  aggregation. It does not replay the run's model training: the aggregator is audited, not FedAvg's
  client work (which only post-processes user data before clipping).

Adjacency decides what a left-out canary is when its slot is sampled: absent (Poisson,
add-or-remove), an ordinary user (uniform sampling, replace-one) or a zero update (tree
aggregation, replace-special).
"""

from __future__ import annotations

import numpy as np

from data.clients import ClientPopulation, ExtendedPopulation
from privacy.auditing.canaries import ExampleCanaries, GradientCanaries, inclusion
from privacy.config import DpFedAvgConfig
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


def aggregator_canaries(num: int, dp: DpFedAvgConfig, seed: int) -> GradientCanaries:
    """M Dirac canary users on coordinates 0..M-1 (coordinate M carries every other user's update)."""
    if dp.client_sampling == "uniform" or dp.aggregator == "tree":
        if num > dp.num_clients:
            raise ValueError(
                f"--audit_canaries={num} exceeds the {dp.num_clients} clients: with fixed-size or once-only "
                "client sampling the canary users take slots of the population"
            )
    return GradientCanaries(np.arange(num), inclusion(num, seed, 0xD2), float(dp.clip_norm), seed)


def _factory(dp: DpFedAvgConfig, dim: int, noise_seed: int | None):
    import tensorflow as tf
    import tensorflow_federated as tff

    from privacy import aggregators

    if not dp.is_private:  # the mechanism of a non-private run: a plain mean, no clip, no noise
        return tff.aggregators.UnweightedMeanFactory()
    return aggregators.build_factory(dp, [tf.TensorSpec([dim], tf.float32)], noise_seed=noise_seed)


def _round_records(
    dp: DpFedAvgConfig, canaries: GradientCanaries, r: int, seed: int, slots: np.ndarray | None
) -> list[np.ndarray]:
    """Round r's sampled users as update vectors (a canary's at its coordinate, others' at the last)."""
    from privacy.sampling import sample_clients

    m = len(canaries.inserted)
    scale = ADAPTIVE_CANARY_SCALE if dp.is_private else 1.0
    other = np.zeros(m + 1, np.float32)
    other[m] = dp.clip_norm

    def canary(i: int) -> np.ndarray:
        v = np.zeros(m + 1, np.float32)
        v[i] = dp.clip_norm * scale
        return v

    if slots is None:  # Poisson: every user, canary or not, joins with probability q on its own
        rng = np.random.default_rng([seed, r, 0xA6])
        sampled = canaries.sample(dp.sampling_rate, rng)
        records = [canary(int(i)) for i in np.flatnonzero(sampled)]
        return records + [other] * int(rng.binomial(dp.num_clients, dp.sampling_rate))
    records = []
    left_out = np.zeros(m + 1, np.float32) if dp.aggregator == "tree" else other
    position = {int(s): i for i, s in enumerate(slots)}
    for client in sample_clients(dp, r, seed):
        i = position.get(int(client))
        if i is None:
            records.append(other)
        else:
            records.append(canary(i) if canaries.inserted[i] else left_out)
    return records


def simulate_aggregator(
    dp: DpFedAvgConfig, canaries: GradientCanaries, rounds: int, seed: int, noise_seed: int | None
) -> WhiteBoxObserver:
    """The white-box scores: `rounds` rounds of the run's aggregator over the canary users.

    Runs in the current TFF execution context (the run's own).
    """
    import tensorflow_federated as tff

    m = len(canaries.inserted)
    value_type = tff.types.StructWithPythonType([tff.types.TensorType(np.float32, [m + 1])], list)
    process = _factory(dp, m + 1, None if noise_seed is None else noise_seed + 0xA6).create(value_type)
    slots = None
    if dp.client_sampling == "uniform" or dp.aggregator == "tree":
        slots = np.random.default_rng([seed, 0xA7]).permutation(dp.num_clients)[:m]
    observer = WhiteBoxObserver(canaries)
    state = process.initialize()
    for r in range(rounds):
        output = process.next(state, [[v] for v in _round_records(dp, canaries, r, seed, slots)])
        state = output.state
        observer.add(np.asarray(output.result[0])[:m])
    return observer
