"""Dataset loaders on small files written in the real on-disk formats (no network, no TF)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import socket
import struct
import sys
import tarfile
import urllib.request

import numpy as np
import pytest

from data import datasets
from data.datasets import DATASETS, Dataset, DatasetError, load_csv, load_dataset

# ---------------------------------------------------------------------------------------------
# Writers for the real formats.


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


# ---------------------------------------------------------------------------------------------
# Built-in datasets.


def test_digits_shapes_range_and_count():
    ds = load_dataset("digits")
    assert ds.num_train + len(ds.x_test) == 1797
    assert ds.input_shape == (8, 8, 1) and ds.x_test.shape[1:] == (8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0 and ds.x_train.max() == 1.0
    assert ds.num_classes == 10 and ds.task == "classification"
    assert set(np.unique(ds.y_train)) == set(range(10)) and ds.client_ids is None


def test_digits_split_is_stratified_and_deterministic_per_seed():
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    train_share = np.bincount(a.y_train, minlength=10) / a.num_train
    test_share = np.bincount(a.y_test, minlength=10) / len(a.y_test)
    assert np.abs(train_share - test_share).max() < 0.01  # stratified: same class mix


def test_synthetic_regression_has_slope_three():
    ds = load_dataset("synthetic_regression", seed=1)
    assert ds.task == "regression" and ds.num_classes == 0 and ds.input_shape == (1,)
    design = np.c_[ds.x_train[:, 0], np.ones(ds.num_train)]
    slope, intercept = np.linalg.lstsq(design, ds.y_train, rcond=None)[0]
    assert slope == pytest.approx(3.0, abs=0.05) and intercept == pytest.approx(0.0, abs=0.05)
    residual = ds.y_test - 3.0 * ds.x_test[:, 0]
    assert residual.std() == pytest.approx(0.5, abs=0.05)


def test_synthetic_classification():
    ds = load_dataset("synthetic_classification", seed=2)
    assert ds.input_shape == (20,) and ds.num_classes == 4 and ds.num_train == 4000
    assert set(np.unique(ds.y_test)) == set(range(4))


# ---------------------------------------------------------------------------------------------
# MNIST (Keras mnist.npz).


def test_mnist_npz(tmp_path):
    arrays = write_mnist_npz(tmp_path)
    ds = load_dataset("mnist", str(tmp_path))
    assert isinstance(ds, Dataset) and ds.name == "mnist"
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_train[..., 0], arrays["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
    assert ds.num_classes == 10


def test_mnist_npz_missing_keys(tmp_path):
    write_mnist_npz(tmp_path, drop=("y_test",))
    with pytest.raises(DatasetError, match=r"lacks arrays \['y_test'\]"):
        load_dataset("mnist", str(tmp_path))


def test_mnist_not_an_npz(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 this is no zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_dataset("mnist", str(tmp_path))


def test_mnist_wrong_image_shape_and_label_range(tmp_path):
    np.savez(
        tmp_path / "mnist.npz",
        x_train=_images(4, (32, 32), 0),
        y_train=_labels(4, 0),
        x_test=_images(2, (32, 32), 0),
        y_test=_labels(2, 0),
    )
    with pytest.raises(DatasetError, match=r"shape \(32, 32\), expected \(28, 28\)"):
        load_dataset("mnist", str(tmp_path))
    np.savez(
        tmp_path / "mnist.npz",
        x_train=_images(4, (28, 28), 0),
        y_train=np.array([0, 1, 2, 10], np.uint8),
        x_test=_images(2, (28, 28), 0),
        y_test=_labels(2, 0),
    )
    with pytest.raises(DatasetError, match=r"labels must be integers in 0..9"):
        load_dataset("mnist", str(tmp_path))
    np.savez(
        tmp_path / "mnist.npz",
        x_train=_images(4, (28, 28), 0),
        y_train=_labels(3, 0),
        x_test=_images(2, (28, 28), 0),
        y_test=_labels(2, 0),
    )
    with pytest.raises(DatasetError, match="4 train images but 3 labels"):
        load_dataset("mnist", str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST (four gzipped IDX files).


def test_idx_header_is_the_published_one():
    raw = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    assert raw[:4] == b"\x00\x00\x08\x03" and struct.unpack(">III", raw[4:16]) == (2, 28, 28)
    assert idx_bytes(np.zeros(2, np.uint8))[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x02"


@pytest.mark.parametrize("subdir", ["", "fashion-mnist"])  # flat, or Keras's own cache layout
def test_fashion_mnist(tmp_path, subdir):
    arrays = write_fashion(tmp_path / subdir if subdir else tmp_path)
    ds = load_dataset("fashion_mnist", str(tmp_path))
    assert ds.x_train.shape == (10, 28, 28, 1) and ds.x_test.shape == (4, 28, 28, 1)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte.gz"])
    np.testing.assert_allclose(ds.x_test[..., 0] * 255.0, arrays["t10k-images-idx3-ubyte.gz"], atol=1e-4)
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 10


def test_fashion_mnist_truncated_idx(tmp_path):
    arrays = write_fashion(tmp_path)
    raw = idx_bytes(arrays["train-images-idx3-ubyte.gz"])
    write_gz(tmp_path / "train-images-idx3-ubyte.gz", raw[:-100])  # valid gzip, short payload
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz is truncated: header says \[10, 28"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_fashion_mnist_truncated_gzip_stream(tmp_path):
    write_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])  # cut mid-stream, as an interrupted download would
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz is not a complete gzip file"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_fashion_mnist_bad_magic_and_mismatched_counts(tmp_path):
    arrays = write_fashion(tmp_path)
    # An image file where a label file should be: magic 0x00000803, expected 0x00000801.
    write_gz(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(arrays["train-images-idx3-ubyte.gz"]))
    with pytest.raises(DatasetError, match="not a 1-d unsigned-byte IDX file.*00000803"):
        load_dataset("fashion_mnist", str(tmp_path))
    write_gz(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(_labels(9, 0)))
    with pytest.raises(DatasetError, match="10 train images but 9 labels"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_fashion_mnist_missing_file(tmp_path):
    write_fashion(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz.*--download"):
        load_dataset("fashion_mnist", str(tmp_path))


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (python pickles, CHW rows).


def test_cifar10_concatenates_batches_and_transposes_chw_to_hwc(tmp_path):
    batches = write_cifar(tmp_path, n=3)
    # Plant one known pixel: image 1 of batch 2, row 5, column 7 = (R, G, B) = (11, 22, 33).
    data = batches["data_batch_2"][b"data"]
    data[1] = 0
    for channel, value in enumerate((11, 22, 33)):
        data[1, channel * 1024 + 5 * 32 + 7] = value
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump(batches["data_batch_2"], f)

    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    img = ds.x_train[3 + 1]  # batch 1 has 3 images
    np.testing.assert_allclose(img[5, 7] * 255.0, [11, 22, 33], atol=1e-4)
    assert np.count_nonzero(img) == 3  # nothing else moved into this image
    expected_labels = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.y_train, expected_labels)
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][b"labels"])
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 10


def test_cifar10_missing_batch_and_bad_contents(tmp_path):
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    os.remove(folder / "data_batch_4")
    with pytest.raises(DatasetError, match="data_batch_4 not found"):
        load_dataset("cifar10", str(tmp_path))
    with open(folder / "data_batch_4", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(DatasetError, match=r"data_batch_4 lacks keys \['labels'\]"):
        load_dataset("cifar10", str(tmp_path))
    with open(folder / "data_batch_4", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match=r"shape \(2, 1024\), expected \(n, 3072\)"):
        load_dataset("cifar10", str(tmp_path))
    (folder / "data_batch_4").write_bytes(b"\x80\x04 not a pickle")
    with pytest.raises(DatasetError, match="not a CIFAR-10 python batch"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": os.system, b"labels": []}, f)  # a global a real batch never holds
    with pytest.raises(DatasetError, match="refusing to load posix.system"):
        load_dataset("cifar10", str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Network: only with download=True.


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt or TensorFlow import fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the loader touched the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now raises


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_no_download_never_touches_the_network(tmp_path, no_network, name):
    with pytest.raises(DatasetError, match="--download"):
        load_dataset(name, str(tmp_path / "empty"), download=False)
    assert not os.path.exists(tmp_path / "empty")  # nothing created either


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Makes `_download` see `files` (by file name) and trust their real digests."""
    requested = []
    for fname, payload in files.items():
        url = f"https://example.invalid/{fname}"
        monkeypatch.setitem(datasets._SOURCES, fname, (url, "sha256", hashlib.sha256(payload).hexdigest()))

    def urlopen(url, timeout=None):
        requested.append(url)
        return _FakeResponse(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


def test_download_mnist_verifies_and_then_reuses(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    arrays = write_mnist_npz(src)
    requested = _serve(monkeypatch, {"mnist.npz": (src / "mnist.npz").read_bytes()})
    data_dir = tmp_path / "cache"
    ds = load_dataset("mnist", str(data_dir), download=True)
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])
    assert len(requested) == 1 and sorted(os.listdir(data_dir)) == ["mnist.npz"]  # no temp files left
    load_dataset("mnist", str(data_dir), download=True)
    assert len(requested) == 1  # the cached file is reused


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, {"mnist.npz": b"a substituted file"})
    monkeypatch.setitem(
        datasets._SOURCES, "mnist.npz", ("https://example.invalid/mnist.npz", "sha256", "0" * 64)
    )
    with pytest.raises(DatasetError, match="corrupt or substituted"):
        load_dataset("mnist", str(tmp_path), download=True)
    assert os.listdir(tmp_path) == []


