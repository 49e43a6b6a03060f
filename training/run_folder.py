"""The one writer of run outputs: <root_output_dir>/<experiment_name>/, every file atomic.

A run folder holds flags.txt (usable as --flagfile), privacy.json, metrics.csv, tensorboard/ and
model/ (a SavedModel), each written atomically (`training.atomic_files`). `check_output_dir` and
`RunFolder.check` validate a destination, and every file a rerun would replace, without creating
anything, so runs can check every input before they write a byte. A run holds the folder's lock for
its whole life; taking it removes what a killed run left half-done (temporary names, TFF's
half-saved checkpoints), and a new TensorBoard log replaces the stale events of a killed run.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from training.atomic_files import (
    _UMASK,
    atomic_write_text,
    csv_text,
    flagfile_text,
    json_text,
    jsonable,
    save_model_atomically,
)

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


# errno values that are about the machine, never about the input or the code: a full disk or quota,
# a file size limit, a read-only filesystem. (Permissions are probed before the first write; one
# denied later may as well be a bug writing where it should not, so it keeps its traceback.)
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_ENVIRONMENT_TEXTS = tuple(os.strerror(n) for n in _ENVIRONMENT_ERRNOS)


def environment_failure(error: BaseException) -> str | None:
    """One line for an error of the environment a run met after its checks (Python's OSError, or
    TensorFlow's error for the same errno while it saved a model or a log), naming the file; None for
    anything else (a bug keeps its traceback)."""
    if isinstance(error, OSError) and error.errno in _ENVIRONMENT_ERRNOS:
        where = f" at {error.filename}" if error.filename else ""
        return f"the run stopped{where}: {error.strerror} (free space, then rerun)"
    text = getattr(error, "message", None)  # tf.errors.OpError
    if isinstance(text, str) and any(t in text for t in _ENVIRONMENT_TEXTS):
        first = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", " ".join(text.split()))[:300]  # TF's op names
        return f"the run stopped: {first} (free space, then rerun)"
    return None


# names a killed run leaves: atomic_files' temporaries (mkstemp/mkdtemp: 8 characters of [a-z0-9_]),
# the write probes, and TFF's checkpoints half-saved (FileProgramStateManager: `<path>_temp<4 digits>`)
_STALE = re.compile(
    r"\.tmp-[a-z0-9_]{8}.+|\.(tmp|old)-model-[a-z0-9_]{8}|\.ppml-write-check-[a-z0-9_]{8}"
    r"|program_state_\d+_temp\d{4}"
)
_FILE_SUFFIXES = (".json", ".csv", ".txt")  # every file a run writes ends so; folders never do
# files in a run folder that runs never rewrite: predict's ledger (its own lock), audit's record
_NOT_REWRITTEN = ("prediction_ledger.json", "membership_audit.json")


def _check_entries(folder: str, run_path: str) -> None:
    """ValueError unless `folder` (of the run folder `run_path`) is a writable folder whose file-named
    entries are readable regular files (a rerun reads and replaces them)."""
    if not os.path.isdir(folder):
        raise ValueError(
            f"{folder} is not a folder, but runs write into it; move it away (or delete {run_path}) and "
            "run again"
        )
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".ppml-write-check-"))
    except OSError as e:
        raise ValueError(
            f"cannot write into {folder} ({e.strerror}); make it writable (or delete {run_path}) and "
            "run again"
        ) from None
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if not name.endswith(_FILE_SUFFIXES) or name.startswith(".") or name in _NOT_REWRITTEN:
            continue
        if not os.path.isfile(path):
            raise ValueError(
                f"{path} is not a regular file, but the run replaces it; move it away (or delete "
                f"{run_path}) and run again"
            )
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ValueError(
                f"cannot read {path} ({e.strerror}), which the run reads and replaces; make it readable "
                f"(or delete {run_path}) and run again"
            ) from None


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
    SUBFOLDERS = (NOT_FOR_RELEASE, TENSORBOARD, "checkpoints")  # what runs write files into

    def __init__(self, root_output_dir: str, experiment_name: str) -> None:
        check_experiment_name(experiment_name, root_output_dir)
        self.path = os.path.join(root_output_dir, experiment_name)
        self.created = False

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def check(self) -> None:
        """Validates that the folder can be created and written, and that every file and subfolder of
        an earlier run there can be replaced or written (a resume rewrites them), without creating it."""
        check_output_dir(self.path)
        if not os.path.isdir(self.path):
            return
        for entry in (".", *(n for n in self.SUBFOLDERS if os.path.lexists(self.file(n)))):
            _check_entries(os.path.normpath(self.file(entry)), self.path)

    def create(self) -> RunFolder:
        self.check()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            try:
                os.mkdir(self.path)
                self.created = True  # by this call: `removed_on_environment_failure` may remove it
            except FileExistsError:
                pass
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
            self._remove_stale()
        return self

    def _remove_stale(self) -> None:
        """What a killed run left half-done, under the lock (no run of this folder is writing): the
        temporary names of `training.atomic_files`, TFF's half-saved checkpoints, compare's per-arm
        TensorBoard staging. Never anything another writer could own (the prediction ledger's)."""
        for sub in (".", *self.SUBFOLDERS):
            folder = os.path.normpath(self.file(sub))
            if not os.path.isdir(folder) or os.path.islink(folder):
                continue
            for name in os.listdir(folder):
                if _STALE.match(name) or (sub == self.TENSORBOARD and name.startswith(".tmp-")):
                    path = os.path.join(folder, name)
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(path)

    @contextlib.contextmanager
    def removed_on_environment_failure(self) -> Iterator[None]:
        """A folder that `create` made inside the block (its own mkdir succeeded: no one else's) is
        removed again (no half-folder) when the environment fails the run (`environment_failure`: a
        full disk); one that existed is left as a rerun continues it."""
        try:
            yield
        except Exception as e:
            if self.created and environment_failure(e) is not None:
                fd = _held_locks.pop(os.path.realpath(self.path), None)
                shutil.rmtree(self.path, ignore_errors=True)
                if fd is not None:
                    os.close(fd)
            raise

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

    def tensorboard_writer(self, replay: Sequence[Mapping[str, Any]] = (), step_key: str = "epoch"):
        """A new TensorBoard log in place of the folder's earlier one, holding `replay` (the rows a
        resumed run keeps) as scalars: the events of a killed run's later steps (other noise draws,
        which privacy.json does not account for) are never shown beside the rerun's."""
        import tensorflow as tf

        logdir = self.file(self.TENSORBOARD)
        if os.path.isdir(logdir) and not os.path.islink(logdir):  # never another folder's events
            for name in os.listdir(logdir):
                if name.startswith("events.out.tfevents."):
                    os.unlink(os.path.join(logdir, name))
        writer = tf.summary.create_file_writer(logdir)
        for row in replay:
            write_scalars(writer, int(row[step_key]), row, skip=(step_key,))
        return writer


def write_scalars(writer, step: int, row: Mapping[str, Any], skip: Sequence[str] = ()) -> None:
    """The finite numbers of `row` as TensorBoard scalars at `step` (the one scalar loop)."""
    import tensorflow as tf

    with writer.as_default(step=step):
        for key, value in row.items():
            if key in skip or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                tf.summary.scalar(key.replace("aggregator/dp_query_metrics/", "aggregator/"), value)
