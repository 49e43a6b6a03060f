"""Files written atomically: a temporary name in the same folder, renamed into place (a SavedModel
too: a new folder is swapped in), so a failed or interrupted write never leaves half a file.
Temporary names start with ".tmp-" / ".old-model-" (`training.run_folder` removes the stale ones a
killed run left)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str, text: str, prefix: str = ".tmp-") -> None:
    """`prefix`: ".tmp-" for a run's own files (a killed run's are removed under the folder's lock);
    writers that do not hold that lock (`pipelines.audit`) use another, so no run removes theirs."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=os.path.basename(path))
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


def jsonable(value: Any) -> Any:
    """Plain JSON values: dataclasses and numpy scalars converted, inf as "inf", NaN as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def json_text(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: str, obj: Any, prefix: str = ".tmp-") -> None:
    atomic_write_text(path, json_text(obj), prefix)


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of `rows`; columns are the union of keys, in the order first seen."""
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: jsonable(v) for k, v in row.items()})
    return buf.getvalue()


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes all rows at once (atomically)."""
    atomic_write_text(path, csv_text(rows))


def flagfile_text(flag_values: Mapping[str, Any]) -> str:
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
    return "\n".join(lines) + "\n"


def save_model_atomically(model, path: str) -> None:
    """SavedModel written beside `path`, then swapped in: a crash never leaves half a model."""
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-model-")
    try:
        model.save(tmp, save_format="tf")
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=".old-model-")
            os.replace(path, os.path.join(old, "model"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


# what the fresh process runs (see save_model_in_fresh_process)
_SAVE_CHILD = (
    "import sys; from training.atomic_files import save_staged_model; save_staged_model(*sys.argv[1:])"
)


def save_model_in_fresh_process(model, path: str, scratch_dir: str) -> None:
    """Saves `model` as a SavedModel at `path` from a fresh Python process.

    The function names in saved_model.pb carry TensorFlow's process-wide trace counter: saved by a
    process that trained several models (the private search's K runs), the model would reveal how
    many. The child rebuilds the model from its Keras config and weights alone (staged in
    `scratch_dir`, removed after), so the SavedModel depends on nothing else."""
    import subprocess
    import sys

    staging = tempfile.mkdtemp(dir=scratch_dir, prefix=".release-")
    try:
        with open(os.path.join(staging, "model.json"), "w") as f:
            f.write(model.to_json())
        model.save_weights(os.path.join(staging, "weights"))
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the parent may hold the accelerator's memory
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        proc = subprocess.run(
            [sys.executable, "-c", _SAVE_CHILD, staging, path],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"saving the model failed:\n{proc.stderr[-3000:]}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_staged_model(staging: str, path: str) -> None:
    """The fresh process's half of `save_model_in_fresh_process`: nothing was traced before this save."""
    import tensorflow as tf

    with open(os.path.join(staging, "model.json")) as f:
        model = tf.keras.models.model_from_json(f.read())
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=loss, metrics=["accuracy"])  # as every trained classifier here is
    model.load_weights(os.path.join(staging, "weights")).assert_existing_objects_matched()
    save_model_atomically(model, path)
