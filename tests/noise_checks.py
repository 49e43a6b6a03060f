"""Checks that DP noise over a model's multi-tensor update is i.i.d. N(0, stddev^2) per coordinate.

A noise path that reuses one random stream for several tensors (or several rounds) adds the same
values twice: the difference of two such coordinates is then noise-free. These checks see that on
the real update structure (kernels and biases), where a single-tensor test cannot:
- repeats: a value that occurs again anywhere else in the same draw is a reused stream (independent
  float32 normals collide about once in 10^4 values, reuse gives 10^3), and so is a value equal to
  the one at the same position in the previous draw;
- aligned prefixes: tensor j's flat noise equal to tensor i's first values at any position;
- correlation over repeated draws between coordinates of different tensors (aligned positions and
  random pairs), which must be ~0;
- each tensor's and each coordinate's stddev, which must be the calibrated one.
"""

from __future__ import annotations

import numpy as np


def _flat(draw: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(t, np.float64).ravel() for t in draw])


def repeated_share(values: np.ndarray) -> float:
    """The share of values that occur more than once."""
    _, counts = np.unique(np.asarray(values, np.float32), return_counts=True)
    return float(counts[counts > 1].sum()) / values.size


def assert_independent_noise(
    draws: list[list[np.ndarray]], stddev: float, check_std_per_draw: bool = True, rel: float = 0.05
) -> None:
    """`draws[r][i]`: the noise of draw r (a round, a step) in tensor i of the update."""
    assert len(draws) >= 10 and len(draws[0]) >= 2, "need repeated draws of a multi-tensor update"
    flat = np.stack([_flat(d) for d in draws])  # [R, D]
    num_draws, dim = flat.shape
    # 1. no stream reused within a draw or across draws
    # independent float32 normals: about D * 2.5e-8 of D values collide by chance; allow 4x that
    chance = 2e-3 + 1e-7 * dim
    for r in range(num_draws):
        assert repeated_share(flat[r]) < chance, f"draw {r}: {repeated_share(flat[r]):.1%} of values repeat"
    for r in range(1, num_draws):  # a stream replayed in a later draw lines up with the earlier one
        same = int(np.sum(flat[r].astype(np.float32) == flat[r - 1].astype(np.float32)))
        # independent float32 draws coincide at a position about once in 10^7 (seen once in CI over
        # 24 x 9,610 pairs); a replayed stream coincides everywhere
        assert same <= 2, f"draws {r - 1} and {r} share {same} aligned noise values"
    # 2. no tensor's noise is (a prefix of) another tensor's
    for r in (0, num_draws - 1):
        tensors = [np.asarray(t, np.float32).ravel() for t in draws[r]]
        for i in range(len(tensors)):
            for j in range(i + 1, len(tensors)):
                k = min(tensors[i].size, tensors[j].size)
                same = int(np.sum(tensors[i][:k] == tensors[j][:k]))
                assert same <= 2, f"draw {r}: tensors {i} and {j} share {same} of {k} aligned noise values"
    # 3. coordinates of different tensors are uncorrelated over the draws
    centred = flat - flat.mean(axis=0)
    scale = np.sqrt((centred**2).sum(axis=0))
    starts = np.concatenate([[0], np.cumsum([np.asarray(t).size for t in draws[0]])])
    pairs = []
    for i in range(len(starts) - 1):
        for j in range(i + 1, len(starts) - 1):
            k = min(starts[i + 1] - starts[i], starts[j + 1] - starts[j])
            pairs.append(np.stack([starts[i] + np.arange(k), starts[j] + np.arange(k)], axis=1))
    rng = np.random.default_rng(0)
    random_pairs = rng.integers(0, dim, size=(20_000, 2))
    pairs.append(random_pairs[random_pairs[:, 0] != random_pairs[:, 1]])
    a, b = np.concatenate(pairs).T
    corr = (centred[:, a] * centred[:, b]).sum(axis=0) / (scale[a] * scale[b])
    sd = 1 / np.sqrt(num_draws - 1)  # of one sample correlation of independent coordinates
    assert np.max(np.abs(corr)) < min(0.95, 7 * sd), f"max |correlation| {np.max(np.abs(corr)):.3f}"
    assert abs(corr.mean()) < 6 * sd / np.sqrt(corr.size) + 0.02, f"mean correlation {corr.mean():.4f}"
    # 4. the calibrated stddev, per tensor and per coordinate
    used = flat if check_std_per_draw else flat[:1]
    for i in range(len(starts) - 1):
        part = used[:, starts[i] : starts[i + 1]]
        tol = max(rel, 6 / np.sqrt(2 * part.size))
        assert abs(part.std() / stddev - 1) < tol, (
            f"tensor {i}: stddev {part.std():.5g}, calibrated {stddev:.5g}"
        )
    if check_std_per_draw:
        per_coordinate = flat.var(axis=0, ddof=1)
        assert abs(np.sqrt(per_coordinate.mean()) / stddev - 1) < rel
        assert abs(flat.mean()) < 6 * stddev / np.sqrt(flat.size)