def test_download_failure_is_a_dataset_error(tmp_path, monkeypatch):
    def urlopen(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(DatasetError, match="could not download .*mnist.npz.*Name or service not known"):
        load_dataset("mnist", str(tmp_path), download=True)
    assert os.listdir(tmp_path) == []


def test_download_fashion_mnist_and_cifar10(tmp_path, monkeypatch):
    src = tmp_path / "src"
    fashion = write_fashion(src)
    batches = write_cifar(src, n=2)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    files = {f: (src / f).read_bytes() for f in fashion}
    files["cifar-10-python.tar.gz"] = archive.getvalue()
    _serve(monkeypatch, files)

    cache = tmp_path / "cache"
    fm = load_dataset("fashion_mnist", str(cache), download=True)
    np.testing.assert_array_equal(fm.y_test, fashion["t10k-labels-idx1-ubyte.gz"])
    cifar = load_dataset("cifar10", str(cache), download=True)
    np.testing.assert_array_equal(cifar.y_test, batches["test_batch"][b"labels"])
    assert "cifar-10-python.tar.gz" not in os.listdir(cache)  # archive removed after extraction
    assert not [f for f in os.listdir(cache) if f.startswith(".")]  # no temp files or folders


def test_real_download_checksums_are_pinned():
    for fname in datasets._FASHION_FILES + ("mnist.npz", "cifar-10-python.tar.gz"):
        url, algorithm, digest = datasets._SOURCES[fname]
        assert url.startswith("https://") and url.endswith(fname)
        assert len(digest) == {"md5": 32, "sha256": 64}[algorithm]


# ---------------------------------------------------------------------------------------------
# CSV.

CSV = "f1,f2,label,user\n" + "".join(
    f"{i * 0.5},{i % 3},{i % 4},{['bob', 'alice', 'carol'][i % 3]}\n" for i in range(20)
)


def test_csv_file_with_split(tmp_path):
    path = write_csv(tmp_path / "d.csv", "\n".join(",".join(r.split(",")[:3]) for r in CSV.splitlines()))
    ds = load_dataset("csv", path, seed=0)
    assert ds.num_train == 16 and len(ds.x_test) == 4 and ds.input_shape == (2,)
    assert ds.num_classes == 4 and ds.client_ids is None
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    # Features and labels stay aligned through the split: label == (2*f1) % 4.
    np.testing.assert_array_equal(ds.y_train, (2 * ds.x_train[:, 0]).astype(int) % 4)
    again, other = load_dataset("csv", path, seed=0), load_dataset("csv", path, seed=1)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    assert not np.array_equal(ds.x_test, other.x_test)


def test_csv_folder_with_train_and_test(tmp_path):
    write_csv(tmp_path / "train.csv", "a,label,b\n1,0,2\n3,1,4\n5,2,6\n")
    write_csv(tmp_path / "test.csv", "b,a,label\n20,10,4\n")  # columns in another order
    ds = load_dataset("csv", str(tmp_path))
    np.testing.assert_array_equal(ds.x_train, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(ds.x_test, [[10, 20]])  # matched by name, not position
    assert ds.num_classes == 5  # the largest label anywhere, here in the test file


def test_csv_folder_without_test_csv_splits(tmp_path):
    write_csv(tmp_path / "train.csv", "a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    ds = load_dataset("csv", str(tmp_path))
    assert ds.num_train == 8 and len(ds.x_test) == 2


def test_csv_client_ids_are_dense(tmp_path):
    rows = "x,label,uid\n" + "".join(f"{i},{i % 2},{uid}\n" for i, uid in enumerate([70, 5, 70, 900, 5, 70]))
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "test.csv", "x,label\n1,0\n")  # test file needs no client ids
    ds = load_dataset("csv", str(tmp_path), client_id_column="uid")
    np.testing.assert_array_equal(ds.client_ids, [1, 0, 1, 2, 0, 1])  # 5->0, 70->1, 900->2
    assert ds.input_shape == (1,)  # the id column is not a feature
    np.testing.assert_array_equal(ds.x_train[:, 0], np.arange(6))


def test_csv_client_ids_after_split_and_string_ids(tmp_path):
    path = write_csv(tmp_path / "d.csv", CSV)
    ds = load_csv(path, client_id_column="user", seed=0)
    assert ds.input_shape == (2,) and len(ds.client_ids) == ds.num_train
    k = len(np.unique(ds.client_ids))
    assert k == 3 and set(ds.client_ids) == set(range(k))
    # Every row's client is the one the file gave it: user index == f2 == i % 3.
    names = np.array(["alice", "bob", "carol"])  # sorted, so dense id = position
    np.testing.assert_array_equal(
        names[ds.client_ids], np.array(["bob", "alice", "carol"])[ds.x_train[:, 1].astype(int)]
    )


def test_csv_test_file_with_client_column_is_accepted(tmp_path):
    write_csv(tmp_path / "train.csv", "x,label,uid\n1,0,a\n2,1,b\n")
    write_csv(tmp_path / "test.csv", "x,label,uid\n3,1,c\n")
    ds = load_dataset("csv", str(tmp_path), client_id_column="uid")
    assert ds.x_test.shape == (1, 1) and list(ds.client_ids) == [0, 1]


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("a,b\n1,2\n", {}, r"has no label column 'label'; columns are \['a', 'b'\]"),
        ("a,label\n1,0\n2,1\n", {"client_id_column": "uid"}, "has no client-id column 'uid'"),
        ("a,label\n1,0\nx,1\n", {}, r"non-numeric values in columns \['a'\]"),
        ("a,label\n1,0\n2,cat\n", {}, r"non-numeric values in columns \['label'\]"),
        ("a,label\n1,0\n,1\n", {}, r"missing values \(NaN\) in columns \['a'\]"),
        ("a,label\n1,0\n2,\n", {}, r"missing values \(NaN\) in columns \['label'\]"),
        ("a,label\n1,0\n2,1.5\n", {}, "labels in 'label' must be integers"),
        ("a,label\n1,0\n2,-1\n", {}, "must be non-negative"),
        ("a,label\n1,0\ninf,1\n", {}, r"infinite values in columns \['a'\]"),
        ("label\n1\n0\n", {}, "has no feature columns"),
        ("a,label\n", {}, "has a header but no rows"),
        ("", {}, "cannot parse"),
        ("a,label\n1,0\n", {}, "needs at least 2"),
        ("a,label\n1,0\n2,1\n", {"client_id_column": "label"}, "both 'label'"),
    ],
)
def test_csv_bad_inputs(tmp_path, text, kwargs, message):
    path = write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset("csv", path, **kwargs)
    if "column" in message or "values" in message:
        assert "bad.csv" in str(info.value)  # the message names the file


