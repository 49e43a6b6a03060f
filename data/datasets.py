"""Datasets as numpy arrays with a fixed train/test split.

The default, `digits`, is scikit-learn's bundled 8x8 handwritten digits (1,797 real images,
no download). MNIST, Fashion-MNIST and CIFAR-10 are read from `data_dir` in the formats
Keras itself caches, so `--data_dir=~/.keras/datasets` reuses an existing Keras cache. They
are downloaded only when asked (`download=True`), with the published checksums verified,
because a silently truncated or substituted file would make every DP result meaningless.
A CSV has a label column and optionally a client-id column that gives a natural federated
partition.

Every malformed input raises `DatasetError` naming the file and the problem, never a raw
numpy/pandas/pickle traceback.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
import zlib

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
_FASHION_SUBDIR = "fashion-mnist"  # where Keras caches it under ~/.keras/datasets
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

# file name -> (url, hash algorithm, hex digest). MNIST and CIFAR-10 digests are the ones
# Keras 2.14 checks; Fashion-MNIST's are the MD5s published by Zalando Research.
_SOURCES: dict[str, tuple[str, str, str]] = {
    "mnist.npz": (
        _KERAS_ORIGIN + "mnist.npz",
        "sha256",
        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    ),
    "train-labels-idx1-ubyte.gz": (
        _KERAS_ORIGIN + "train-labels-idx1-ubyte.gz",
        "md5",
        "25c81989df183df01b3e8a0aad5dffbe",
    ),
    "train-images-idx3-ubyte.gz": (
        _KERAS_ORIGIN + "train-images-idx3-ubyte.gz",
        "md5",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    ),
    "t10k-labels-idx1-ubyte.gz": (
        _KERAS_ORIGIN + "t10k-labels-idx1-ubyte.gz",
        "md5",
        "bb300cfdad3c16e7a12a480ee83cd310",
    ),
    "t10k-images-idx3-ubyte.gz": (
        _KERAS_ORIGIN + "t10k-images-idx3-ubyte.gz",
        "md5",
        "bef4ecab320f06d8554ea6380940ec79",
    ),
    _CIFAR_ARCHIVE: (
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "sha256",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
}


class DatasetError(ValueError):
    """A dataset file or column is missing or malformed; the message says which."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test arrays plus what a model builder and a partitioner need to know about them."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # 0 means regression
    client_ids: np.ndarray | None = None  # natural partition of the training set, dense 0..K-1

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
    """sklearn's 1,797 8x8 digits as (8, 8, 1) images in [0, 1]; split stratified by `seed`."""
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


# ---------------------------------------------------------------------------------------------
# Files on disk: locate, download (only when asked), validate.


def _missing(what: str, path: str) -> DatasetError:
    return DatasetError(f"{what} not found: {path} (or pass --download to fetch it into --data_dir)")


