"""Datasets as numpy arrays with a fixed train/test split.

The default, `digits`, is scikit-learn's bundled 8x8 handwritten digits (1,797 real images,
no download). MNIST, Fashion-MNIST and CIFAR-10 are read from `data_dir` in the formats
Keras itself caches (and downloaded there only when asked). A CSV has a label column and
optionally a client-id column that gives a natural federated partition.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import tarfile

import numpy as np

DATASETS = (
    "digits",
    "synthetic_classification",
    "synthetic_regression",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "csv",
)

_KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
_FASHION_FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)


class DatasetError(ValueError):
    """A dataset file or column is missing or malformed; the message says which."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # 0 means regression
    client_ids: np.ndarray | None = None  # natural partition of the training set, if any

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def task(self) -> str:
        return "regression" if self.num_classes == 0 else "classification"

    @property
    def num_train(self) -> int:
        return len(self.x_train)


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, stratify: bool):
    from sklearn.model_selection import train_test_split

    return train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y if stratify else None
    )


def load_digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]  # (n, 8, 8, 1) in [0, 1]
    y = bunch.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = _split(x, y, test_fraction, seed, stratify=True)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, num_classes=10)


def synthetic_classification(
    num_examples: int = 5000, num_features: int = 20, num_classes: int = 4, seed: int = 0
) -> Dataset:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=num_examples,
        n_features=num_features,
        n_informative=min(num_features, 10),
        n_classes=num_classes,
        n_clusters_per_class=1,
        class_sep=1.5,
        random_state=seed,
    )
    x_tr, x_te, y_tr, y_te = _split(x.astype(np.float32), y.astype(np.int32), 0.2, seed, True)
    return Dataset("synthetic_classification", x_tr, y_tr, x_te, y_te, num_classes=num_classes)


def synthetic_regression(
    num_examples: int = 10_000,
    slope: float = 3.0,
    intercept: float = 0.0,
    noise_std: float = 0.5,
    seed: int = 0,
) -> Dataset:
    """The seed's example: y = 3x + noise, x ~ U(-1, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(num_examples, 1)).astype(np.float32)
    y = (slope * x[:, 0] + intercept + rng.normal(0, noise_std, num_examples)).astype(np.float32)
    x_tr, x_te, y_tr, y_te = _split(x, y, 0.2, seed, stratify=False)
    return Dataset("synthetic_regression", x_tr, y_tr, x_te, y_te, num_classes=0)


def _require(path: str, what: str, download_hint: bool = True) -> None:
    if not os.path.exists(path):
        hint = " (or pass --download to fetch it into --data_dir)" if download_hint else ""
        raise DatasetError(f"{what} not found: {path}{hint}")


def _fetch(data_dir: str, fname: str, download: bool) -> str:
    path = os.path.join(data_dir, fname)
    if not os.path.exists(path) and download:
        import tensorflow as tf

        os.makedirs(data_dir, exist_ok=True)
        tf.keras.utils.get_file(fname, _KERAS_ORIGIN + fname, cache_dir=data_dir, cache_subdir="")
    return path


def _image_dataset(name, x_tr, y_tr, x_te, y_te, num_classes: int = 10) -> Dataset:
    def prep(x):
        x = x.astype(np.float32) / 255.0
        return x[..., None] if x.ndim == 3 else x

    return Dataset(
        name,
        prep(x_tr),
        y_tr.astype(np.int32).ravel(),
        prep(x_te),
        y_te.astype(np.int32).ravel(),
        num_classes,
    )


def load_mnist(data_dir: str, download: bool = False) -> Dataset:
    """Keras's `mnist.npz` (keys x_train, y_train, x_test, y_test)."""
    path = _fetch(data_dir, "mnist.npz", download)
    _require(path, "MNIST file mnist.npz")
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise DatasetError(f"{path} lacks arrays {sorted(missing)}")
        return _image_dataset("mnist", f["x_train"], f["y_train"], f["x_test"], f["y_test"])


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[:2] != b"\x00\x00":
        raise DatasetError(f"{path} is not an IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: expected {dims}")
    return arr.reshape(dims)


