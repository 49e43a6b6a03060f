"""Federated EMNIST through TFF's loader: one client per writer, read from sqlite one writer at a time."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from data.clients import ClientPopulation
from data.datasets import DatasetError
from data.file_checks import regular_file

EMNIST_FILE = "emnist_all.sqlite"


class EmnistPopulation(ClientPopulation):
    """Federated EMNIST: one client per writer, read from TFF's sqlite one writer at a time."""

    def __init__(self, train_client_data, client_ids: Sequence[str], x_test, y_test, num_classes: int):
        self._train = train_client_data
        self.client_ids = list(client_ids)
        self.name = "emnist"
        self.x_test, self.y_test = x_test, y_test
        self.num_classes = num_classes
        self.local_dp_report: dict | None = None  # set when records were perturbed (local DP)
        self.client_indices = []  # examples live in sqlite, not in memory

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (28, 28, 1)

    def client_sizes(self) -> np.ndarray:
        raise NotImplementedError("EMNIST client sizes are not known without reading every writer")

    def client_examples(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        return _emnist_arrays(self._train.create_tf_dataset_for_client(self.client_ids[client]))


def _emnist_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    """OrderedDict(label, pixels) elements -> (x, y), with ink = 1 as in the other image sets."""
    xs, ys = [], []
    for batch in ds.batch(4096).as_numpy_iterator():
        xs.append(1.0 - batch["pixels"].astype(np.float32))  # TFF's EMNIST has background = 1
        ys.append(batch["label"].astype(np.int32))
    if not xs:
        return np.zeros((0, 28, 28, 1), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(xs)[..., None], np.concatenate(ys)


def load_emnist(
    cache_dir: str | None,
    *,
    only_digits: bool = True,
    num_clients: int = 0,
    seed: int = 0,
    download: bool = False,
) -> EmnistPopulation:
    """TFF's federated EMNIST from `cache_dir/emnist_all.sqlite` (natural partition by writer).

    Without `download`, a missing file is a clear error instead of a silent 1.3 GB fetch.
    `num_clients` = 0 keeps every writer; fewer picks a seeded random subset. The test set is
    the union of all writers' test examples (held-out data for central evaluation).
    """
    if not cache_dir:
        raise DatasetError("dataset 'emnist' needs --data_dir (the folder for emnist_all.sqlite)")
    path = os.path.join(cache_dir, EMNIST_FILE)
    if not os.path.exists(path) and not download:
        raise DatasetError(f"federated EMNIST file not found: {path} (or pass --download to fetch it)")
    if os.path.exists(path):
        regular_file(path, "federated EMNIST file")  # sqlite would block on a FIFO
    import tensorflow_federated as tff

    try:
        train, test = tff.simulation.datasets.emnist.load_data(only_digits=only_digits, cache_dir=cache_dir)
        ids = list(train.client_ids)
    except Exception as e:  # sqlite / proto errors from a damaged or foreign file
        raise DatasetError(f"cannot read federated EMNIST from {path}: {e}") from e
    if not ids:
        raise DatasetError(f"{path} holds no {'digits' if only_digits else 'all'}-split training writers")
    if num_clients and num_clients > len(ids):
        raise ValueError(
            f"federated EMNIST has {len(ids)} writers, fewer than --num_clients={num_clients}; "
            "pass --num_clients=0 to use all of them"
        )
    if num_clients and num_clients < len(ids):
        keep = np.sort(np.random.default_rng([seed, 17]).choice(len(ids), num_clients, replace=False))
        ids = [ids[k] for k in keep]
    x_test, y_test = _emnist_arrays(test.create_tf_dataset_from_all_clients())
    if len(x_test) == 0:
        raise DatasetError(f"{path} holds no test examples")
    return EmnistPopulation(train, ids, x_test, y_test, num_classes=10 if only_digits else 62)
