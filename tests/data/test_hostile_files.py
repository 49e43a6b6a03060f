"""Hostile data files: special files, forged .npy headers, repeated or endless CSV headers, gzip bombs.

Each is refused in one line naming the path before anything opens or parses it. A FIFO test cannot hang
on a regression: a watchdog opens the FIFO for writing after a while, which ends any blocked open()
with an empty read, so the loader then fails with some other message and the test fails.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy

from data import file_checks, image_files
from data.datasets import DatasetError, load_dataset
from data.emnist import load_emnist
from data.schema import SchemaError
from data.table_files import load_table
from training.prediction import load_queries

_UNBLOCK_AFTER_S = 20.0
_CSV = "a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40))


@contextlib.contextmanager
def _fifo_watchdog(path: str | None):
    """From _UNBLOCK_AFTER_S on, unblocks any reader stuck in open(path) (a no-op if nobody reads)."""
    done = threading.Event()

    def unblock() -> None:
        if done.wait(_UNBLOCK_AFTER_S) or path is None:
            return
        while not done.wait(0.2):  # again and again: a loader may open the file more than once
            with contextlib.suppress(OSError):  # ENXIO: no reader is waiting
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.fixture
def special(tmp_path):
    """special(kind, path): makes `path` a FIFO, a character device (a link to /dev/null: /dev/zero is
    the issue's, but a regression would then read it until memory runs out), a socket
    (a link to one in a short folder: socket paths are limited to ~100 bytes) or a folder."""
    sockets = []

    def make(kind: str, path) -> str:
        path = str(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "device":
            os.symlink(os.devnull, path)
        elif kind == "socket":
            folder = tempfile.mkdtemp(prefix="sock", dir="/tmp")
            s = socket.socket(socket.AF_UNIX)
            s.bind(os.path.join(folder, "s"))
            sockets.append((s, folder))
            os.symlink(os.path.join(folder, "s"), path)
        else:
            os.mkdir(path)
        return path

    yield make
    for s, folder in sockets:
        s.close()
        shutil.rmtree(folder, ignore_errors=True)


_KIND_WORDS = {"fifo": "a FIFO", "device": "a character device", "socket": "a socket", "folder": "a folder"}


def _csv_file(tmp_path, special, kind, formats):
    path = special(kind, tmp_path / "data.csv")
    return lambda: load_dataset("csv", path), path


def _table_folder(tmp_path, special, kind, formats):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.csv").write_text(_CSV)
    return lambda: load_table(str(tmp_path / "t")), special(kind, tmp_path / "t" / "test.csv")


def _parquet(tmp_path, special, kind, formats):
    pytest.importorskip("pyarrow")
    path = special(kind, tmp_path / "d.parquet")
    return lambda: load_dataset("csv", path), path


def _schema(tmp_path, special, kind, formats):
    (tmp_path / "d.csv").write_text(_CSV)
    path = special(kind, tmp_path / "schema.json")
    return lambda: load_dataset("csv", str(tmp_path / "d.csv"), schema_file=path), path


def _mnist(tmp_path, special, kind, formats):
    return lambda: load_dataset("mnist", str(tmp_path)), special(kind, tmp_path / "mnist.npz")


def _fashion(tmp_path, special, kind, formats):
    formats.write_fashion(tmp_path)
    os.remove(tmp_path / "t10k-images-idx3-ubyte.gz")
    return lambda: load_dataset("fashion_mnist", str(tmp_path)), special(
        kind, tmp_path / "t10k-images-idx3-ubyte.gz"
    )


def _cifar(tmp_path, special, kind, formats):
    formats.write_cifar(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_2")
    return lambda: load_dataset("cifar10", str(tmp_path)), special(
        kind, tmp_path / "cifar-10-batches-py" / "data_batch_2"
    )


def _image(tmp_path, special, kind, formats):
    """ant/a.png is the first listed image, decoded first: the others are never read, any bytes do."""
    for name in ("ant", "bee"):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "img" / name / f"b{i}.png").write_bytes(b"never decoded")
    path = special(kind, tmp_path / "img" / "ant" / "a.png")
    return lambda: load_dataset("image_folder", str(tmp_path / "img")), path


def _emnist(tmp_path, special, kind, formats):
    return lambda: load_emnist(str(tmp_path)), special(kind, tmp_path / "emnist_all.sqlite")


def _predict(suffix):
    def make(tmp_path, special, kind, formats):
        path = special(kind, tmp_path / f"queries{suffix}")
        return lambda: load_queries(3, input_file=path), path

    return make


_LOADERS = {
    "csv": _csv_file,
    "table_folder": _table_folder,
    "parquet": _parquet,
    "schema": _schema,
    "mnist": _mnist,
    "fashion": _fashion,
    "cifar": _cifar,
    "image": _image,
    "emnist": _emnist,
    "predict_npy": _predict(".npy"),
    "predict_csv": _predict(".csv"),
}
_CASES = [(loader, kind) for loader in _LOADERS for kind in ("fifo", "device")]
_CASES += [
    (loader, kind)
    for loader in ("table_folder", "mnist", "schema", "predict_npy")
    for kind in ("socket", "folder")
]
_CASES += [("csv", "socket")]


@pytest.mark.parametrize("loader, kind", _CASES)
def test_special_files_are_refused_before_they_are_opened(tmp_path, special, formats, loader, kind):
    load, path = _LOADERS[loader](tmp_path, special, kind, formats)
    with _fifo_watchdog(path if kind == "fifo" else None), pytest.raises(DatasetError) as info:
        load()
    message = str(info.value)
    assert f" {path} is not a regular file ({_KIND_WORDS[kind]}); give a regular file" in message
    assert "\n" not in message
    if loader == "schema":
        assert isinstance(info.value, SchemaError)


def _header(shape, descr: str = "|u1") -> bytes:
    out = io.BytesIO()
    npy.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _mnist_npz(folder, x_train: bytes) -> str:
    """mnist.npz whose x_train.npy member is `x_train` (raw bytes: any header), the rest valid."""
    rng = np.random.default_rng(0)
    path = os.path.join(folder, "mnist.npz")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_train.npy", x_train)
        z.writestr("y_train.npy", _npy(rng.integers(0, 10, 4, dtype=np.uint8)))
        z.writestr("x_test.npy", _npy(rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)))
        z.writestr("y_test.npy", _npy(rng.integers(0, 10, 2, dtype=np.uint8)))
    return path


_PIXELS = bytes(4 * 28 * 28)


@pytest.mark.parametrize(
    "member, message",
    [
        (
            _header((10**9, 28, 28)) + _PIXELS,
            r"declares shape \(1000000000, 28, 28\) of uint8 \(784,000,000,000 "
            r"bytes\) but stores 3,136 bytes: the file is damaged or forged; replace it",
        ),  # fmt: skip
        (_header((4, 28, 28)) + _PIXELS[:-1], r"\(3,136 bytes\) but stores 3,135 bytes"),
        (_header((3, 28, 28)) + _PIXELS, r"\(2,352 bytes\) but stores 3,136 bytes"),
        (_header((4, 28, 28), "<f8") + _PIXELS, r"of float64 \(25,088 bytes\) but stores 3,136"),
        (b"\x93NUMPY\x01\x00\x10\x00{'shape': (", r"is not a readable .npy array"),
        (b"not an array at all", r"is not a readable .npy array \(the magic string is not correct"),
    ],
    ids=["huge", "short", "long", "dtype", "cut_header", "no_magic"],
)
def test_npz_headers_are_checked_against_the_stored_sizes(tmp_path, member, message):
    path = _mnist_npz(tmp_path, member)
    with pytest.raises(DatasetError, match=f"^{re.escape(path)}: member x_train.npy .*{message}") as info:
        load_dataset("mnist", str(tmp_path))
    assert "\n" not in str(info.value)


def test_npz_that_does_not_fit_in_memory_and_a_non_zip_npz(tmp_path, monkeypatch):
    path = _mnist_npz(tmp_path, _header((4, 28, 28)) + _PIXELS)
    assert load_dataset("mnist", str(tmp_path)).x_train.shape == (4, 28, 28, 1)  # valid as written
    monkeypatch.setattr(file_checks, "_available_memory", lambda: 4000)
    with pytest.raises(
        DatasetError,
        match=rf"^{re.escape(path)} holds arrays of 4,710 bytes, more than the 4,000 bytes of memory",
    ):
        load_dataset("mnist", str(tmp_path))
    monkeypatch.undo()
    (tmp_path / "mnist.npz").write_bytes(b"\x00" * 1000)
    with pytest.raises(
        DatasetError, match=rf"^{re.escape(path)} is not a readable .npz file \(File is not a zip file\)$"
    ):
        load_dataset("mnist", str(tmp_path))


def test_a_forged_npy_to_predict_is_refused(tmp_path):
    path = tmp_path / "q.npy"
    path.write_bytes(_header((10**12, 8, 8), "<f4") + bytes(3 * 64 * 4))
    with pytest.raises(
        DatasetError, match=rf"^{re.escape(str(path))} declares shape \(1000000000000, 8, 8\) of float32"
    ):
        load_queries(3, input_file=str(path))
    path.write_bytes(_npy(np.zeros((3, 8, 8), np.float32)))
    assert load_queries(3, input_file=str(path))[0].shape == (3, 8, 8)


@pytest.fixture
def no_pandas_csv(monkeypatch):
    """pandas.read_csv raises: a CSV the header check refuses never reaches pandas."""
    import pandas as pd

    def refuse(*args, **kwargs):
        raise AssertionError("pandas.read_csv was called")

    monkeypatch.setattr(pd, "read_csv", refuse)


def test_a_repeated_column_name_is_refused_before_pandas(tmp_path, no_pandas_csv):
    path = tmp_path / "leak.csv"
    path.write_text("a,label,b,label,b\n" + "".join(f"{i},{i % 2},1,{i % 2},2\n" for i in range(30)))
    expected = rf"^{re.escape(str(path))} repeats the column name\(s\) \['b', 'label'\] in its header: give"
    with pytest.raises(DatasetError, match=expected):
        load_dataset("csv", str(path))
    with pytest.raises(DatasetError, match=expected):
        load_queries(3, input_file=str(path))  # predict's numeric CSV: the label would be a feature
    schema = {"label": "label", "task": "classification", "classes": ["0", "1"],
              "columns": [{"name": "a", "kind": "numeric"}]}  # fmt: skip
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "schema.json").write_text(json.dumps(schema))
    with pytest.raises(DatasetError, match=expected):  # predict with a table model
        load_queries(3, input_file=str(path), model_dir=str(tmp_path / "run" / "model"))


@pytest.mark.parametrize("repeated", [False, True])
def test_a_million_column_header_fails_fast_before_pandas(tmp_path, no_pandas_csv, repeated):
    path = tmp_path / "wide.csv"
    names = ["c"] * 1_000_000 if repeated else [f"c{i}" for i in range(1_000_000)]
    path.write_text(",".join(names) + "\n\n")
    start = time.monotonic()
    with pytest.raises(DatasetError, match="repeats the column name" if repeated else "a header but no rows"):
        load_dataset("csv", str(path))
    assert time.monotonic() - start < 30  # linear: about a second even on a loaded machine


def test_header_check_keeps_what_pandas_reads(tmp_path):
    """Empty names stay allowed (pandas names them Unnamed: i); blank lines and quoting as pandas."""
    path = tmp_path / "ok.csv"
    path.write_text('\n"x,1",,,label\n' + "".join(f"{i},{i},{i},{i % 2}\n" for i in range(30)))
    assert file_checks.csv_header(str(path)) == ["x,1", "", "", "label"]
    assert "Unnamed: 1" in [c.name for c in load_table(str(path)).schema.columns]
    path.write_text("")
    with pytest.raises(DatasetError, match=rf"^cannot parse {re.escape(str(path))}: it is empty"):
        load_table(str(path))


def test_a_parquet_with_a_repeated_column_name_is_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        [pa.array([1.0, 2.0]), pa.array([0, 1]), pa.array([0, 1])], names=["a", "label", "label"]
    )
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(DatasetError, match=r"d.parquet repeats the column name\(s\) \['label'\] in its"):
        load_dataset("csv", str(tmp_path / "d.parquet"))
    (tmp_path / "e.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"^cannot parse .*e.parquet: "):
        load_dataset("csv", str(tmp_path / "e.parquet"))


_ZEROS_MIB = gzip.compress(bytes(1 << 20), 9)  # 1 KB; a gzip of members one after another is one stream
_REFETCH = "delete it and pass --download to refetch"
_BOUND = 16 << 20  # bytes the loaders may allocate on these bombs, which unpack to 64 MiB or more


def _idx_gz(dims, payload: bytes = b"", zero_mib: int = 0) -> bytes:
    """A gzipped IDX file: header for `dims`, `payload`, then `zero_mib` MiB of zeros (1 KB each)."""
    head = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return gzip.compress(head + payload) + _ZEROS_MIB * zero_mib


def _fashion_files(folder, train_images: bytes) -> str:
    """The four Fashion-MNIST files, valid but for train-images (the second one read); its path."""
    labels, images = _idx_gz((4,), bytes(4)), _idx_gz((4, 28, 28), _PIXELS)
    files = {"train-labels-idx1-ubyte.gz": labels, "train-images-idx3-ubyte.gz": train_images,
             "t10k-labels-idx1-ubyte.gz": labels, "t10k-images-idx3-ubyte.gz": images}  # fmt: skip
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return str(folder / "train-images-idx3-ubyte.gz")


@contextlib.contextmanager
def _bounded(limit: int = _BOUND, seconds: float = 5.0):
    """Fails unless the body allocates (numpy arrays included) at most `limit` bytes at its peak, in time."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit and time.monotonic() - start < seconds, (peak, time.monotonic() - start)


@pytest.mark.parametrize(
    "dims, zero_mib, message",
    [
        ((10**9, 28, 28), 64, r"has an IDX header declaring \[1000000000, 28, 28\]: 730.2 GiB, more than the "
                              rf"[\d.]+ GiB of memory available; {_REFETCH}"),
        ((100, 28, 28), 512, r"is longer than its header says: header says \[100, 28, 28\] \(78,400 bytes\), "
                             rf"has more; {_REFETCH}"),
        ((4, 32, 32), 64, rf"holds images of 32x32 pixels, Fashion-MNIST's are 28x28; {_REFETCH}"),
    ],
    ids=["declares_too_much", "longer_than_declared", "not_28x28"],
)  # fmt: skip
def test_a_gzip_bomb_idx_is_refused_having_read_at_most_what_its_header_declares(
    tmp_path, dims, zero_mib, message
):
    """Were the payload read first, the first and last would be "truncated" (64 MiB, not what the header
    says); reading the whole of any of them would allocate 64 to 512 MiB."""
    payload = bytes(100 * 28 * 28) if dims[0] == 100 else b""
    path = _fashion_files(tmp_path, _idx_gz(dims, payload, zero_mib))
    with _bounded(), pytest.raises(DatasetError, match=f"^{re.escape(path)} {message}$") as info:
        load_dataset("fashion_mnist", str(tmp_path))
    assert "\n" not in str(info.value)


def _member(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}".rstrip("/"))
    info.size, info.type = size, kind
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def _cifar_archive(folder, members, zero_mib: int = 0) -> str:
    """cifar-10-python.tar.gz of `members` ((TarInfo, data) pairs, headers written as declared whatever
    the data), then `zero_mib` MiB of zeros; its path."""
    tar = io.BytesIO()
    for info, data in members:
        tar.write(info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512))
    path = folder / "cifar-10-python.tar.gz"
    path.write_bytes(gzip.compress(tar.getvalue() + bytes(1024)) + _ZEROS_MIB * zero_mib)
    return str(path)


