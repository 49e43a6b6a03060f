"""The one writer of run outputs: <root_output_dir>/<experiment_name>/, every file atomic.

A run folder holds flags.txt (usable as --flagfile), privacy.json, metrics.csv, tensorboard/ and
model/ (a SavedModel). Files go to a temporary name in the same folder and are renamed into place
(the SavedModel too: a new folder is swapped in), so a failed or interrupted run never leaves a
half-written file. `check_output_dir` validates a destination without creating anything, so runs
can check every input before they write a byte.
"""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import json
import math
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


# ---------------------------------------------------------------- atomic files


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


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


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
    "import sys; from training.run_folder import save_staged_model; save_staged_model(*sys.argv[1:])"
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


# ---------------------------------------------------------------- run folders


# Bytes of a folder name kept free for the temporary names the code makes beside a file or folder it
# replaces (".tmp-XXXXXXXX" + name, ".tmp-model-XXXXXXXX", ".old-model-...",
# ".ppml-write-check-XXXXXXXX": at most 26 bytes), so no such name can exceed the filesystem's limit.
NAME_RESERVE = 32
_CONTROL = ("Cc", "Cf", "Cs", "Zl", "Zp")  # control, format, surrogate, line/paragraph separators


def _deepest_existing(path: str) -> str:
    """`path` or its deepest existing parent: where a folder made at `path` would be created."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def _name_max(root_output_dir: str) -> int:
    """The filesystem's longest file name (bytes) where the run folder would be made; 255 if unknown."""
    try:
        return int(os.pathconf(_deepest_existing(root_output_dir or "."), "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def check_experiment_name(name: object, root_output_dir: str = ".", flag: str = "--experiment_name") -> None:
    """ValueError unless `name` is one plain folder name that flags.txt can hold and the filesystem
    can create: not empty, '.' or '..', no path separator, no control character (a newline would split
    flags.txt's line), no surrounding blanks (a --flagfile rerun strips them), short enough."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        raise ValueError(f"{flag} must be a plain folder name (not empty, '.' or '..'), got {name!r}")
    bad = sorted({c for c in name if unicodedata.category(c) in _CONTROL}, key=ord)
    if bad:
        raise ValueError(f"{flag} must not contain control characters, got {', '.join(map(repr, bad))}")
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        raise ValueError(
            f"{flag} must be a plain folder name, without '/' or '\\' (parent folders: --root_output_dir)"
        )
    if name != name.strip():
        raise ValueError(f"{flag} must not start or end with blanks (a --flagfile rerun drops them)")
    limit = _name_max(root_output_dir) - NAME_RESERVE
    size = len(os.fsencode(name))
    if size > limit:
        raise ValueError(
            f"{flag} is {size} bytes long; a run folder name can be at most {limit} bytes here (the "
            f"filesystem's limit less {NAME_RESERVE} for temporary names): use a shorter name"
        )


def check_root_output_dir(root_output_dir: object) -> None:
    """ValueError when flags.txt could not hold the path (a control character splits its line)."""
    if not isinstance(root_output_dir, str) or not root_output_dir:
        raise ValueError(f"--root_output_dir must be a folder path, got {root_output_dir!r}")
    if any(unicodedata.category(c) in _CONTROL for c in root_output_dir):
        raise ValueError("--root_output_dir must not contain control characters (newline, tab, NUL, ...)")


def check_output_dir(path: str) -> None:
    """ValueError when `path` could not be created or written; leaves nothing behind.

    The deepest existing folder on the way is tried for real (a temporary folder made and removed):
    permission bits do not tell, e.g. root may "write" /proc but cannot create anything there.
    """
    probe = _deepest_existing(path)
    if not os.path.isdir(probe):
        raise ValueError(f"cannot create output folder {path}: {probe} exists and is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".ppml-write-check-"))
    except OSError as e:
        raise ValueError(
            f"cannot create output folder {path}: {probe} is not writable ({e.strerror})"
        ) from None


LOCK_FILE = ".lock"
_held_locks: dict[str, int] = {}  # real path of a run folder -> the descriptor this process locked
# real path of a run folder -> {file name: its state when a check read it}, until the lock is taken
_watched: dict[str, dict[str, tuple[int, int, int] | None]] = {}


def _state(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class FolderInUse(Exception):
    """Another process is writing the run folder (or wrote a different run there since the checks)."""


def lock_folder(path: str) -> bool:
    """Takes the folder's exclusive lock (flock on `LOCK_FILE`) for this process, or raises FolderInUse;
    True when it was taken now (False: this process held it already).

    Held until `release_folders` or the process ends (the kernel drops it even on SIGKILL, so a
    killed run never blocks its resume); the descriptor is not inherited by child processes."""
    key = os.path.realpath(path)
    if key in _held_locks:
        return False
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666 & ~_UMASK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise FolderInUse(
            f"{path} is in use by another run that is still going; wait for it to end, or use another "
            "--experiment_name"
        ) from None
    _held_locks[key] = fd
    return True


def release_folders() -> None:
    """Gives up every folder lock this process holds (the Python API, after each call)."""
    _watched.clear()
    while _held_locks:
        os.close(_held_locks.popitem()[1])


class RunFolder:
    """<root_output_dir>/<experiment_name>/ and the files every run writes there.

    `create` takes the folder's lock (one run per folder at a time) and refuses when a file that the
    checks before it read (`watch`: run_config.json, checkpoints) changed since: a run that started
    or finished at the same moment cannot slip in between the checks and the first write.
    """

    FLAGS, PRIVACY, METRICS, TENSORBOARD, MODEL, RUN_CONFIG = (
        "flags.txt",
        "privacy.json",
        "metrics.csv",
        "tensorboard",
        "model",
        "run_config.json",
    )
    # what the guarantee does not cover (e.g. the sampled clients' training statistics): for the data
    # holder, never for release
    NOT_FOR_RELEASE = "not_for_release"

    def __init__(self, root_output_dir: str, experiment_name: str) -> None:
        check_experiment_name(experiment_name, root_output_dir)
        self.path = os.path.join(root_output_dir, experiment_name)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def check(self) -> None:
        """Validates that the folder can be created and written, without creating it."""
        check_output_dir(self.path)

    def create(self) -> RunFolder:
        self.check()
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create output folder {self.path}: {e.strerror}") from e
        if lock_folder(self.path):
            seen = _watched.pop(os.path.realpath(self.path), {})
            changed = sorted(name for name, state in seen.items() if _state(self.file(name)) != state)
            if changed:
                raise FolderInUse(
                    f"another run wrote to the folder meanwhile ({', '.join(changed)} in {self.path}); "
                    "run the command again"
                )
        return self

    def watch(self, name: str) -> None:
        """Records `name`'s state (or absence) as a check read it; `create` refuses if it changed."""
        files = _watched.setdefault(os.path.realpath(self.path), {})
        files.setdefault(name, _state(self.file(name)))

    def write_text(self, name: str, text: str) -> None:
        """Writes `name` atomically, and not at all when it already holds exactly `text`."""
        path = self.file(name)
        if os.path.isfile(path):
            with open(path) as f:
                if f.read() == text:
                    return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, text)

    def write_flags(self, flag_values: Mapping[str, Any]) -> None:
        self.write_text(self.FLAGS, flagfile_text(flag_values))

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json_text(obj))

    def write_privacy(self, report: Mapping[str, Any]) -> None:
        self.write_json(self.PRIVACY, report)

    def write_metrics(self, rows: Sequence[Mapping[str, Any]], name: str = METRICS) -> None:
        self.write_text(name, csv_text(rows))

    def check_same_run(self, fingerprint: Mapping[str, Any], name: str = RUN_CONFIG) -> None:
        """ValueError when the folder holds a run made with other settings (`name`: its fingerprint).

        Checked before anything is written: a mistyped rerun never touches the earlier run's files.
        """
        self.watch(name)
        path = self.file(name)
        if not os.path.exists(path):
            return
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {path}: {e}; delete {self.path} to start over") from None
        current = jsonable(fingerprint)
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if diff:
            details = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff)
            raise ValueError(
                f"{self.path} holds a different run ({details}). Use another --experiment_name, or "
                "delete that folder to start over."
            )

    def read_metrics(
        self, upto: float = math.inf, step_key: str = "epoch", name: str = METRICS
    ) -> list[dict[str, Any]]:
        """Rows of an earlier metrics.csv whose `step_key` is at most `upto` (later rows are redone)."""
        path = self.file(name)
        if upto <= 0 or not os.path.exists(path):
            return []
        rows = []
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                parsed: dict[str, Any] = {}
                for k, v in row.items():
                    if v in ("", None):
                        continue
                    for kind in (int, float, str):  # keep ints (round, clients) ints
                        try:
                            parsed[k] = kind(v)
                            break
                        except ValueError:
                            continue
                if parsed.get(step_key, math.inf) <= upto:
                    rows.append(parsed)
        return rows

    def read_json(self, name: str) -> Any:
        with open(self.file(name)) as f:
            return json.load(f)

    def save_model(self, model) -> None:
        save_model_atomically(model, self.file(self.MODEL))

    def tensorboard_writer(self):
        import tensorflow as tf

        return tf.summary.create_file_writer(self.file(self.TENSORBOARD))


def write_scalars(writer, step: int, row: Mapping[str, Any], skip: Sequence[str] = ()) -> None:
    """The finite numbers of `row` as TensorBoard scalars at `step` (the one scalar loop)."""
    import tensorflow as tf

    with writer.as_default(step=step):
        for key, value in row.items():
            if key in skip or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                tf.summary.scalar(key.replace("aggregator/dp_query_metrics/", "aggregator/"), value)
