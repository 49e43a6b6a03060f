"""Client partitions: every example goes to exactly one client, every client gets one."""

from __future__ import annotations

import numpy as np
import pytest

from data import partition


def _labels(n: int = 1000, k: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, n).astype(np.int32)


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert len(allidx) == n
    assert np.array_equal(np.sort(allidx), np.arange(n))
    assert min(len(p) for p in parts) >= 1


def test_iid_balanced_and_deterministic():
    parts = partition.iid(1003, 10, seed=1)
    _assert_exact_cover(parts, 1003)
    assert {len(p) for p in parts} == {100, 101}
    again = partition.iid(1003, 10, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition.iid(1003, 10, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


@pytest.mark.parametrize("alpha", [0.05, 1.0, 100.0])
def test_dirichlet_covers_and_every_client_nonempty(alpha):
    y = _labels(1437)
    parts = partition.dirichlet(y, 300, alpha, seed=0)
    _assert_exact_cover(parts, 1437)


def test_dirichlet_skew_grows_as_alpha_shrinks():
    y = _labels(5000)

    def mean_labels_per_client(alpha):
        parts = partition.dirichlet(y, 100, alpha, seed=3)
        return np.mean([len(np.unique(y[p])) for p in parts])

    skewed, mild = mean_labels_per_client(0.05), mean_labels_per_client(100.0)
    assert skewed < 3 < 9 < mild


def test_dirichlet_rejects_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        partition.dirichlet(_labels(), 10, 0.0)
    with pytest.raises(ValueError, match="num_clients"):
        partition.dirichlet(_labels(50), 51, 1.0)
    with pytest.raises(ValueError, match="integer class labels"):
        partition.dirichlet(np.linspace(0, 1, 100), 10, 1.0)


def test_natural_groups_by_id_and_subsets():
    ids = np.array([5, 3, 5, 9, 3, 3, 9, 7])
    parts = partition.natural(ids)
    _assert_exact_cover(parts, len(ids))
    assert [ids[p][0] for p in parts] == [3, 5, 7, 9]
    assert [len(p) for p in parts] == [3, 2, 1, 2]
    sub = partition.natural(ids, num_clients=2, seed=0)
    assert len(sub) == 2
    with pytest.raises(ValueError, match="only 4 natural clients"):
        partition.natural(ids, num_clients=5)
    with pytest.raises(ValueError, match="client ids"):
        partition.natural(None)


def test_dispatch_and_unknown_kind():
    y = _labels(100)
    assert len(partition.partition("iid", y, 7)) == 7
    with pytest.raises(ValueError, match="unknown partition"):
        partition.partition("by_label", y, 7)
