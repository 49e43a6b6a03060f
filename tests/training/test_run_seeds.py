"""Runs released together never share a noise stream (review defect 7).

The comparison gave every target epsilon the same seed, so two DP arms drew the same standard-normal
noise at two scales (their first updates gave the noise away by subtraction), and the search's trial
0 at seed 0 shared the central_dp arms' stream. Every run's noise and sampling seed is now derived
from (seed, pipeline, run identity).
"""

from __future__ import annotations

import numpy as np

from privacy.private_selection import RunsDistribution
from privacy.randomness import derive_seed
from training import centralized
from training.comparison import ComparisonConfig, arm_grid
from training.comparison.arms import pipeline_config
from training.federated.experiment import noise_seed as federated_noise_seed
from training.tuning import DEFAULT_RUNS, TuningConfig, trial_run_id


def _noise_seed(cfg) -> int:
    if isinstance(cfg, centralized.CentralizedConfig):
        return centralized.noise_seed(cfg)
    return federated_noise_seed(cfg)


def test_every_arm_of_a_comparison_has_its_own_noise_seed():
    config = ComparisonConfig(
        arms=("central_nondp", "central_dp", "fed_nondp", "fed_dp", "fed_dp_example"), seeds=(0, 1)
    )
    configs = [pipeline_config(spec, config, 1437, "/tmp/unused") for spec in arm_grid(config)]
    seeds = [_noise_seed(c) for c in configs]
    assert len(set(seeds)) == len(seeds) == 2 * (1 + 3 + 1 + 3 + 3)
    assert not {0, 1} & set(seeds)  # never the user's bare seed (the public default is 0)
    dp_targets = [c for c in configs if isinstance(c, centralized.CentralizedConfig) and c.dp]
    assert len({c.seed for c in dp_targets}) == 2  # the split and initial model still follow --seed


def test_search_trials_have_their_own_streams_apart_from_the_arms():
    search = TuningConfig(target_epsilon=3.0, runs=RunsDistribution(*DEFAULT_RUNS), run_id="central_dp_tuned")
    trials = [
        centralized.noise_seed(centralized.CentralizedConfig(seed=0, run_id=trial_run_id(search, i)))
        for i in range(5)
    ]
    arms = [centralized.noise_seed(centralized.CentralizedConfig(seed=0, run_id=f"central_dp_eps{e}_seed0"))
            for e in (1, 3, 8)]  # fmt: skip
    plain = centralized.noise_seed(centralized.CentralizedConfig(seed=0))
    assert len(set(trials) | set(arms) | {plain}) == 9


def test_derived_seeds_fit_tf_and_numpy_and_differ_by_identity():
    import tensorflow as tf

    values = {derive_seed(s, "centralized", name) for s in range(20) for name in ("", "a", "b", "a/b")}
    assert len(values) == 80 and all(0 <= v < 2**62 for v in values)
    assert derive_seed(3, "x") == derive_seed(3, "x") != derive_seed(3, "y")
    seed = max(values)
    tf.random.Generator.from_seed(seed + 7919).normal([2])  # the offsets the pipelines add still fit
    np.random.default_rng(seed).random()
