"""MNIST, Fashion-MNIST and CIFAR-10 in Keras cache formats, written here in the real formats; downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import socket
import struct
import sys
import tarfile
import urllib.request

import numpy as np
import pytest

from data import file_checks, image_files
from data.datasets import Dataset, DatasetError, load_dataset


def test_mnist_npz(tmp_path, formats):
    arrays = formats.write_mnist_npz(tmp_path)
    ds = load_dataset("mnist", str(tmp_path))
    assert isinstance(ds, Dataset) and ds.name == "mnist"
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.x_test.shape == (5, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_train[..., 0], arrays["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
    assert ds.num_classes == 10


def test_mnist_npz_missing_keys(tmp_path, formats):
    formats.write_mnist_npz(tmp_path, drop=("y_test",))
    with pytest.raises(DatasetError, match=r"lacks arrays \['y_test'\]"):
        load_dataset("mnist", str(tmp_path))


def test_mnist_not_an_npz(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 this is no zip")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        load_dataset("mnist", str(tmp_path))


def test_mnist_wrong_image_shape_and_label_range(tmp_path, formats):
    np.savez(
        tmp_path / "mnist.npz",
        x_train=formats.images(4, (32, 32), 0),
        y_train=formats.labels(4, 0),
        x_test=formats.images(2, (32, 32), 0),
        y_test=formats.labels(2, 0),
    )
    with pytest.raises(DatasetError, match=r"shape \(32, 32\), expected \(28, 28\)"):
        load_dataset("mnist", str(tmp_path))
    np.savez(
        tmp_path / "mnist.npz",
        x_train=formats.images(4, (28, 28), 0),
        y_train=np.array([0, 1, 2, 10], np.uint8),
        x_test=formats.images(2, (28, 28), 0),
        y_test=formats.labels(2, 0),
    )
    with pytest.raises(DatasetError, match=r"labels must be integers in 0..9"):
        load_dataset("mnist", str(tmp_path))
    np.savez(
        tmp_path / "mnist.npz",
        x_train=formats.images(4, (28, 28), 0),
        y_train=formats.labels(3, 0),
        x_test=formats.images(2, (28, 28), 0),
        y_test=formats.labels(2, 0),
    )
    with pytest.raises(DatasetError, match="4 train images but 3 labels"):
        load_dataset("mnist", str(tmp_path))


def test_idx_header_is_the_published_one(formats):
    raw = formats.idx_bytes(np.zeros((2, 28, 28), np.uint8))
    assert raw[:4] == b"\x00\x00\x08\x03" and struct.unpack(">III", raw[4:16]) == (2, 28, 28)
    assert formats.idx_bytes(np.zeros(2, np.uint8))[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x02"


@pytest.mark.parametrize("subdir", ["", "fashion-mnist"])  # flat, or Keras's own cache layout
def test_fashion_mnist(tmp_path, subdir, formats):
    arrays = formats.write_fashion(tmp_path / subdir if subdir else tmp_path)
    ds = load_dataset("fashion_mnist", str(tmp_path))
    assert ds.x_train.shape == (10, 28, 28, 1) and ds.x_test.shape == (4, 28, 28, 1)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte.gz"])
    np.testing.assert_allclose(ds.x_test[..., 0] * 255.0, arrays["t10k-images-idx3-ubyte.gz"], atol=1e-4)
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 10


def test_fashion_mnist_truncated_idx(tmp_path, formats):
    arrays = formats.write_fashion(tmp_path)
    raw = formats.idx_bytes(arrays["train-images-idx3-ubyte.gz"])
    formats.write_gz(tmp_path / "train-images-idx3-ubyte.gz", raw[:-100])  # valid gzip, short payload
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz is truncated: header says \[10, 28"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_fashion_mnist_truncated_gzip_stream(tmp_path, formats):
    formats.write_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])  # cut mid-stream, as an interrupted download would
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz is not a complete gzip file"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_fashion_mnist_corrupt_deflate_data(tmp_path, formats):
    arrays = formats.write_fashion(tmp_path)
    raw = bytearray(gzip.compress(formats.idx_bytes(arrays["train-images-idx3-ubyte.gz"])))  # no file name
    raw[10] = 0xFF  # the first deflate block's header: an invalid block type (zlib.error, not an OSError)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(bytes(raw))
    with pytest.raises(
        DatasetError, match="idx3-ubyte.gz is not a complete gzip file: Error -3 .* invalid block"
    ):
        load_dataset("fashion_mnist", str(tmp_path))


def test_fashion_mnist_bad_magic_and_mismatched_counts(tmp_path, formats):
    arrays = formats.write_fashion(tmp_path)
    # An image file where a label file should be: magic 0x00000803, expected 0x00000801.
    formats.write_gz(
        tmp_path / "train-labels-idx1-ubyte.gz", formats.idx_bytes(arrays["train-images-idx3-ubyte.gz"])
    )
    with pytest.raises(DatasetError, match="not a 1-d unsigned-byte IDX file.*00000803"):
        load_dataset("fashion_mnist", str(tmp_path))
    formats.write_gz(tmp_path / "train-labels-idx1-ubyte.gz", formats.idx_bytes(formats.labels(9, 0)))
    with pytest.raises(DatasetError, match="10 train images but 9 labels"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_fashion_mnist_missing_file(tmp_path, formats):
    formats.write_fashion(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz.*--download"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_cifar10_concatenates_batches_and_transposes_chw_to_hwc(tmp_path, formats):
    batches = formats.write_cifar(tmp_path, n=3)
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


def test_cifar10_missing_batch_and_bad_contents(tmp_path, formats):
    formats.write_cifar(tmp_path)
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


def test_cifar10_refuses_pickles_that_run_code(tmp_path, formats):
    formats.write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": os.system, b"labels": []}, f)  # a global a real batch never holds
    with pytest.raises(DatasetError, match="refusing to load posix.system"):
        load_dataset("cifar10", str(tmp_path))


_ONE_ROW = {b"labels": [0]}


@pytest.mark.parametrize(
    "raw, message",
    [  # BINBYTES8 of 10**12 bytes: the C unpickler allocates them before it reads (a MemoryError)
        (
            b"\x80\x04\x8e" + (10**12).to_bytes(8, "little") + b"x.",
            "expected 1000000000000 bytes in a bytes8",
        ),
        # BINPUT at memo index 5e7: the unpickler grows and zeroes its memo to 1e8 entries (800 MB)
        (
            b"\x80\x02Nr" + (50_000_000).to_bytes(4, "little") + b".",
            "memo index 50,000,000 at byte 3 is beyond",
        ),
        # an object array is unpickled from a list (numpy 1.25 crashes on a list shorter than its shape)
        (pickle.dumps({**_ONE_ROW, b"data": np.zeros((1, 3072), object)}), "refusing an array of object"),
        (
            pickle.dumps({**_ONE_ROW, b"data": np.zeros((1, 3072), "V1")}, protocol=2),
            "refusing an array of |V1",
        ),
    ],
    ids=["declared_length", "memo_index", "objects", "void"],
)
def test_cifar10_refuses_pickles_that_would_take_more_than_they_hold(tmp_path, formats, raw, message):
    formats.write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(raw)
    with pytest.raises(
        DatasetError, match=f"data_batch_3 is not a CIFAR-10 python batch: {re.escape(message)}"
    ):
        load_dataset("cifar10", str(tmp_path))


def test_cifar10_batch_larger_than_memory_and_protocol_5(tmp_path, formats, monkeypatch):
    batches = formats.write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump(batches["test_batch"], f, protocol=5)  # numpy's arrays as _frombuffer
    assert load_dataset("cifar10", str(tmp_path)).x_test.shape == (4, 32, 32, 3)
    monkeypatch.setattr(file_checks, "_available_memory", lambda: 1000)
    with pytest.raises(
        DatasetError, match=r"data_batch_1 is a file of 9,\d{3} bytes, more than the 1,000 bytes"
    ):
        load_dataset("cifar10", str(tmp_path))


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
        monkeypatch.setitem(image_files._SOURCES, fname, (url, "sha256", hashlib.sha256(payload).hexdigest()))

    def urlopen(url, timeout=None):
        requested.append(url)
        return _FakeResponse(files[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


def test_download_mnist_verifies_and_then_reuses(tmp_path, monkeypatch, formats):
    src = tmp_path / "src"
    src.mkdir()
    arrays = formats.write_mnist_npz(src)
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
        image_files._SOURCES, "mnist.npz", ("https://example.invalid/mnist.npz", "sha256", "0" * 64)
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


def test_download_larger_than_any_published_file_is_refused(tmp_path, monkeypatch):
    _serve(monkeypatch, {"mnist.npz": bytes(3 << 20)})
    monkeypatch.setattr(image_files, "_DOWNLOAD_BYTES", 2 << 20)
    with pytest.raises(DatasetError, match=r"mnist.npz is over 2,097,152 bytes: not the published file$"):
        load_dataset("mnist", str(tmp_path), download=True)
    assert os.listdir(tmp_path) == []


def test_download_fashion_mnist_and_cifar10(tmp_path, monkeypatch, formats):
    src = tmp_path / "src"
    fashion = formats.write_fashion(src)
    batches = formats.write_cifar(src, n=2)
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
    for fname in image_files._FASHION_FILES + ("mnist.npz", "cifar-10-python.tar.gz"):
        url, algorithm, digest = image_files._SOURCES[fname]
        assert url.startswith("https://") and url.endswith(fname)
        assert len(digest) == {"md5": 32, "sha256": 64}[algorithm]
