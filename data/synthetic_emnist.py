"""A population shaped like federated EMNIST, generated offline: for benchmarks and tests at real scale.

3,400 writers, 28x28x1 images, 62 classes, long-tailed client sizes (log-normal, mean about 200,
from 10 to 1,000): the shape of TFF's federated EMNIST (3,383 writers, mean 226 examples) without
its 1.3 GB download. Each writer's examples are generated when a round asks for them, from
(seed, writer), so 680,000 images never sit in memory at once. An image is its class's smooth
prototype, shifted and scaled by the writer's style, plus pixel noise: learnable, and non-IID across
writers (each writer draws labels from its own Dirichlet(0.3) mix over the 62 classes). Not a
substitute for real data: use it to measure speed and memory, not accuracy.
"""

from __future__ import annotations

import numpy as np

from data.clients import ClientPopulation

NUM_WRITERS, NUM_CLASSES, MEAN_SIZE, SHAPE = 3400, 62, 200, (28, 28, 1)
MIN_SIZE, MAX_SIZE, SIZE_SIGMA, LABEL_ALPHA, TEST_SIZE = 10, 1000, 0.8, 0.3, 2000


def _prototypes(rng: np.random.Generator) -> np.ndarray:
    """62 smooth 28x28 patterns in [0, 1] (low-frequency random fields, one per class)."""
    coarse = rng.random((NUM_CLASSES, 7, 7))
    fine = np.kron(coarse, np.ones((4, 4)))  # 28x28 blocks
    kernel = np.ones(5) / 5  # separable box blur: smooth strokes
    fine = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, fine)
    fine = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 2, fine)
    lo, hi = fine.min(axis=(1, 2), keepdims=True), fine.max(axis=(1, 2), keepdims=True)
    return ((fine - lo) / (hi - lo)).astype(np.float32)


class SyntheticEmnistPopulation(ClientPopulation):
    """EMNIST-shaped writers generated on demand (see the module docstring)."""

    def __init__(self, num_clients: int = NUM_WRITERS, seed: int = 0) -> None:
        if num_clients < 1:
            raise ValueError(f"synthetic_emnist needs at least one client, got {num_clients}")
        rng = np.random.default_rng([seed, 0xE3])
        self.seed, self.name, self.num_classes = seed, "synthetic_emnist", NUM_CLASSES
        self.prototypes = _prototypes(rng)
        mu = np.log(MEAN_SIZE) - SIZE_SIGMA**2 / 2  # log-normal with mean MEAN_SIZE
        sizes = np.round(rng.lognormal(mu, SIZE_SIGMA, num_clients)).astype(int)
        self._sizes = np.clip(sizes, MIN_SIZE, MAX_SIZE)
        self.client_indices = []  # examples are generated per writer, not held in memory
        self.local_dp_report: dict | None = None
        held_out = [self._writer(k, TEST_SIZE // 20, uniform_labels=True) for k in range(20)]
        self.x_test = np.concatenate([x for x, _ in held_out])  # 20 writers outside the population
        self.y_test = np.concatenate([y for _, y in held_out])

    @property
    def num_clients(self) -> int:
        return len(self._sizes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return SHAPE

    def client_sizes(self) -> np.ndarray:
        return self._sizes.copy()

    def client_examples(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        return self._writer(client, int(self._sizes[client]))

    def _writer(self, writer: int, n: int, uniform_labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
        # the population's writers and the 20 test writers draw from separate streams
        rng = np.random.default_rng([self.seed, 0xE5 if uniform_labels else 0xE4, writer])
        mix = (
            np.full(NUM_CLASSES, 1 / NUM_CLASSES)
            if uniform_labels
            else rng.dirichlet([LABEL_ALPHA] * NUM_CLASSES)
        )
        y = rng.choice(NUM_CLASSES, size=n, p=mix).astype(np.int32)
        shift = rng.integers(-2, 3, size=2)  # the writer's style: an offset, a stroke weight
        scale = rng.uniform(0.7, 1.0)
        x = np.roll(self.prototypes[y], tuple(shift), axis=(1, 2)) * scale
        x = x + rng.normal(0.0, 0.15, size=x.shape).astype(np.float32)
        return np.clip(x, 0.0, 1.0).astype(np.float32)[..., None], y