_FOLDER = (_member("", kind=tarfile.DIRTYPE), b"")
_BATCH_1 = "member 'cifar-10-batches-py/data_batch_1'"
_NOT_FILE = ", not a file or folder"
_FORGED = f": the archive is damaged or forged; {_REFETCH}"
_SYMLINK = _member("data_batch_1", kind=tarfile.SYMTYPE, linkname="test_batch")
_DEVICE = _member("data_batch_1", kind=tarfile.CHRTYPE, devmajor=1, devminor=5)
_ARCHIVES = {  # members, MiB of zeros after them, _CIFAR_TOTAL_BYTES, message
    "declares_too_much": ([_FOLDER, (_member("data_batch_1", 10**12), bytes(4096))], 0, None,
                          f": {_BATCH_1} declares 1,000,000,000,000 bytes, more than the 67,108,864 a "
                          "CIFAR-10 file may have"),
    "symlink": ([_FOLDER, (_SYMLINK, b"")], 0, None, f": {_BATCH_1} is a symbolic link{_NOT_FILE}"),
    "device": ([_FOLDER, (_DEVICE, b"")], 0, None, f": {_BATCH_1} is a character device{_NOT_FILE}"),
    "too_many": ([_FOLDER] + [(_member(f"f{i}"), b"") for i in range(64)], 0, None,
                 " holds more than 64 members (the real one 9)"),
    "too_much_in_all": ([_FOLDER] + [(_member(f"data_batch_{i}", 4096), bytes(4096)) for i in (1, 2, 3)], 0,
                        10_000, "'s members declare more than 10,000 bytes in all"),
    "unpacks_too_much": ([_FOLDER, (_member("x", 64 << 20, tarfile.GNUTYPE_LONGNAME), b"")], 64, 1 << 20,
                         " unpacks to more than 2,097,152 bytes"),  # a GNU long name tarfile reads whole
}  # fmt: skip