def test_csv_label_column_option(tmp_path):
    path = write_csv(tmp_path / "d.csv", "target,a\n1,5\n0,6\n1,7\n0,8\n2,9\n")
    ds = load_dataset("csv", path, label_column="target")
    assert ds.input_shape == (1,) and ds.num_classes == 3


def test_csv_train_and_test_features_must_match(tmp_path):
    write_csv(tmp_path / "train.csv", "a,b,label\n1,2,0\n")
    write_csv(tmp_path / "test.csv", "a,c,label\n1,2,0\n")
    with pytest.raises(
        DatasetError, match=r"test.csv has different feature columns.*missing \['b'\], extra \['c'\]"
    ):
        load_dataset("csv", str(tmp_path))


def test_csv_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="CSV file not found"):
        load_dataset("csv", str(tmp_path / "nope.csv"))
    with pytest.raises(DatasetError, match="has no train.csv"):
        load_dataset("csv", str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Dispatcher.


def test_unknown_dataset_name():
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'.*digits"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "csv"])
def test_file_datasets_need_data_dir(name):
    with pytest.raises(DatasetError, match="needs --data_dir"):
        load_dataset(name)


def test_client_id_column_only_for_csv():
    with pytest.raises(DatasetError, match="only applies to --dataset=csv"):
        load_dataset("digits", client_id_column="uid")


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)  # binaries report ValueErrors as usage errors
    assert set(DATASETS) >= {"digits", "mnist", "fashion_mnist", "cifar10", "csv", "synthetic_regression"}
