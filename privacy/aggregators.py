"""DpFedAvgConfig -> TFF aggregation factory (user-level DP-FedAvg).

All three DP factories are TFF's `DifferentiallyPrivateFactory` over the queries TFF's own
`gaussian_fixed` / `gaussian_adaptive` / `tree_aggregation` build; they clip each client's
model update to L2 norm C, sum, add Gaussian noise and divide by the *expected* number
of clients per round (a fixed denominator, which is what makes Poisson sampling and
noise-only rounds with zero clients correct). They are unweighted, so a run that uses them
must build an unweighted FedAvg.

Settings TFF would reject deep inside are checked here first (`check_settings`), with a
message that says which flag to change.

Adaptive clipping and accounting: TFF's `gaussian_adaptive(noise_multiplier=z, ...)`
releases two Gaussian queries per round, the clipped update sum (sensitivity C, noise
multiplier z_v) and the clipped-count of clients under the clip (sensitivity 1/2, stddev
sigma_c, i.e. noise multiplier z_c = 2 sigma_c). TFF picks z_v so that the pair is exactly
as private as ONE Gaussian mechanism with multiplier z:
    z**-2 = z_v**-2 + z_c**-2   =>   z_v = (z**-2 - (2 sigma_c)**-2) ** -1/2 > z.
So the accountant must use z, the `noise_multiplier` of the config (which is what the
config passes to both TFF and `privacy.accounting`), NOT the larger value noise z_v that the
updates actually receive; `adaptive_noise_split` reports both.
"""

from __future__ import annotations

import math

from privacy.config import DpFedAvgConfig

ADAPTIVE_CLIP_LEARNING_RATE = 0.2  # TFF's default geometric update rate for the clip


def default_clipped_count_stddev(config: DpFedAvgConfig) -> float:
    """TFF's default: 0.05 x expected clients per round."""
    return 0.05 * config.clients_per_round


def adaptive_noise_split(config: DpFedAvgConfig) -> tuple[float, float]:
    """(value noise multiplier z_v, clipped-count stddev) that TFF uses for total noise z."""
    z = config.noise_multiplier
    stddev = config.clipped_count_stddev
    if stddev is None:
        stddev = default_clipped_count_stddev(config)
    if z == 0:
        return 0.0, stddev
    return (z**-2 - (2 * stddev) ** -2) ** -0.5, stddev


def check_settings(config: DpFedAvgConfig) -> None:
    """Raises ValueError (saying what to change) for settings TFF's factories cannot satisfy."""
    if config.aggregator != "adaptive" or config.noise_multiplier == 0:
        return
    z = config.noise_multiplier
    if config.clipped_count_stddev is not None:
        if config.clipped_count_stddev <= 0:
            raise ValueError("--clipped_count_stddev must be > 0")
        if z >= 2 * config.clipped_count_stddev:
            raise ValueError(
                f"adaptive clipping with noise_multiplier {z:.4g} needs clipped_count_stddev > "
                f"{z / 2:.4g} (noise_multiplier / 2), got {config.clipped_count_stddev:.4g}; raise "
                "--clipped_count_stddev, or lower the noise (--noise_multiplier / a larger --target_epsilon)"
            )
        return
    stddev = default_clipped_count_stddev(config)
    if z >= 2 * stddev:
        need = math.floor(z / 0.1) + 1  # smallest clients_per_round with 2 * 0.05 * n > z
        raise ValueError(
            f"adaptive clipping with noise_multiplier {z:.4g} needs clipped-count noise stddev > "
            f"{z / 2:.4g}; the default stddev is 0.05 x clients_per_round = {stddev:.4g}. Use "
            f"--clients_per_round >= {need} (with --num_clients >= that), or pass "
            f"--clipped_count_stddev > {z / 2:.4g} "
            f"(e.g. --clipped_count_stddev={z:.3g}), or use --aggregator=fixed"
        )


def build_factory(config: DpFedAvgConfig, record_specs=None, noise_seed: int | None = None):
    """The unweighted TFF aggregation factory for `config` (None for aggregator 'none').

    The queries are the ones TFF's `gaussian_fixed` / `gaussian_adaptive` build; with `noise_seed`
    their noise comes from that seed (`privacy.seeded_noise`: reproducible, different every round),
    without it from TF's unseeded generator. `record_specs` (the trainable variables'
    `tf.TensorSpec`s) is needed by tree aggregation, whose own generator takes `noise_seed`.
    """
    if not config.is_private:
        return None
    check_settings(config)
    import tensorflow_federated as tff
    import tensorflow_privacy as tfp

    dpf = tff.aggregators.DifferentiallyPrivateFactory
    z, n, clip = float(config.noise_multiplier), float(config.clients_per_round), float(config.clip_norm)
    if config.aggregator == "tree":
        if record_specs is None:
            raise ValueError("tree aggregation needs record_specs (the model's trainable variable specs)")
        return dpf.tree_aggregation(
            noise_multiplier=z,
            clients_per_round=n,
            l2_norm_clip=clip,
            record_specs=list(record_specs),
            noise_seed=noise_seed,
        )
    if config.aggregator == "fixed":
        query = tfp.GaussianSumQuery(l2_norm_clip=clip, stddev=clip * z)
    elif config.aggregator == "adaptive":
        z_values, stddev = adaptive_noise_split(config)
        query = tfp.QuantileAdaptiveClipSumQuery(
            initial_l2_norm_clip=clip,
            noise_multiplier=z_values,
            target_unclipped_quantile=config.target_unclipped_quantile,
            learning_rate=ADAPTIVE_CLIP_LEARNING_RATE,
            clipped_count_stddev=float(stddev),
            expected_num_records=n,
            geometric_update=True,
        )
    else:
        raise ValueError(f"unknown aggregator {config.aggregator!r}")
    query = tfp.NormalizedQuery(query, denominator=n)
    if noise_seed is not None:
        from privacy.seeded_noise import SeededNoiseQuery

        query = SeededNoiseQuery(query, noise_seed)
    return dpf(query)