@pytest.mark.parametrize("case", list(_ARCHIVES))
def test_a_forged_cifar_archive_is_refused_before_its_members_are_read(tmp_path, monkeypatch, case):
    members, zero_mib, total, message = _ARCHIVES[case]
    if total is not None:
        monkeypatch.setattr(image_files, "_CIFAR_TOTAL_BYTES", total)
    path = _cifar_archive(tmp_path, members, zero_mib)
    with _bounded(), pytest.raises(DatasetError) as info:
        load_dataset("cifar10", str(tmp_path), download=True)  # the archive is there: not downloaded
    assert str(info.value) == path + message + _FORGED
    assert os.listdir(tmp_path) == ["cifar-10-python.tar.gz"]  # nothing extracted, no temporary folder


def _forged_mnist(tmp_path) -> tuple[list[str], str]:
    _mnist_npz(tmp_path, _header((10**9, 28, 28)) + _PIXELS)
    return ["--dataset=mnist", f"--data_dir={tmp_path}"], "member x_train.npy declares"


def _fifo_csv(tmp_path) -> tuple[list[str], str]:
    os.mkfifo(tmp_path / "data.csv")
    return ["--dataset=csv", f"--data_dir={tmp_path / 'data.csv'}"], "is not a regular file (a FIFO)"


