"""The private search's space and its training/validation split: what both sides of the search share.

`training/tuning.py` (the search) and `training/federated/search.py` (its DP-FedAvg side) sample
configurations from a space defined here, before any data is seen, and split records (or users) by a
keyed hash so that adding or removing one never moves another.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from data.datasets import Dataset

SEARCH_SEED_SALT = 0x7E5  # K, the configurations and the score noise: apart from init and DP noise


class SpaceSampling:
    """Checks and uniform sampling shared by the search spaces (fields: tuples of values > 0)."""

    OPTIONAL: tuple[str, ...] = ()  # fields that may be empty (then not searched)

    def __post_init__(self) -> None:
        for name, values in dataclasses.asdict(self).items():
            if not values and name not in self.OPTIONAL:
                raise ValueError(f"the search space is empty: give at least one value for {name}")
            if any(not (v > 0) for v in values):
                raise ValueError(f"every {name} in the search space must be > 0, got {list(values)}")

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One configuration, each value uniform and independent (before any data is seen)."""
        space = {name: values for name, values in dataclasses.asdict(self).items() if values}
        return {name: values[int(rng.integers(len(values)))] for name, values in space.items()}


@dataclasses.dataclass(frozen=True)
class SearchSpace(SpaceSampling):
    """The centralized (DP-SGD) search space."""

    OPTIONAL = ("width",)
    learning_rate: tuple[float, ...] = (0.05, 0.1)
    l2_norm_clip: tuple[float, ...] = (1.0,)
    batch_size: tuple[int, ...] = (1024,)
    epochs: tuple[int, ...] = (200,)
    width: tuple[int, ...] = (64, 128)  # MLP hidden units (mlp only; empty for other models)


def in_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Each record's side, decided by a keyed hash of the record alone (Bernoulli(fraction)).

    Adding or removing one record never moves another between training and validation, which the
    add/remove accounting of the two parts needs (a seeded permutation of all N would not do that)."""
    key = seed.to_bytes(8, "little", signed=True) + SEARCH_SEED_SALT.to_bytes(4, "little")
    rows = np.ascontiguousarray(x.reshape(len(x), -1))
    labels = np.ascontiguousarray(y)
    digests = [
        hashlib.blake2b(rows[i].tobytes() + labels[i].tobytes(), digest_size=8, key=key).digest()
        for i in range(len(rows))
    ]
    return np.array([int.from_bytes(d, "little") / 2**64 < fraction for d in digests], dtype=bool)


def split_validation(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, tuple]:
    """(training part as a Dataset whose test arrays are the validation split, validation arrays)."""
    val = in_validation(dataset.x_train, dataset.y_train, fraction, seed)
    if val.sum() < 1 or (~val).sum() < 2:
        raise ValueError(
            f"validation_fraction {fraction} leaves no validation or no training data (N={dataset.num_train})"
        )
    x_val, y_val = dataset.x_train[val], dataset.y_train[val]
    part = dataclasses.replace(
        dataset, x_train=dataset.x_train[~val], y_train=dataset.y_train[~val], x_test=x_val, y_test=y_val,
        client_ids=None,
    )  # fmt: skip
    return part, (x_val, y_val)
