"""Datasets as numpy arrays with a fixed train/test split.

The default, `digits`, is scikit-learn's bundled 8x8 handwritten digits (1,797 real images,
no download). MNIST, Fashion-MNIST and CIFAR-10 are read from `data_dir` in the formats
Keras itself caches, so `--data_dir=~/.keras/datasets` reuses an existing Keras cache. They
are downloaded only when asked (`download=True`), with the published checksums verified,
because a silently truncated or substituted file would make every DP result meaningless.
The `csv` dataset is a table: a .csv or .parquet file (or a folder with train.csv/test.csv or
train.parquet/test.parquet) with a label column, numeric and categorical feature columns (missing
values allowed), and optionally a client-id column that gives a natural federated partition. Its
Dataset holds the raw columns (`table`, a `table_files.RawTable` under a `schema.TableSchema`, declared
with `schema_file` or inferred) and features with 0 columns until a run's preprocessing encodes them.
An image folder has one subfolder per class (`image_folders.py`).

Every malformed input raises `DatasetError` naming the file and the problem, never a raw
numpy/pandas/pickle traceback. The file formats live in `image_files.py` and `table_files.py`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from data.table_files import RawTable

DATASETS = (
    "digits",
    "synthetic_classification",
    "synthetic_regression",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "csv",
    "image_folder",
)
# emnist: TFF's federated EMNIST, partitioned by writer; synthetic_emnist: its shape, generated offline
FEDERATED_DATASETS = (*DATASETS, "emnist", "synthetic_emnist")
NEEDS_DATA_DIR = ("mnist", "fashion_mnist", "cifar10", "csv", "image_folder", "emnist")


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
    class_names: tuple[str, ...] | None = None  # label i is class_names[i], where the data names them
    table: RawTable | None = None  # a table's raw columns; x has 0 columns until they are encoded

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


def load_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    seed: int = 0,
    download: bool = False,
    label_column: str = "label",
    client_id_column: str | None = None,
    image_size: int | None = None,
    color_mode: str | None = None,
    schema_file: str | None = None,
) -> Dataset:
    """Loads dataset `name`; `data_dir` is the cache folder (or the table file/folder, or image folder).

    `image_size` and `color_mode` (None: inferred from the images) apply to `image_folder` only;
    `schema_file` (a schema.json declaring the table's columns) to `csv` only, which also reads .parquet.

    Nothing is fetched from the network unless `download` is true.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if client_id_column and name != "csv":
        raise DatasetError(f"a client-id column only applies to --dataset=csv, not {name!r}")
    if schema_file and name != "csv":
        raise DatasetError(f"a schema file only applies to --dataset=csv (a table), not {name!r}")
    if (image_size is not None or color_mode is not None) and name != "image_folder":
        raise DatasetError(
            f"--image_size and --color_mode only apply to --dataset=image_folder, not {name!r}"
        )
    if name == "digits":
        return load_digits(seed)
    if name == "synthetic_classification":
        return synthetic_classification(seed=seed)
    if name == "synthetic_regression":
        return synthetic_regression(seed=seed)
    if not data_dir:
        what = {
            "csv": "the table file (.csv or .parquet) or folder",
            "image_folder": "the folder with one subfolder per class",
        }.get(name, "the folder to read (or --download into)")
        raise DatasetError(f"dataset {name!r} needs --data_dir ({what})")
    data_dir = os.path.expanduser(data_dir)
    from data import image_files

    if name == "mnist":
        return image_files.load_mnist(data_dir, download)
    if name == "fashion_mnist":
        return image_files.load_fashion_mnist(data_dir, download)
    if name == "cifar10":
        return image_files.load_cifar10(data_dir, download)
    if name == "image_folder":
        from data.image_folders import load_image_folder

        return load_image_folder(data_dir, image_size, color_mode, seed)
    from data.table_files import load_table, table_dataset

    schema_file = os.path.expanduser(schema_file) if schema_file else None
    raw = load_table(data_dir, label_column, client_id_column, schema_file, seed)
    return table_dataset(raw, "csv")
