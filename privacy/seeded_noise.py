"""DP-FedAvg noise drawn from a seed carried in the aggregator's state: reproducible, never repeated.

TF-Privacy's `GaussianSumQuery` (under TFF's fixed and adaptive DP aggregators) draws its noise with
an unseeded `tf.random_normal_initializer`, so two runs with the same seed differ, and no run can be
reproduced. `SeededNoiseQuery` wraps any such query: its global state carries a counter seed
[run seed, round]; while the wrapped query builds its noise, every Gaussian draw (every tensor of
every initializer) becomes `tf.random.stateless_normal` with a seed folded from that state, the
initializer's index and the call's index, so no two tensors share a stream; the round part
then advances. The noise of round r is therefore a function of (run seed, r): reproducible, different
in every round, and a run resumed from a checkpoint (which saves the state) draws what an
uninterrupted run would have. The distribution is unchanged: N(0, stddev^2) per coordinate, so the
accounting is unchanged. Whoever knows the seed can subtract the noise: a seeded run's guarantee holds
only while its seed stays secret (`--secure_noise` draws it from OS entropy and records nothing).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
import tensorflow_privacy as tfp
from tensorflow_privacy.privacy.dp_query import gaussian_query

SeededState = collections.namedtuple("SeededState", ["inner", "seed"])
_patch_lock = threading.Lock()


class _StatelessTf:
    """`tf` for gaussian_query's module, except that `random_normal_initializer` is stateless."""

    def __init__(self, seed: tf.Tensor) -> None:
        self._seed = seed
        self._draws = itertools.count()

    def __getattr__(self, name: str) -> Any:
        return getattr(tf, name)

    def random_normal_initializer(self, mean: float = 0.0, stddev: float = 1.0, seed: Any = None):
        """An initializer whose every CALL draws from its own stream.

        TF-Privacy's `GaussianSumQuery` builds one initializer and calls it once per tensor of the
        update: a seed fixed per initializer would give every tensor a prefix of the same stream
        (and differences between tensors without noise). The seed is therefore folded from the
        state's seed, the initializer's index and the call's index: one stream per draw.
        """
        del seed  # the state's seed replaces it
        initializer_seed = tf.random.experimental.stateless_fold_in(self._seed, next(self._draws))
        calls = itertools.count()

        def initializer(shape, dtype=tf.float32):
            draw_seed = tf.random.experimental.stateless_fold_in(initializer_seed, next(calls))
            return tf.random.stateless_normal(shape, seed=draw_seed, mean=mean, stddev=stddev, dtype=dtype)

        return initializer


@contextlib.contextmanager
def _stateless_gaussian_noise(seed: tf.Tensor) -> Iterator[None]:
    with _patch_lock:
        real = gaussian_query.tf
        gaussian_query.tf = _StatelessTf(seed)
        try:
            yield
        finally:
            gaussian_query.tf = real


class SeededNoiseQuery(tfp.SumAggregationDPQuery):
    """Wraps a sum-aggregation DP query; its Gaussian noise comes from a seed in the global state."""

    def __init__(self, inner: tfp.SumAggregationDPQuery, seed: int) -> None:
        self._inner = inner
        self._seed = int(seed)

    def initial_global_state(self):
        return SeededState(self._inner.initial_global_state(), tf.constant([self._seed, 0], tf.int64))

    def derive_sample_params(self, global_state):
        return self._inner.derive_sample_params(global_state.inner)

    def initial_sample_state(self, template=None):
        return self._inner.initial_sample_state(template)

    def preprocess_record(self, params, record):
        return self._inner.preprocess_record(params, record)

    def accumulate_preprocessed_record(self, sample_state, preprocessed_record):
        return self._inner.accumulate_preprocessed_record(sample_state, preprocessed_record)

    def merge_sample_states(self, sample_state_1, sample_state_2):
        return self._inner.merge_sample_states(sample_state_1, sample_state_2)

    def get_noised_result(self, sample_state, global_state):
        with _stateless_gaussian_noise(global_state.seed):
            result, inner_state, event = self._inner.get_noised_result(sample_state, global_state.inner)
        next_seed = global_state.seed + tf.constant([0, 1], tf.int64)
        return result, SeededState(inner_state, next_seed), event

    def derive_metrics(self, global_state):
        return self._inner.derive_metrics(global_state.inner)
