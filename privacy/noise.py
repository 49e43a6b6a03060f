"""The one place DP-SGD adds noise, whatever engine produced the clipped sum.

N(0, (z C)^2 I) is added to the sum of clipped per-example gradients, which is then divided by
the *expected* batch size: a data-independent denominator, as the Poisson analysis requires (the
realized batch size would leak whether an example was sampled). The engine cannot change the
guarantee, because no engine adds noise.
"""

from __future__ import annotations

import tensorflow as tf


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
