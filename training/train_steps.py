"""The compiled training steps of the centralized pipeline: non-private, DP-SGD, noise-only.

A DP step is: clipped sum (any engine, `privacy.clipping`) + Gaussian noise (`privacy.noise`, the
one place noise is added), divided by the expected batch size, then the optimizer update.

With white-box gradient canaries (`privacy.auditing.canaries.GradientCanaries`), every step takes a
mask of the canaries sampled into it, adds C * e_k for each to the clipped sum before the noise (they
are examples like any other), and returns what the strongest adversary of DP-SGD's proof sees at the
canaries' coordinates: it observes every noisy update and knows every other example, so it subtracts
their clipped contribution and is left with the canaries' own plus the noise. (Knowing which other
examples were sampled does not weaken a canary's guarantee: under Poisson sampling its own coin is
independent of theirs, and shuffled batches claim no amplification.)
"""

from __future__ import annotations

import numpy as np

from privacy.config import DpSgdConfig


class _CanaryCoordinates:
    """Where the gradient canaries live in the model's variables: adds them, reads them back."""

    def __init__(self, variables, canaries) -> None:
        self.variables, self.canaries = variables, canaries
        self.count = 0 if canaries is None else len(canaries.coordinates)
        # [(variable index, positions in the canary list, flat indices in that variable)]
        self.layout: list[tuple[int, np.ndarray, np.ndarray]] = []
        if canaries is None:
            return
        coordinates = canaries.coordinates
        starts = np.concatenate([[0], np.cumsum([v.shape.num_elements() for v in variables])])
        for i in range(len(variables)):
            positions = np.flatnonzero((coordinates >= starts[i]) & (coordinates < starts[i + 1]))
            if len(positions):
                self.layout.append((i, positions, coordinates[positions] - starts[i]))

    def add(self, sums, mask):
        """sums + C * e_k for each sampled canary k (a scatter into each variable's flat vector)."""
        import tensorflow as tf

        sums = list(sums)
        for i, positions, flat in self.layout:
            values = tf.gather(mask, positions) * self.canaries.norm
            update = tf.scatter_nd(flat[:, None], values, [self.variables[i].shape.num_elements()])
            sums[i] = sums[i] + tf.reshape(update, self.variables[i].shape)
        return sums

    def read(self, grads):
        """The values of `grads` at the canary coordinates, in canary order."""
        import tensorflow as tf

        if not self.layout:
            return tf.zeros([0])
        return tf.concat([tf.gather(tf.reshape(grads[i], [-1]), flat) for i, _, flat in self.layout], axis=0)


def make_train_steps(
    model,
    task: str,
    input_shape,
    label_dtype,
    optimizer,
    dp: DpSgdConfig | None,
    engine: str,
    seed: int | None,
    canaries=None,
):
    """(train_step, noise_only_step or None) as tf.functions; DP when `dp` is given.

    Without canaries: train_step(x, y). With `canaries` (GradientCanaries): train_step(x, y, mask)
    and noise_only_step(mask) return the observed update at the canary coordinates. An empty Poisson
    batch still takes a noise-only step: skipping it would change the mechanism the accountant
    analyses. `seed` None draws the noise generator's state from OS entropy.
    """
    import tensorflow as tf

    from privacy import noise
    from privacy.clipping import make_clipped_sum_fn, per_example_loss

    variables = model.trainable_variables
    loss_fn = per_example_loss(task)
    probe = _CanaryCoordinates(variables, canaries)
    spec = [tf.TensorSpec([None, *input_shape], tf.float32), tf.TensorSpec([None], label_dtype)]
    mask_spec = [tf.TensorSpec([probe.count], tf.float32)] if canaries is not None else []
    if dp is None:

        @tf.function(input_signature=spec + mask_spec)
        def plain_step(x, y, *mask):
            with tf.GradientTape() as tape:
                losses = loss_fn(y, model(x, training=True))
                loss = tf.reduce_sum(losses) if mask else tf.reduce_mean(losses)
            grads = tape.gradient(loss, variables)
            seen = tf.zeros([0])
            if mask:  # canaries are examples too: the mean is over the batch and the sampled canaries
                count = tf.maximum(tf.cast(tf.shape(x)[0], tf.float32) + tf.reduce_sum(mask[0]), 1.0)
                rows = grads
                grads = [s / count for s in probe.add(grads, mask[0])]
                seen = probe.read(grads) - probe.read(rows) / count
            optimizer.apply_gradients(zip(grads, variables))
            return seen

        return plain_step, None

    clipped_sum = make_clipped_sum_fn(engine, model, loss_fn, dp.l2_norm_clip)
    if seed is None:
        noise_gen = tf.random.Generator.from_non_deterministic_state()
    else:
        # the seed as the Philox KEY: streams of different keys are independent, while seeds given
        # to from_seed only offset one key's counter (nearby seeds would share most of their draws)
        noise_gen = tf.random.Generator.from_key_counter(key=seed, counter=[0, 0], alg="philox")
    expected = float(dp.batch_size)

    def apply_noisy(rows, mask):
        sums = probe.add(rows, mask[0]) if mask else rows
        grads = noise.noisy_mean_gradient(sums, dp.noise_multiplier, dp.l2_norm_clip, expected, noise_gen)
        optimizer.apply_gradients(zip(grads, variables))
        return probe.read(grads) - probe.read(rows) / expected  # the canaries' part and the noise

    @tf.function(input_signature=spec + mask_spec)
    def dp_step(x, y, *mask):
        return apply_noisy(clipped_sum(x, y), mask)

    @tf.function(input_signature=mask_spec)
    def noise_only_step(*mask):
        return apply_noisy([tf.zeros_like(v) for v in variables], mask)

    return dp_step, noise_only_step
