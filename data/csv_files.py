"""CSV datasets: numeric feature columns, an integer label column, optionally client ids."""

from __future__ import annotations

import os

import numpy as np

from data.datasets import Dataset, DatasetError

MAX_CLASSES = 10_000


def _read_csv(
    path: str,
    label_column: str,
    client_id_column: str | None,
    feature_columns: list[str] | None = None,
    need_client_ids: bool = True,
):
    """(features float32, labels int32, client ids or None, feature column names) from one CSV.

    `feature_columns` (from train.csv) makes a test file match the training features by name.
    """
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"cannot parse {path}: {e}") from e
    return frame_arrays(df, path, label_column, client_id_column, feature_columns, need_client_ids)


def frame_arrays(
    df,
    path: str,
    label_column: str,
    client_id_column: str | None,
    feature_columns: list[str] | None = None,
    need_client_ids: bool = True,
):
    """`_read_csv` on a pandas DataFrame already in memory (`path` names it in messages)."""
    import pandas as pd

    required = [label_column] + ([client_id_column] if client_id_column and need_client_ids else [])
    for col in required:
        if col not in df.columns:
            role = "label" if col == label_column else "client-id"
            raise DatasetError(f"{path} has no {role} column {col!r}; columns are {list(df.columns)}")
    if len(df) == 0:
        raise DatasetError(f"{path} has a header but no rows")
    non_features = required + ([client_id_column] if client_id_column in df.columns else [])
    features = df.drop(columns=list(dict.fromkeys(non_features)))
    if feature_columns is not None:
        missing = [c for c in feature_columns if c not in features.columns]
        extra = [c for c in features.columns if c not in feature_columns]
        if missing or extra:
            raise DatasetError(
                f"{path} has different feature columns from train.csv: missing {missing}, extra {extra}"
            )
        features = features[list(feature_columns)]
    if features.shape[1] == 0:
        raise DatasetError(f"{path} has no feature columns besides {required}")
    checked = pd.concat([features, df[[label_column]]], axis=1)
    bad = [c for c in checked.columns if not pd.api.types.is_numeric_dtype(checked[c])]
    if bad:
        raise DatasetError(f"{path}: non-numeric values in columns {bad}")
    nan_cols = [c for c in list(features.columns) + required if df[c].isna().any()]
    if nan_cols:
        raise DatasetError(f"{path}: missing values (NaN) in columns {nan_cols}")
    x = features.to_numpy(np.float64)
    inf_cols = [c for c, ok in zip(features.columns, np.isfinite(x).all(axis=0), strict=True) if not ok]
    if inf_cols:
        raise DatasetError(f"{path}: infinite values in columns {inf_cols}")
    labels = df[label_column].to_numpy(np.float64)
    if not (np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))):
        raise DatasetError(f"{path}: labels in {label_column!r} must be integers (class indices)")
    if labels.min() < 0:
        raise DatasetError(f"{path}: labels in {label_column!r} must be non-negative class indices")
    if labels.max() >= MAX_CLASSES:  # checked before a model with that many outputs is ever built
        raise DatasetError(
            f"{path}: labels in {label_column!r} go up to {labels.max():.0f}, i.e. that many classes; labels "
            f"must be class indices 0..K-1 with K <= {MAX_CLASSES}: re-encode them"
        )
    cids = df[client_id_column].to_numpy() if client_id_column and need_client_ids else None
    return x.astype(np.float32), labels.astype(np.int32), cids, list(features.columns)


def load_csv(
    path: str,
    label_column: str = "label",
    client_id_column: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """A CSV of numeric features plus an integer label column (and optional client ids).

    `path` is a file, or a folder holding `train.csv` (and optionally `test.csv`). Without a
    test file, a seeded random `test_fraction` of the rows is held out. Client ids (any
    values, e.g. user names) become dense ids 0..K-1 over the training rows; test.csv need
    not have the client-id column, since evaluation is central.
    """
    if client_id_column is not None and client_id_column == label_column:
        raise DatasetError(f"the label column and the client-id column are both {label_column!r}")
    if os.path.isdir(path):
        train_path, test_path = os.path.join(path, "train.csv"), os.path.join(path, "test.csv")
        if not os.path.exists(train_path):
            raise DatasetError(f"CSV folder {path} has no train.csv")
    else:
        train_path, test_path = path, None
        if not os.path.exists(train_path):
            raise DatasetError(f"CSV file not found: {train_path}")

    x, y, cids, feature_columns = _read_csv(train_path, label_column, client_id_column)
    test = None
    if test_path and os.path.exists(test_path):
        x_te, y_te, _, _ = _read_csv(
            test_path, label_column, client_id_column, feature_columns, need_client_ids=False
        )
        test = (x_te, y_te)
    return _dataset("csv", train_path, (x, y, cids), test, seed, test_fraction, client_id_column)


def load_frame(
    df,
    label_column: str = "label",
    client_id_column: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    name: str = "dataframe",
) -> Dataset:
    """A pandas DataFrame, read as `load_csv` reads a CSV file (same checks, same seeded split)."""
    if client_id_column is not None and client_id_column == label_column:
        raise DatasetError(f"the label column and the client-id column are both {label_column!r}")
    x, y, cids, _ = frame_arrays(df, name, label_column, client_id_column)
    return _dataset(name, name, (x, y, cids), None, seed, test_fraction, client_id_column)


def _dataset(name: str, source: str, train: tuple, test: tuple | None, seed: int, test_fraction: float,
             client_id_column: str | None) -> Dataset:  # fmt: skip
    """The Dataset of parsed rows: the given test rows, or a seeded `test_fraction` held out."""
    x, y, cids = train
    if test is not None:
        (x_te, y_te), x_tr, y_tr, c_tr = test, x, y, cids
    else:
        if not 0.0 < test_fraction < 1.0:
            raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if len(x) < 2:
            raise DatasetError(f"{source} has {len(x)} row(s); a train/test split needs at least 2")
        perm = np.random.default_rng(seed).permutation(len(x))
        n_test = min(len(x) - 1, max(1, int(round(test_fraction * len(x)))))
        te, tr = perm[:n_test], perm[n_test:]
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        c_tr = cids[tr] if cids is not None else None
    if c_tr is not None:
        try:
            _, c_tr = np.unique(c_tr, return_inverse=True)  # dense ids 0..K-1, sorted by original id
        except TypeError as e:  # e.g. a column mixing numbers and strings
            raise DatasetError(f"{source}: client ids in {client_id_column!r} are not comparable") from e
        c_tr = c_tr.astype(np.int64).ravel()
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(name, x_tr, y_tr, x_te, y_te, num_classes, client_ids=c_tr)
