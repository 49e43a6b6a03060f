"""Lazy client data for TFF simulations (federated EMNIST is in `emnist.py`).

A population is a list of per-client index arrays. A client's `tf.data.Dataset` is built only when a round
asks for it, so 10,000 clients never hold 10,000 pipelines: memory grows with the clients
of a round, not with the population.

Client datasets are built from in-memory numpy slices (`from_tensor_slices`), so they
serialize into the computation and also run on remote TFF workers that have no access to
this machine's files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.datasets import Dataset


class ClientPopulation:
    """Clients over numpy arrays: `client_dataset(i, ...)` builds client i's pipeline on demand."""

    def __init__(
        self,
        name: str,
        x: np.ndarray,
        y: np.ndarray,
        client_indices: Sequence[np.ndarray],
        x_test: np.ndarray,
        y_test: np.ndarray,
        num_classes: int,
    ) -> None:
        if not client_indices:
            raise ValueError("a federated population needs at least one client")
        empty = [i for i, idx in enumerate(client_indices) if len(idx) == 0]
        if empty:
            raise ValueError(f"{len(empty)} clients have no examples (first: {empty[:5]})")
        self.name = name
        self.x, self.y = x, y
        self.client_indices = list(client_indices)
        self.x_test, self.y_test = x_test, y_test
        self.num_classes = num_classes
        self.local_dp_report: dict | None = None  # set when records were perturbed (local DP)
        # a table's fitted preprocessing (privacy.preprocessing.Fitted): its DP cost is part of the run's
        # epsilon and its transforms go into the released model, so every view of the population keeps it
        self.preprocessing = None

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def task(self) -> str:
        return "regression" if self.num_classes == 0 else "classification"

    def client_sizes(self) -> np.ndarray:
        return np.array([len(i) for i in self.client_indices])

    def client_examples(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.client_indices[client]
        return self.x[idx], self.y[idx]

    def client_dataset(
        self, client: int, epochs: int, batch_size: int, seed: int, round_num: int = 0, optimize: bool = False
    ):
        """`epochs` passes over the client's examples, each in a fresh order.

        The order is drawn here in numpy (not with `Dataset.shuffle`), so a round is
        reproducible from (seed, round, client) and a resumed run replays it exactly.
        `optimize=False` turns off tf.data's graph rewrites and autotuning: on a pipeline of two
        ops they change nothing but cost the TFF worker a rewrite per client per round.
        """
        import tensorflow as tf

        x, y = self.client_examples(client)
        rng = np.random.default_rng([seed, round_num, client])
        order = np.concatenate([rng.permutation(len(x)) for _ in range(epochs)])
        dataset = tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(batch_size)
        return dataset if optimize else dataset.with_options(plain_options())

    def round_datasets(
        self,
        clients: Sequence[int],
        epochs: int,
        batch_size: int,
        seed: int,
        round_num: int = 0,
        optimize: bool = False,
    ) -> list:
        """The datasets of one round's clients, and nothing else."""
        return [self.client_dataset(int(c), epochs, batch_size, seed, round_num, optimize) for c in clients]


def plain_options():
    """tf.data options without graph rewrites, autotuning or injected prefetch (same elements, same order)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_optimization.inject_prefetch = False
    options.autotune.enabled = False
    return options


def from_dataset(
    dataset: Dataset, kind: str, num_clients: int, *, alpha: float = 1.0, seed: int = 0
) -> ClientPopulation:
    """Partitions `dataset`'s training set (see `data/partition.py`); the test set stays central."""
    from data import partition

    if kind == "dirichlet" and dataset.task != "classification":
        raise ValueError("partition 'dirichlet' skews labels, so it needs a classification dataset")
    parts = partition.partition(
        kind, dataset.y_train, num_clients, alpha=alpha, client_ids=dataset.client_ids, seed=seed
    )
    return ClientPopulation(
        dataset.name,
        dataset.x_train,
        dataset.y_train,
        parts,
        dataset.x_test,
        dataset.y_test,
        dataset.num_classes,
    )


class ExtendedPopulation(ClientPopulation):
    """`base`'s clients followed by extra clients held in memory (the audit's canary clients).

    Works over any population (in-memory or EMNIST's sqlite): client i < base.num_clients is the
    base's, the rest are the extra (x, y) pairs in order.
    """

    def __init__(self, base: ClientPopulation, extra: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        self._base, self._extra = base, list(extra)
        self.name = base.name
        self.x_test, self.y_test = base.x_test, base.y_test
        self.num_classes = base.num_classes
        self.local_dp_report = base.local_dp_report
        self.preprocessing = getattr(base, "preprocessing", None)  # the canaries change neither
        self.client_indices = []  # examples live in the base and in `extra`

    @property
    def num_clients(self) -> int:
        return self._base.num_clients + len(self._extra)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._base.input_shape

    def client_sizes(self) -> np.ndarray:
        return np.concatenate([self._base.client_sizes(), [len(x) for x, _ in self._extra]])

    def client_examples(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        if client < self._base.num_clients:
            return self._base.client_examples(client)
        return self._extra[client - self._base.num_clients]
