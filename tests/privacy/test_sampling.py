"""The samplers do what the accountant assumes."""

import numpy as np
import pytest
from scipy import stats

from privacy import sampling
from privacy.config import DpFedAvgConfig, DpSgdConfig


def test_poisson_batch_sizes_are_binomial():
    n, q, steps = 2000, 0.05, 4000
    sizes = np.array([len(b) for b in sampling.poisson_batches(n, q, steps, np.random.default_rng(0))])
    assert abs(sizes.mean() - n * q) < 5 * np.sqrt(n * q * (1 - q) / steps)
    assert sizes.var() == pytest.approx(n * q * (1 - q), rel=0.1)
    # Whole distribution: chi-square goodness of fit against Binomial(n, q) on central bins.
    values, counts = np.unique(sizes, return_counts=True)
    keep = (values >= 80) & (values <= 120)
    expected = stats.binom.pmf(values[keep], n, q) * steps
    chi2 = ((counts[keep] - expected) ** 2 / expected).sum()
    assert chi2 < stats.chi2.ppf(0.999, keep.sum() - 1)


def test_poisson_inclusion_is_independent_per_example():
    n, q, steps = 50, 0.2, 20_000
    counts = np.zeros(n)
    both = 0
    for b in sampling.poisson_batches(n, q, steps, np.random.default_rng(1)):
        counts[b] += 1
        both += (0 in b) and (1 in b)
    rates = counts / steps
    assert np.all(np.abs(rates - q) < 5 * np.sqrt(q * (1 - q) / steps))
    assert abs(both / steps - q * q) < 5 * np.sqrt(q * q / steps)


def test_shuffled_epoch_covers_each_example_once():
    cfg = DpSgdConfig(num_examples=103, batch_size=10, epochs=1, noise_multiplier=1.0, sampling="shuffle")
    batches = list(sampling.epoch_batches(cfg, np.random.default_rng(0)))
    assert len(batches) == cfg.steps_per_epoch == 11
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))


def test_client_sampling_is_deterministic_per_round_and_matches_mode():
    cfg = DpFedAvgConfig(num_clients=1000, clients_per_round=50, rounds=10, noise_multiplier=1.0,
                         client_sampling="uniform")  # fmt: skip
    a = sampling.sample_clients(cfg, 3, seed=7)
    assert np.array_equal(a, sampling.sample_clients(cfg, 3, seed=7)) and len(set(a)) == 50
    assert not np.array_equal(a, sampling.sample_clients(cfg, 4, seed=7))
    poisson = cfg.replace(client_sampling="poisson")
    sizes = [len(sampling.sample_clients(poisson, r, seed=0)) for r in range(400)]
    assert abs(np.mean(sizes) - 50) < 5 * np.sqrt(50 / 400) and np.std(sizes) > 3
    tree = DpFedAvgConfig(
        num_clients=100, clients_per_round=10, rounds=10, noise_multiplier=1.0, aggregator="tree"
    )
    seen = np.concatenate([sampling.sample_clients(tree, r, seed=0) for r in range(10)])
    assert sorted(seen.tolist()) == list(range(100))  # each client at most (here: exactly) once