def load_fashion_mnist(data_dir: str, download: bool = False) -> Dataset:
    """Keras's Fashion-MNIST cache: four gzipped IDX files."""
    paths = [_fetch(data_dir, f, download) if download else os.path.join(data_dir, f) for f in _FASHION_FILES]
    if not download:
        for p in paths:
            _require(p, "Fashion-MNIST file")
    y_tr, x_tr, y_te, x_te = (_read_idx(p) for p in paths)
    return _image_dataset("fashion_mnist", x_tr, y_tr, x_te, y_te)


def load_cifar10(data_dir: str, download: bool = False) -> Dataset:
    """Keras's CIFAR-10 cache: `cifar-10-batches-py/` (python pickles, CHW uint8)."""
    folder = os.path.join(data_dir, "cifar-10-batches-py")
    if not os.path.isdir(folder) and download:
        archive = _fetch(data_dir, "cifar-10-python.tar.gz", True)
        with tarfile.open(archive) as tar:
            tar.extractall(data_dir, filter="data")
    _require(folder, "CIFAR-10 folder")

    def batch(fname):
        p = os.path.join(folder, fname)
        _require(p, "CIFAR-10 batch")
        with open(p, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x, np.asarray(d[b"labels"])

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = batch("test_batch")
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    return _image_dataset("cifar10", x_tr, y_tr, x_te, y_te)


def load_csv(
    path: str,
    label_column: str = "label",
    client_id_column: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """A CSV of numeric features plus an integer label column (and optional client ids).

    `path` is a file, or a folder holding `train.csv` (and optionally `test.csv`).
    """
    import pandas as pd

    if os.path.isdir(path):
        train_path, test_path = os.path.join(path, "train.csv"), os.path.join(path, "test.csv")
    else:
        train_path, test_path = path, None
    _require(train_path, "CSV file", download_hint=False)

    def read(p):
        try:
            df = pd.read_csv(p)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot parse {p}: {e}") from e
        for col in [label_column] + ([client_id_column] if client_id_column else []):
            if col not in df.columns:
                raise DatasetError(f"{p} has no column {col!r}; columns are {list(df.columns)}")
        features = df.drop(columns=[c for c in (label_column, client_id_column) if c])
        if features.shape[1] == 0:
            raise DatasetError(f"{p} has no feature columns besides {label_column!r}")
        bad = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
        if bad or not pd.api.types.is_numeric_dtype(df[label_column]):
            raise DatasetError(f"{p}: non-numeric values in columns {bad or [label_column]}")
        nan_cols = [c for c in df.columns if df[c].isna().any()]
        if nan_cols:
            raise DatasetError(f"{p}: missing values (NaN) in columns {nan_cols}")
        labels = df[label_column].to_numpy()
        if not np.all(np.equal(np.mod(labels, 1), 0)) or labels.min() < 0:
            raise DatasetError(f"{p}: labels in {label_column!r} must be non-negative integers")
        cids = df[client_id_column].to_numpy() if client_id_column else None
        return features.to_numpy(np.float32), labels.astype(np.int32), cids

    x, y, cids = read(train_path)
    if test_path and os.path.exists(test_path):
        x_te, y_te, _ = read(test_path)
        x_tr, y_tr, c_tr = x, y, cids
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(x))
        n_test = max(1, int(round(test_fraction * len(x))))
        te, tr = perm[:n_test], perm[n_test:]
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        c_tr = cids[tr] if cids is not None else None
    if c_tr is not None:
        _, c_tr = np.unique(c_tr, return_inverse=True)  # dense ids 0..K-1
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset("csv", x_tr, y_tr, x_te, y_te, num_classes, client_ids=c_tr)


def load_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    seed: int = 0,
    download: bool = False,
    label_column: str = "label",
    client_id_column: str | None = None,
) -> Dataset:
    """Loads dataset `name`; `data_dir` is the cache folder (or the CSV file/folder)."""
    if name == "digits":
        return load_digits(seed)
    if name == "synthetic_classification":
        return synthetic_classification(seed=seed)
    if name == "synthetic_regression":
        return synthetic_regression(seed=seed)
    if name in ("mnist", "fashion_mnist", "cifar10", "csv") and not data_dir:
        raise DatasetError(f"dataset {name!r} needs --data_dir")
    if name == "mnist":
        return load_mnist(data_dir, download)
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir, download)
    if name == "cifar10":
        return load_cifar10(data_dir, download)
    if name == "csv":
        return load_csv(data_dir, label_column, client_id_column, seed)
    raise DatasetError(f"unknown dataset {name!r}; expected one of {DATASETS}")
