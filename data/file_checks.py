"""Checks on a data file made before it is opened or parsed, so a hostile path fails in one clear line.

Why before: `open()` on a FIFO blocks forever, a device (/dev/zero) never ends, an .npy header may claim
a terabyte that numpy allocates before reading a byte (MemoryError), and pandas mangles a repeated CSV
column name into a new feature (`label.1`: the label leaks into the inputs) and takes time quadratic in
the header's width when there are no rows. Every check here reads only metadata (stat, zip directory,
.npy headers, the CSV's first record) in time linear in its size, and raises `DatasetError`;
`BoundedReader` caps what a decompressing stream may give (a gzip bomb is never decompressed whole).
"""

from __future__ import annotations

import collections
import csv
import math
import os
import stat
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from typing import IO

from data.datasets import DatasetError

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)
_EXAMPLES = 5  # repeated names quoted in a message
_CHUNK = 1 << 16  # characters read at a time when looking for a CSV's first row


def regular_file(path: str, what: str = "file", error: type[DatasetError] = DatasetError) -> os.stat_result:
    """`path`'s stat if it is a regular file (symlinks followed); refuses FIFOs, devices, sockets, folders.

    Uses stat, never open: opening a FIFO blocks until a writer comes, opening some devices acts.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "a special file")
        raise error(f"{what} {path} is not a regular file ({kind}); give a regular file")
    return st


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _npy_bytes(stream: IO[bytes], stored: int, where: str) -> int:
    """The bytes the .npy array in `stream` (of `stored` bytes in all) declares, checked against `stored`."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except (ValueError, SyntaxError, TypeError) as e:
        raise DatasetError(f"{where} is not a readable .npy array ({' '.join(str(e).split())})") from None
    if dtype.hasobject:  # pickled objects: np.load(allow_pickle=False) refuses them with its own message
        return 0
    declared = math.prod(shape) * dtype.itemsize
    data = stored - stream.tell()
    if declared != data:
        raise DatasetError(
            f"{where} declares shape {tuple(shape)} of {dtype} ({declared:,} bytes) but stores {data:,} "
            "bytes: the file is damaged or forged; replace it"
        )
    return declared


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**27 else f"{n:,} bytes"


def fits_in_memory(
    path: str, need: int, holds: str = "holds arrays of", fix: str = "use a smaller file (or free memory)"
) -> None:
    """Refuses `need` bytes (what `path` `holds`) beyond the memory available now, saying how to `fix` it."""
    available = _available_memory()
    if need > available:
        raise DatasetError(
            f"{path} {holds} {_size(need)}, more than the {_size(available)} of memory available; {fix}"
        )


class BoundedReader:
    """A read-only stream over `stream` that refuses, with `DatasetError(message)`, to give more than `limit`
    bytes in all: it never asks `stream` for more than `limit + 1` (a gzip bomb is decompressed only so far).
    """

    def __init__(self, stream: IO[bytes], limit: int, message: str) -> None:
        self._stream, self._left, self._message = stream, limit, message

    def read(self, size: int | None = -1) -> bytes:
        want = self._left + 1 if size is None or size < 0 else min(size, self._left + 1)
        data = self._stream.read(want)
        self._left -= len(data)
        if self._left < 0:
            raise DatasetError(self._message)
        return data

    def close(self) -> None:  # the caller closes `stream`
        pass


def check_npy(path: str, what: str = ".npy file") -> None:
    """Refuses a special file, or an .npy whose header disagrees with its size or exceeds memory."""
    st = regular_file(path, what)
    try:
        with open(path, "rb") as f:
            need = _npy_bytes(f, st.st_size, path)
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from None
    fits_in_memory(path, need)


def check_npz(path: str, names: Iterable[str] | None = None, what: str = ".npz file") -> None:
    """Refuses a special file, a non-zip .npz, and members `names` (None: all) whose .npy headers
    disagree with their sizes in the zip's directory or together exceed memory; reads headers only."""
    regular_file(path, what)
    wanted = None if names is None else {f"{n}.npy" for n in names}
    need = 0
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy") or (wanted is not None and info.filename not in wanted):
                    continue
                with z.open(info) as member:
                    need += _npy_bytes(member, info.file_size, f"{path}: member {info.filename}")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression method
        raise DatasetError(f"{path} is not a readable .npz file ({' '.join(str(e).split())})") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    fits_in_memory(path, need)


def refuse_repeats(names: Sequence[str], path: str, skip_empty: bool = False) -> None:
    """Refuses a table whose header names a column twice (a copy would be read as another feature)."""
    counts = collections.Counter(n for n in names if n or not skip_empty)
    repeated = sorted(n for n, c in counts.items() if c > 1)
    if repeated:
        shown = repeated[:_EXAMPLES] + (["..."] if len(repeated) > _EXAMPLES else [])
        raise DatasetError(
            f"{path} repeats the column name(s) {shown} in its header: give every column its own name"
        )


def _blank(record: list[str]) -> bool:
    """A line pandas skips (skip_blank_lines): empty, or spaces and tabs only."""
    return not record or (len(record) == 1 and not record[0].strip(" \t"))


def csv_header(path: str, what: str = "table file") -> list[str]:
    """The CSV's column names, read with the csv module (its first record only, linear in its width).

    Refuses a special file, an empty one, a repeated name, and a header without rows: pandas renames
    a repeated name `x.1` (a new feature) and, without rows, takes time quadratic in the width
    (c_parser_wrapper's `k in columns` over a list, for each column, when it builds the empty frame).
    """
    regular_file(path, what)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next((r for r in csv.reader(f) if not _blank(r)), None)
            has_rows = header is not None and _has_more(f)
    except (csv.Error, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot parse {path}: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from None
    if header is None:
        raise DatasetError(f"cannot parse {path}: it is empty (no header line)")
    refuse_repeats(header, path, skip_empty=True)  # pandas names empty ones "Unnamed: i", all distinct
    if not has_rows:
        raise DatasetError(f"{path} has a header but no rows")
    return header


def _has_more(f: IO[str]) -> bool:
    """Whether anything but whitespace follows (in chunks: a huge line is never read whole)."""
    while chunk := f.read(_CHUNK):
        if chunk.strip():
            return True
    return False


def parquet_names(path: str) -> list[str]:
    """The Parquet file's column names from its footer (no data read), refusing repeated ones."""
    import pyarrow.parquet as pq

    names = list(pq.read_schema(path).names)
    refuse_repeats(names, path)
    return names