def _repeated_label(tmp_path) -> tuple[list[str], str]:
    (tmp_path / "d.csv").write_text("a,label,label\n" + "".join(f"{i},{i % 2},{i % 2}\n" for i in range(30)))
    return ["--dataset=csv", f"--data_dir={tmp_path / 'd.csv'}"], "repeats the column name(s) ['label']"


def _fashion_bomb(tmp_path) -> tuple[list[str], str]:
    _fashion_files(tmp_path, _idx_gz((10**9, 28, 28), zero_mib=64))
    return ["--dataset=fashion_mnist", f"--data_dir={tmp_path}"], "declaring [1000000000, 28, 28]: 730.2 GiB"


def _cifar_bomb(tmp_path) -> tuple[list[str], str]:
    _cifar_archive(tmp_path, _ARCHIVES["declares_too_much"][0])
    return ["--dataset=cifar10", f"--data_dir={tmp_path}", "--download"], "declares 1,000,000,000,000 bytes"


@pytest.mark.parametrize("case", [_fifo_csv, _forged_mnist, _repeated_label, _fashion_bomb, _cifar_bomb])
def test_train_centralized_refuses_hostile_files_in_one_line(run_binary, tmp_path, case):
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    flags, expected = case(data)
    fifo = str(data / "data.csv")
    with _fifo_watchdog(fifo if case is _fifo_csv else None):  # a blocked run then ends
        proc = run_binary("train_centralized", *flags, "--epochs=1", f"--root_output_dir={runs}", timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("train_centralized: error: ") and expected in lines[0]
    assert str(data) in lines[0] and not runs.exists()
