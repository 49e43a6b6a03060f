"""Samplers whose behaviour is exactly what the accountant in `accounting.py` assumes.

Poisson: every example (client) joins a step (round) independently with probability q, so
batch sizes vary; empty batches happen and are still a (noise-only) step.
Shuffle: a fresh permutation per epoch cut into fixed-size batches.
Uniform clients: exactly n of N clients without replacement, independently per round.
Epoch order (tree aggregation): each client at most once across the whole run.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from privacy.config import DpFedAvgConfig, DpSgdConfig


def poisson_batches(
    num_examples: int, q: float, steps: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """`steps` index arrays; each index is included independently with probability q."""
    for _ in range(steps):
        yield np.flatnonzero(rng.random(num_examples) < q)


def shuffled_batches(num_examples: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of fixed-size batches from a fresh permutation (the last may be smaller)."""
    perm = rng.permutation(num_examples)
    for start in range(0, num_examples, batch_size):
        yield perm[start : start + batch_size]


def epoch_batches(config: DpSgdConfig, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of batches for the sampling that `config` accounts for."""
    if config.sampling == "poisson":
        yield from poisson_batches(config.num_examples, config.sampling_rate, config.steps_per_epoch, rng)
    else:
        yield from shuffled_batches(config.num_examples, config.batch_size, rng)


def sample_clients(config: DpFedAvgConfig, round_num: int, seed: int | None) -> np.ndarray:
    """Client ids (sorted) for `round_num` (0-based), reproducible from (seed, round).

    Deterministic per round so that a resumed run samples exactly what an uninterrupted
    run would have, and the ledger stays in step with the sampling. `seed` None draws the
    round's sample from OS entropy (each round's sample is independent either way).
    """
    if config.aggregator == "tree":
        if seed is None:
            raise ValueError("tree aggregation's once-only client order needs a seed that survives a resume")
        if (round_num + 1) * config.clients_per_round > config.num_clients:
            raise ValueError(
                "tree aggregation lets each client contribute at most once: round "
                f"{round_num + 1} x {config.clients_per_round} clients exceeds {config.num_clients}"
            )
        order = np.random.default_rng([seed, 0]).permutation(config.num_clients)
        start = round_num * config.clients_per_round
        return np.sort(order[start : start + config.clients_per_round])
    rng = np.random.default_rng(None if seed is None else [seed, round_num + 1])
    if config.client_sampling == "poisson":
        return np.flatnonzero(rng.random(config.num_clients) < config.sampling_rate)
    return np.sort(rng.choice(config.num_clients, size=config.clients_per_round, replace=False))
