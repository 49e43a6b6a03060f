"""What a notebook user hands the API as data -> the `data.datasets.Dataset` the pipelines train on.

A dataset name (or a `Dataset`) goes through the binaries' own loaders; numpy arrays, a pandas
DataFrame and a `tf.data.Dataset` of (features, label) become a Dataset here, split into train and
test by the seed the same way a table file is (`data.table_files`: a DataFrame becomes the same raw-table
Dataset as `--dataset=csv`, with its schema inferred from the frame), so the API and the binaries agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.datasets import Dataset, DatasetError

MAX_ROWS = 20_000_000  # a tf.data.Dataset is read into memory: refuse an unbounded one


def as_dataset(
    data: Any, *, label: str = "label", seed: int = 0, test_fraction: float = 0.2
) -> tuple[str, Dataset | None]:
    """(dataset name for the config, the Dataset or None when the pipeline loads `name` itself)."""
    if isinstance(data, str):
        return data, None
    if isinstance(data, Dataset):
        return data.name, data
    try:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            from data.table_files import load_table_frame, table_dataset

            raw = load_table_frame(data, label, seed=seed, test_fraction=test_fraction)
            return "csv", table_dataset(raw, "dataframe")
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    if type(data).__module__.startswith("tensorflow"):
        return "arrays", _from_arrays(*_materialize(data), seed=seed, test_fraction=test_fraction)
    if isinstance(data, tuple | list) and len(data) in (2, 4):
        arrays = [np.asarray(a) for a in data]
        if len(arrays) == 4:
            return "arrays", _dataset(*arrays)
        return "arrays", _from_arrays(*arrays, seed=seed, test_fraction=test_fraction)
    raise DatasetError(
        "data must be a dataset name, a Dataset, (x, y) or (x_train, y_train, x_test, y_test) arrays, a "
        f"pandas DataFrame with a {label!r} column, or a tf.data.Dataset of (features, label); got "
        f"{type(data).__name__}"
    )


def _materialize(ds) -> tuple[np.ndarray, np.ndarray]:
    """All (features, label) pairs of a tf.data.Dataset (batched or not) as two arrays."""
    xs, ys, rows = [], [], 0
    for element in ds.as_numpy_iterator():
        if not (isinstance(element, tuple) and len(element) == 2):
            raise DatasetError("a tf.data.Dataset must yield (features, label) pairs")
        x, y = np.asarray(element[0]), np.asarray(element[1])
        if y.ndim == 0:  # unbatched
            x, y = x[None], y[None]
        xs.append(x)
        ys.append(y)
        rows += len(y)
        if rows > MAX_ROWS:
            raise DatasetError(f"the tf.data.Dataset has more than {MAX_ROWS} rows; pass a bounded one")
    if not xs:
        raise DatasetError("the tf.data.Dataset is empty")
    return np.concatenate(xs), np.concatenate(ys)


def _from_arrays(x: np.ndarray, y: np.ndarray, *, seed: int, test_fraction: float) -> Dataset:
    if len(x) != len(y):
        raise DatasetError(f"features have {len(x)} rows and labels {len(y)}")
    if len(x) < 2:
        raise DatasetError("a train/test split needs at least 2 rows")
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = min(len(x) - 1, max(1, int(round(test_fraction * len(x)))))
    te, tr = perm[:n_test], perm[n_test:]
    return _dataset(x[tr], y[tr], x[te], y[te])


def _dataset(x_tr, y_tr, x_te, y_te) -> Dataset:
    """Integer labels: classification over 0..K-1; float labels: regression."""
    x_tr, x_te = np.asarray(x_tr, np.float32), np.asarray(x_te, np.float32)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DatasetError(f"train features have shape {x_tr.shape[1:]}, test features {x_te.shape[1:]}")
    if not (np.isfinite(x_tr).all() and np.isfinite(x_te).all()):
        raise DatasetError("features contain NaN or infinite values")
    y_tr, y_te = np.asarray(y_tr).reshape(-1), np.asarray(y_te).reshape(-1)
    if np.issubdtype(y_tr.dtype, np.integer) and np.issubdtype(y_te.dtype, np.integer):
        if min(y_tr.min(), y_te.min()) < 0:
            raise DatasetError("class labels must be 0..K-1")
        num_classes = int(max(y_tr.max(), y_te.max())) + 1
        return Dataset("arrays", x_tr, y_tr.astype(np.int32), x_te, y_te.astype(np.int32), num_classes)
    return Dataset("arrays", x_tr, y_tr.astype(np.float32), x_te, y_te.astype(np.float32), num_classes=0)