def _download(fname: str, dest: str) -> None:
    """Fetches `fname` to `dest` atomically, verifying its published checksum.

    Plain urllib, not tf.keras.utils.get_file: no TensorFlow import, and get_file silently
    writes to /tmp/.keras when the folder is read-only, so the file would not be where we look.
    """
    import hashlib
    import urllib.request

    url, algorithm, expected = _SOURCES[fname]
    folder = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=fname)
    except OSError as e:
        raise DatasetError(f"cannot write into --data_dir {folder}: {e.strerror}") from e
    try:
        digest = hashlib.new(algorithm, usedforsecurity=False)  # md5 is an integrity check here
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise DatasetError(
                f"download of {url} is corrupt or substituted: {algorithm} {digest.hexdigest()}, "
                f"expected {expected}"
            )
        os.replace(tmp, dest)
    except OSError as e:  # urllib.error.URLError and socket timeouts are OSErrors
        raise DatasetError(f"could not download {url} into {dest}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fetch(data_dir: str, fname: str, download: bool, what: str) -> str:
    """Path of `fname` in `data_dir`, downloading it first if absent and `download`."""
    path = os.path.join(data_dir, fname)
    if not os.path.exists(path):
        if not download:
            raise _missing(what, path)
        _download(fname, path)
    return path


def _image_dataset(name: str, x_tr, y_tr, x_te, y_te, image_shape: tuple[int, ...], num_classes: int = 10):
    """Checks shapes, pixel range and labels, then scales pixels to [0, 1] float32."""

    def prep(split: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x), np.asarray(y).ravel()
        if x.shape[1:] != image_shape:
            raise DatasetError(f"{name}: {split} images have shape {x.shape[1:]}, expected {image_shape}")
        if len(x) != len(y):
            raise DatasetError(f"{name}: {len(x)} {split} images but {len(y)} labels")
        if len(x) == 0:
            raise DatasetError(f"{name}: the {split} split is empty")
        if not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() > 255:
            raise DatasetError(f"{name}: {split} pixels must be integers in 0..255, got dtype {x.dtype}")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
            raise DatasetError(
                f"{name}: {split} labels must be integers in 0..{num_classes - 1}, "
                f"got dtype {y.dtype} range [{y.min()}, {y.max()}]"
            )
        x = x.astype(np.float32) / 255.0
        return (x[..., None] if x.ndim == 3 else x), y.astype(np.int32)

    x_tr, y_tr = prep("train", x_tr, y_tr)
    x_te, y_te = prep("test", x_te, y_te)
    return Dataset(name, x_tr, y_tr, x_te, y_te, num_classes)


def load_mnist(data_dir: str, download: bool = False) -> Dataset:
    """Keras's `mnist.npz` (uint8 arrays x_train, y_train, x_test, y_test)."""
    path = _fetch(data_dir, "mnist.npz", download, "MNIST file mnist.npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise DatasetError(f"{path} lacks arrays {sorted(missing)}; it has {sorted(f.files)}")
            arrays = [f[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path} is not a readable .npz file: {e}") from e
    return _image_dataset("mnist", *arrays, image_shape=(28, 28))


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x000008NN, NN = number of dims, big-endian dims)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; EOFError: truncated gzip
        raise DatasetError(f"{path} is not a complete gzip file: {e}") from e
    header = 4 + 4 * ndim
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise DatasetError(
            f"{path} is not a {ndim}-d unsigned-byte IDX file (magic {data[:4].hex() or 'missing'}, "
            f"expected 0000080{ndim})"
        )
    if len(data) < header:
        raise DatasetError(f"{path} is truncated inside its IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    payload = len(data) - header
    if payload != int(np.prod(dims)):
        problem = "truncated" if payload < int(np.prod(dims)) else "longer than its header says"
        raise DatasetError(f"{path} is {problem}: header says {dims} ({np.prod(dims)} bytes), has {payload}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(data_dir: str, download: bool = False) -> Dataset:
    """Keras's Fashion-MNIST cache: four gzipped IDX files.

    They are looked for in `data_dir` itself, then in `data_dir/fashion-mnist/` (Keras's own
    layout under ~/.keras/datasets); a download goes into `data_dir`.
    """
    keras_dir = os.path.join(data_dir, _FASHION_SUBDIR)
    if not all(os.path.exists(os.path.join(data_dir, f)) for f in _FASHION_FILES) and all(
        os.path.exists(os.path.join(keras_dir, f)) for f in _FASHION_FILES
    ):
        data_dir = keras_dir
    paths = [_fetch(data_dir, f, download, "Fashion-MNIST file") for f in _FASHION_FILES]
    y_tr, x_tr, y_te, x_te = (_read_idx(p, ndim) for p, ndim in zip(paths, (1, 3, 1, 3), strict=True))
    return _image_dataset("fashion_mnist", x_tr, y_tr, x_te, y_te, image_shape=(28, 28))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a pickle can run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in pickle protocols 0-2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: {b'data': uint8 (n, 3072) rows in CHW order, b'labels': [n]}."""
    if not os.path.exists(path):
        raise DatasetError(
            f"{path} not found: the CIFAR-10 folder is incomplete (delete it and pass --download to refetch)"
        )
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch: {e}") from e
    if not isinstance(d, dict):
        raise DatasetError(f"{path} holds a {type(d).__name__}, expected a dict with data and labels")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    missing = {"data", "labels"} - set(d)
    if missing:
        raise DatasetError(f"{path} lacks keys {sorted(missing)}")
    data = np.asarray(d["data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: data has shape {data.shape}, expected (n, 3072)")
    # Rows are the red plane, then green, then blue (each 32x32 row-major): CHW -> HWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(d["labels"])


def _extract_cifar(archive: str, data_dir: str) -> None:
    """Unpacks the archive into a temporary folder, then renames it into place."""
    tmp = tempfile.mkdtemp(dir=data_dir, prefix=".extract-")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        extracted = os.path.join(tmp, _CIFAR_FOLDER)
        if not os.path.isdir(extracted):
            raise DatasetError(f"{archive} has no {_CIFAR_FOLDER}/ folder")
        os.replace(extracted, os.path.join(data_dir, _CIFAR_FOLDER))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(f"cannot extract {archive}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_cifar10(data_dir: str, download: bool = False) -> Dataset:
    """Keras's CIFAR-10 cache: `cifar-10-batches-py/` (python pickles, CHW uint8)."""
    folder = os.path.join(data_dir, _CIFAR_FOLDER)
    if not os.path.isdir(folder):
        if not download:
            raise _missing("CIFAR-10 folder", folder)
        archive = _fetch(data_dir, _CIFAR_ARCHIVE, True, "CIFAR-10 archive")
        _extract_cifar(archive, data_dir)
        os.remove(archive)

    parts = [_read_cifar_batch(os.path.join(folder, f"data_batch_{i}")) for i in range(1, 6)]
    x_te, y_te = _read_cifar_batch(os.path.join(folder, "test_batch"))
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    return _image_dataset("cifar10", x_tr, y_tr, x_te, y_te, image_shape=(32, 32, 3))


# ---------------------------------------------------------------------------------------------
# CSV


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
    if labels.min() < 0 or labels.max() >= np.iinfo(np.int32).max:
        raise DatasetError(f"{path}: labels in {label_column!r} must be non-negative class indices")
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
    if test_path and os.path.exists(test_path):
        x_te, y_te, _, _ = _read_csv(
            test_path, label_column, client_id_column, feature_columns, need_client_ids=False
        )
        x_tr, y_tr, c_tr = x, y, cids
    else:
        if not 0.0 < test_fraction < 1.0:
            raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if len(x) < 2:
            raise DatasetError(f"{train_path} has {len(x)} row(s); a train/test split needs at least 2")
        perm = np.random.default_rng(seed).permutation(len(x))
        n_test = min(len(x) - 1, max(1, int(round(test_fraction * len(x)))))
        te, tr = perm[:n_test], perm[n_test:]
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
        c_tr = cids[tr] if cids is not None else None
    if c_tr is not None:
        try:
            _, c_tr = np.unique(c_tr, return_inverse=True)  # dense ids 0..K-1, sorted by original id
        except TypeError as e:  # e.g. a column mixing numbers and strings
            raise DatasetError(f"{train_path}: client ids in {client_id_column!r} are not comparable") from e
        c_tr = c_tr.astype(np.int64).ravel()
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
    """Loads dataset `name`; `data_dir` is the cache folder (or the CSV file/folder).

    Nothing is fetched from the network unless `download` is true.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if client_id_column and name != "csv":
        raise DatasetError(f"a client-id column only applies to --dataset=csv, not {name!r}")
    if name == "digits":
        return load_digits(seed)
    if name == "synthetic_classification":
        return synthetic_classification(seed=seed)
    if name == "synthetic_regression":
        return synthetic_regression(seed=seed)
    if not data_dir:
        what = "the CSV file or folder" if name == "csv" else "the folder to read (or --download into)"
        raise DatasetError(f"dataset {name!r} needs --data_dir ({what})")
    data_dir = os.path.expanduser(data_dir)
    if name == "mnist":
        return load_mnist(data_dir, download)
    if name == "fashion_mnist":
        return load_fashion_mnist(data_dir, download)
    if name == "cifar10":
        return load_cifar10(data_dir, download)
    return load_csv(data_dir, label_column, client_id_column, seed)
