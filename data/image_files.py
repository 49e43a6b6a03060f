"""MNIST, Fashion-MNIST and CIFAR-10 in the files Keras caches, with checksummed downloads.

Files are read from `data_dir` (so `~/.keras/datasets` works) and fetched only when asked, with the
published checksums verified: a silently truncated or substituted file would make every DP result
meaningless.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
import zlib

import numpy as np

from data import file_checks
from data.datasets import Dataset, DatasetError

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
_REFETCH = "delete it and pass --download to refetch"
_CHUNK = 1 << 20  # bytes decompressed at a time
_DOWNLOAD_BYTES = 1 << 30  # the largest published file, CIFAR-10's archive, has 163 MiB
# The real CIFAR-10 archive: 9 members (a folder, 8 files), the largest 31 MB, 178 MiB in all.
_CIFAR_MEMBERS = 64
_CIFAR_MEMBER_BYTES = 1 << 26
_CIFAR_TOTAL_BYTES = 1 << 28
_TAR_HEADER_BYTES = 1 << 20  # allowance for headers and padding beyond the members' data

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
            size = 0
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > _DOWNLOAD_BYTES:
                    raise DatasetError(
                        f"download of {url} is over {_DOWNLOAD_BYTES:,} bytes: not the published file"
                    )
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
    file_checks.check_npz(path, ("x_train", "y_train", "x_test", "y_test"), "MNIST file")  # before np.load
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


def _idx_dims(f, path: str, ndim: int) -> list[int]:
    """The dims in the IDX header at the start of `f`, checked against Fashion-MNIST and memory."""
    head = f.read(4 + 4 * ndim)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] != ndim:
        raise DatasetError(
            f"{path} is not a {ndim}-d unsigned-byte IDX file (magic {head[:4].hex() or 'missing'}, "
            f"expected 0000080{ndim})"
        )
    if len(head) < 4 + 4 * ndim:
        raise DatasetError(f"{path} is truncated inside its IDX header; {_REFETCH}")
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if ndim == 3 and dims[1:] != [28, 28]:
        raise DatasetError(
            f"{path} holds images of {dims[1]}x{dims[2]} pixels, Fashion-MNIST's are 28x28; {_REFETCH}"
        )
    file_checks.fits_in_memory(path, math.prod(dims), f"has an IDX header declaring {dims}:", _REFETCH)
    return dims


def _read_idx(path: str, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x000008NN, NN = number of dims, big-endian dims).

    The header is read and checked first; then at most the bytes it declares and one more (which
    shows a file longer than its header says), in chunks: a gzip bomb is never decompressed whole.
    """
    file_checks.regular_file(path, "Fashion-MNIST file")
    try:
        with gzip.open(path, "rb") as f:
            dims = _idx_dims(f, path, ndim)
            need = math.prod(dims)
            data = np.empty(need + 1, np.uint8)
            view, got = memoryview(data), 0
            while got <= need and (n := f.readinto(view[got : min(got + _CHUNK, need + 1)])):
                got += n
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError; EOFError: truncated gzip
        raise DatasetError(f"{path} is not a complete gzip file: {' '.join(str(e).split())}") from e
    if got != need:
        problem, has = ("truncated", f"{got:,}") if got < need else ("longer than its header says", "more")
        raise DatasetError(f"{path} is {problem}: header says {dims} ({need:,} bytes), has {has}; {_REFETCH}")
    return data[:need].reshape(dims)


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


def _plain(dtype) -> np.dtype:
    """`dtype` if it is a plain number type: an array of Python objects is unpickled from a list (a forged
    one crashes numpy 1.25), and a void dtype can be forged to claim it holds objects."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or dtype.names or dtype.subdtype:
        raise pickle.UnpicklingError(f"refusing an array of {dtype}: a CIFAR-10 batch holds numbers")
    return dtype


class _PlainArray(np.ndarray):
    """What the batch's arrays unpickle as: numpy's own arrays whose pickled state is checked first."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("refusing an array with a malformed pickled state")
        _plain(state[-3])  # (version,) shape, dtype, is_fortran, data
        super().__setstate__(state)


