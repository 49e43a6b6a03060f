"""Split a dataset's training set into simulated federated clients.

Each function returns one sorted index array per client (into `x_train`/`y_train`), never
tf.data objects: a 10,000-client population costs 10,000 small int arrays, and the client
pipelines are built only for the clients of a round (see `data/federated.py`).

* `iid`: a seeded permutation cut into near-equal parts.
* `dirichlet`: label skew after Hsu et al. (2019): client i draws its label mix
  p_i ~ Dir(alpha * 1_K) and receives ~N/num_clients examples drawn from that mix (from
  the classes that still have examples). Small alpha = few labels per client. Every client
  gets at least one example, and every training example goes to exactly one client.
* `natural`: the dataset's own client ids (CSV client-id column; EMNIST writers are
  handled by `data/federated.py`).
"""

from __future__ import annotations

import numpy as np

PARTITIONS = ("iid", "dirichlet", "natural")


def _check_population(num_examples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if num_examples < num_clients:
        raise ValueError(
            f"cannot give each of {num_clients} clients an example: only {num_examples} training "
            "examples; lower --num_clients"
        )


def _balanced_sizes(num_examples: int, num_clients: int) -> np.ndarray:
    base, extra = divmod(num_examples, num_clients)
    return np.array([base + (i < extra) for i in range(num_clients)], dtype=np.int64)


def iid(num_examples: int, num_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Near-equal random parts (sizes differ by at most one)."""
    _check_population(num_examples, num_clients)
    perm = np.random.default_rng([seed, 11]).permutation(num_examples)
    bounds = np.concatenate([[0], np.cumsum(_balanced_sizes(num_examples, num_clients))])
    return [np.sort(perm[bounds[i] : bounds[i + 1]]) for i in range(num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int = 0) -> list[np.ndarray]:
    """Label-skewed parts of near-equal size; see the module docstring."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("dirichlet partition needs integer class labels (a classification dataset)")
    if not alpha > 0:
        raise ValueError(f"dirichlet_alpha must be > 0, got {alpha}")
    _check_population(len(labels), num_clients)
    rng = np.random.default_rng([seed, 13])
    classes = np.unique(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    remaining = np.array([len(p) for p in pools], dtype=np.int64)
    taken = np.zeros(len(classes), dtype=np.int64)
    mixes = rng.dirichlet(np.full(len(classes), alpha), size=num_clients)
    out = []
    for i, need in enumerate(_balanced_sizes(len(labels), num_clients)):
        counts = np.zeros(len(classes), dtype=np.int64)
        while need > 0:
            p = mixes[i] * (remaining > 0)
            if p.sum() <= 0:  # this client's classes are used up: fall back to what is left
                p = remaining.astype(np.float64)
            draw = np.minimum(rng.multinomial(need, p / p.sum()), remaining)
            counts += draw
            remaining -= draw
            need -= int(draw.sum())
        parts = []
        for c, k in enumerate(counts):
            if k:
                parts.append(pools[c][taken[c] : taken[c] + k])
                taken[c] += k
        out.append(np.sort(np.concatenate(parts)))
    return out


def natural(client_ids: np.ndarray | None, num_clients: int = 0, seed: int = 0) -> list[np.ndarray]:
    """One client per distinct id. `num_clients` = 0 keeps all; fewer: a seeded random subset."""
    if client_ids is None:
        raise ValueError(
            "partition 'natural' needs client ids: a CSV with a client-id column "
            "(--client_id_column) or --dataset=emnist; use --partition=iid or dirichlet otherwise"
        )
    uniq, inverse = np.unique(np.asarray(client_ids), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(uniq)))])
    parts = [np.sort(order[bounds[i] : bounds[i + 1]]) for i in range(len(uniq))]
    if num_clients and num_clients > len(parts):
        raise ValueError(
            f"the data has only {len(parts)} natural clients, fewer than --num_clients={num_clients}; "
            "pass --num_clients=0 to use all of them"
        )
    if num_clients and num_clients < len(parts):
        keep = np.sort(np.random.default_rng([seed, 17]).choice(len(parts), num_clients, replace=False))
        parts = [parts[k] for k in keep]
    return parts


def partition(
    kind: str,
    labels: np.ndarray,
    num_clients: int,
    *,
    alpha: float = 1.0,
    client_ids: np.ndarray | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Dispatches on `kind` (one of PARTITIONS)."""
    if kind == "iid":
        return iid(len(labels), num_clients, seed)
    if kind == "dirichlet":
        return dirichlet(labels, num_clients, alpha, seed)
    if kind == "natural":
        return natural(client_ids, num_clients, seed)
    raise ValueError(f"unknown partition {kind!r}; expected one of {PARTITIONS}")
