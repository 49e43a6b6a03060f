"""Writers of the real dataset file formats, as small files the tests make themselves."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import types

import numpy as np
import pytest


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=n, dtype=np.uint8)


def write_mnist_npz(folder, n_train=12, n_test=5, drop=()) -> dict[str, np.ndarray]:
    arrays = {
        "x_train": _images(n_train, (28, 28), 1),
        "y_train": _labels(n_train, 2),
        "x_test": _images(n_test, (28, 28), 3),
        "y_test": _labels(n_test, 4),
    }
    np.savez(os.path.join(folder, "mnist.npz"), **{k: v for k, v in arrays.items() if k not in drop})
    return arrays


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX: magic 0x0000 08 <ndim>, then each dim as a big-endian uint32, then the raw bytes."""
    assert arr.dtype == np.uint8
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write_gz(path, payload: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(payload)


def write_fashion(folder, n_train=10, n_test=4) -> dict[str, np.ndarray]:
    arrays = {
        "train-labels-idx1-ubyte.gz": _labels(n_train, 5),
        "train-images-idx3-ubyte.gz": _images(n_train, (28, 28), 6),
        "t10k-labels-idx1-ubyte.gz": _labels(n_test, 7),
        "t10k-images-idx3-ubyte.gz": _images(n_test, (28, 28), 8),
    }
    os.makedirs(folder, exist_ok=True)
    for fname, arr in arrays.items():
        write_gz(os.path.join(folder, fname), idx_bytes(arr))
    return arrays


def cifar_batch(n: int, seed: int) -> dict:
    data = np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in np.random.default_rng(seed + 100).integers(0, 10, size=n)]
    return {b"batch_label": b"test batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}


def write_cifar(data_dir, n=3) -> dict[str, dict]:
    folder = os.path.join(data_dir, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    batches = {f"data_batch_{i}": cifar_batch(n, i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n + 1, 99)
    for fname, d in batches.items():
        with open(os.path.join(folder, fname), "wb") as f:
            pickle.dump(d, f)
    return batches


def write_csv(path, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.fixture(scope="session")
def formats():
    """The writers above: formats.write_mnist_npz(folder), formats.write_fashion(folder), ..."""
    return types.SimpleNamespace(
        images=_images,
        labels=_labels,
        write_mnist_npz=write_mnist_npz,
        idx_bytes=idx_bytes,
        write_gz=write_gz,
        write_fashion=write_fashion,
        cifar_batch=cifar_batch,
        write_cifar=write_cifar,
        write_csv=write_csv,
    )
