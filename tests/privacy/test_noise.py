"""The one place noise is added: N(0, (zC)^2) on the clipped sum, over the expected batch size."""

import numpy as np
import pytest
import tensorflow as tf

from privacy import noise


def test_noise_has_calibrated_variance():
    z, c, b = 1.3, 0.7, 64.0
    gen = tf.random.Generator.from_seed(0)
    zeros = [tf.zeros([200, 100]), tf.zeros([300])]
    out = noise.noisy_mean_gradient(zeros, z, c, b, gen)
    sample = np.concatenate([o.numpy().ravel() for o in out])
    expected_std = z * c / b
    n = sample.size
    assert abs(sample.mean()) < 5 * expected_std / np.sqrt(n)
    # sample variance of 20,300 normals: relative sd ~ sqrt(2/n) ~ 1%
    assert sample.std() == pytest.approx(expected_std, rel=0.05)
