"""The EMNIST-shaped synthetic population: its shape, its long tail, and that it is generated lazily."""

from __future__ import annotations

import numpy as np

from data.synthetic_emnist import NUM_CLASSES, SyntheticEmnistPopulation


def test_shape_of_federated_emnist():
    pop = SyntheticEmnistPopulation()
    sizes = pop.client_sizes()
    assert pop.num_clients == 3400 and pop.input_shape == (28, 28, 1) and pop.num_classes == NUM_CLASSES == 62
    assert 180 <= sizes.mean() <= 220 and sizes.min() >= 10 and sizes.max() <= 1000
    assert sizes.max() > 4 * np.median(sizes)  # long-tailed, like real writers
    assert pop.client_indices == []  # nothing held in memory but the test set
    x, y = pop.client_examples(7)
    assert x.shape == (sizes[7], 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert np.array_equal(x, pop.client_examples(7)[0])  # a writer is a function of (seed, writer)
    assert set(np.unique(pop.y_test)) == set(range(NUM_CLASSES))


def test_writers_are_non_iid_and_classes_are_learnable():
    pop = SyntheticEmnistPopulation(num_clients=50)
    a, b = (np.bincount(pop.client_examples(c)[1], minlength=NUM_CLASSES) for c in (0, 1))
    assert np.abs(a / a.sum() - b / b.sum()).sum() > 0.5  # different label mixes
    # nearest class prototype already separates most test images: the classes carry signal
    flat = pop.prototypes.reshape(NUM_CLASSES, -1)
    guess = np.argmin(((pop.x_test.reshape(len(pop.x_test), 1, -1) - flat) ** 2).sum(-1), axis=1)
    assert (guess == pop.y_test).mean() > 0.3
