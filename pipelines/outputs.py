"""Run outputs under <root_output_dir>/<experiment_name>/, written atomically.

A failed or interrupted run never leaves a half-written privacy.json, metrics.csv or
results file: everything goes to a temporary file in the same folder, then os.replace().
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def run_dir(root_output_dir: str, experiment_name: str) -> str:
    """Creates and returns the run folder; a clear error if it cannot be written."""
    if not experiment_name or os.sep in experiment_name or experiment_name in (".", ".."):
        raise ValueError(f"experiment_name must be a plain folder name, got {experiment_name!r}")
    path = os.path.join(root_output_dir, experiment_name)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output folder {path}: {e.strerror}") from e
    if not os.access(path, os.W_OK):
        raise ValueError(f"output folder {path} is not writable")
    return path


def atomic_write_text(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes all rows at once (atomically); columns are the union of keys, in order seen."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _jsonable(v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def write_flagfile(path: str, flag_values: Mapping[str, Any]) -> None:
    """A file usable as --flagfile to rerun the same command."""
    lines = []
    for name, value in sorted(flag_values.items()):
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, list | tuple):
            lines.append(f"--{name}={','.join(str(v) for v in value)}")
        else:
            lines.append(f"--{name}={value}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def absl_flag_values(flags_module_flags, module_names: Sequence[str]) -> dict[str, Any]:
    """The values of the flags defined by the given binary modules (for flags.txt)."""
    out: dict[str, Any] = {}
    for module in module_names:
        for flag in flags_module_flags.get_flags_for_module(module):
            out[flag.name] = flag.value
    return out