def _plain_frombuffer(buf, dtype, shape, order):
    return np.frombuffer(buf, _plain(dtype)).reshape(shape, order=order)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays of numbers: a pickle can run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in pickle protocols 0-2
    }
    _REPLACED = {
        ("numpy", "ndarray"): _PlainArray,
        ("numpy.core.numeric", "_frombuffer"): _plain_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _plain_frombuffer,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._REPLACED:
            return self._REPLACED[module, name]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_pickle(raw: bytes) -> None:
    """Refuses what would make the C unpickler take memory beyond what `raw` holds, before it runs.

    It allocates a declared length before reading the data (pickletools reads the data and fails on a
    short one) and grows its memo, zeroing it, to twice an index (picklers number objects in turn:
    an index beyond the opcodes so far is forged).
    """
    import pickletools

    for count, (op, arg, pos) in enumerate(pickletools.genops(io.BytesIO(raw))):
        if op.name in _MEMO_PUTS and arg > count:
            raise ValueError(f"memo index {arg:,} at byte {pos} is beyond the {count} opcodes before it")
        if op.name == "FRAME" and arg > len(raw) - pos:
            raise ValueError(f"frame of {arg:,} bytes at byte {pos} is beyond the end of the data")


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: {b'data': uint8 (n, 3072) rows in CHW order, b'labels': [n]}."""
    if not os.path.exists(path):
        raise DatasetError(
            f"{path} not found: the CIFAR-10 folder is incomplete (delete it and pass --download to refetch)"
        )
    size = file_checks.regular_file(path, "CIFAR-10 batch").st_size
    file_checks.fits_in_memory(path, size, "is a file of", "delete the folder and pass --download to refetch")
    try:
        with open(path, "rb") as f:
            raw = f.read(size)
        _check_pickle(raw)
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch: {' '.join(str(e).split())}") from e
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


_TAR_KINDS = (
    (tarfile.TarInfo.issym, "a symbolic link"),
    (tarfile.TarInfo.islnk, "a hard link"),
    (tarfile.TarInfo.ischr, "a character device"),
    (tarfile.TarInfo.isblk, "a block device"),
    (tarfile.TarInfo.isfifo, "a FIFO"),
    (tarfile.TarInfo.issparse, "a sparse file"),
)


def _cifar_filter(archive: str):
    """A tarfile extraction filter that refuses, before a member's data is read, what the real archive
    never holds: links, devices, sparse files, too many members, declared sizes beyond the caps."""
    seen = {"members": 0, "bytes": 0}
    forged = f"the archive is damaged or forged; {_REFETCH}"

    def check(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        where = f"{archive}: member {member.name!r}"
        seen["members"] += 1
        if seen["members"] > _CIFAR_MEMBERS:
            raise DatasetError(
                f"{archive} holds more than {_CIFAR_MEMBERS} members (the real one 9): {forged}"
            )
        kind = next((name for test, name in _TAR_KINDS if test(member)), None)
        if kind is not None or not (member.isreg() or member.isdir()):
            raise DatasetError(f"{where} is {kind or 'a special file'}, not a file or folder: {forged}")
        if member.isdir():
            return tarfile.data_filter(member, dest)
        seen["bytes"] += member.size
        if member.size > _CIFAR_MEMBER_BYTES:
            raise DatasetError(
                f"{where} declares {member.size:,} bytes, more than the {_CIFAR_MEMBER_BYTES:,} a CIFAR-10 "
                f"file may have: {forged}"
            )
        if seen["bytes"] > _CIFAR_TOTAL_BYTES:
            raise DatasetError(
                f"{archive}'s members declare more than {_CIFAR_TOTAL_BYTES:,} bytes in all: {forged}"
            )
        return tarfile.data_filter(member, dest)

    return check


def _extract_cifar(archive: str, data_dir: str) -> None:
    """Unpacks the archive into a temporary folder, then renames it into place.

    Streamed, member by member, each checked (`_cifar_filter`) before its data is read, and through a
    reader that refuses to decompress more than the members may declare (tar's own headers included).
    """
    file_checks.regular_file(archive, "CIFAR-10 archive")
    limit = _CIFAR_TOTAL_BYTES + _TAR_HEADER_BYTES
    too_long = f"{archive} unpacks to more than {limit:,} bytes: the archive is damaged or forged; {_REFETCH}"
    tmp = tempfile.mkdtemp(dir=data_dir, prefix=".extract-")
    try:
        with gzip.open(archive, "rb") as raw:
            with tarfile.open(fileobj=file_checks.BoundedReader(raw, limit, too_long), mode="r|") as tar:
                tar.extractall(tmp, filter=_cifar_filter(archive))
        extracted = os.path.join(tmp, _CIFAR_FOLDER)
        if not os.path.isdir(extracted):
            raise DatasetError(f"{archive} has no {_CIFAR_FOLDER}/ folder")
        os.replace(extracted, os.path.join(data_dir, _CIFAR_FOLDER))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"cannot extract {archive}: {' '.join(str(e).split())}") from e
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
