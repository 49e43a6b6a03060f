"""Answering queries to a saved model under the prediction budget: load queries, score, spend, release.

The mechanisms are `privacy.prediction_release`, the budget is `privacy.prediction_ledger`.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import errno
import os
import select
import stat
import sys
import tempfile

import numpy as np

from data import file_checks
from privacy.prediction_ledger import LedgerState, PredictionLedger, ledger_path
from privacy.prediction_release import PredictionConfig, release, released_labels
from training.atomic_files import csv_text


def load_queries(
    num_queries: int,
    dataset: str | None = None,
    data_dir: str | None = None,
    input_file: str | None = None,
    seed: int = 0,
    model_dir: str | None = None,
) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray | None]:
    """The first `num_queries` inputs of a dataset's test split or of a .npy/.csv file.

    A CSV may carry a `label` column; its values are then the true labels (used only to
    print accuracy, never released). A model trained on a table (schema.json beside its folder) takes
    raw columns: the queries are then its raw inputs (`models.table_encoding.raw_inputs`).
    """
    if (dataset is None) == (input_file is None):
        raise ValueError("give exactly one of --dataset or --input_file")
    if num_queries <= 0:
        raise ValueError(f"num_queries must be > 0, got {num_queries}")
    schema = table_schema(model_dir) if model_dir else None
    if schema is not None:
        return _table_queries(schema, num_queries, dataset, data_dir, input_file, seed)
    labels = None
    if dataset is not None:
        from data.datasets import load_dataset

        data = load_dataset(dataset, data_dir, seed=seed)
        if data.task != "classification":
            raise ValueError(
                f"dataset {dataset!r} is a regression task; prediction release needs a classifier"
            )
        x, labels = data.x_test, data.y_test
    elif not os.path.exists(input_file):
        raise ValueError(f"input file not found: {input_file}")
    elif input_file.endswith(".npy"):
        file_checks.check_npy(input_file, "input file")  # a FIFO; a header claiming more than it holds
        try:
            x = np.load(input_file, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"cannot read {input_file} as a numpy array: {e}") from e
    elif input_file.endswith(".csv"):
        import pandas as pd

        file_checks.csv_header(input_file, "input file")  # a FIFO; repeated names (label.1), no rows
        try:
            df = pd.read_csv(input_file)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot parse {input_file}: {e}") from e
        if "label" in df.columns:
            labels = df.pop("label").to_numpy().astype(np.int64)
        bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        if bad or df.isna().any().any():
            raise ValueError(f"{input_file}: features must be numeric with no missing values (bad: {bad})")
        x = df.to_numpy(np.float32)
    else:
        raise ValueError(f"--input_file must end in .npy or .csv, got {input_file}")
    if len(x) < num_queries:
        raise ValueError(f"asked for {num_queries} queries but only {len(x)} inputs are available")
    x = np.asarray(x[:num_queries], dtype=np.float32)
    return x, (None if labels is None else np.asarray(labels[:num_queries]))


def table_schema(model_dir: str):
    """The schema of a model trained on a table (its run folder's schema.json), or None."""
    from training.table_preprocessing import SCHEMA_FILE

    path = os.path.join(os.path.dirname(os.path.abspath(model_dir)), SCHEMA_FILE)
    if not os.path.exists(path):
        return None
    from data.schema import TableSchema

    return TableSchema.load(path)


def _table_queries(schema, num_queries: int, dataset, data_dir, input_file, seed: int):
    """Raw-column queries (and labels where known) for a table model, in its schema's column order."""
    from data import table_files as tables
    from models.table_encoding import raw_inputs

    if dataset is not None:
        from data.datasets import load_dataset

        raw = load_dataset(dataset, data_dir, seed=seed, label_column=schema.label).table
        if raw is None:
            raise ValueError(f"the model was trained on a table; --dataset={dataset} is not one")
        columns, labels = raw.test, raw.y_test
    else:
        if not os.path.exists(input_file):
            raise ValueError(f"input file not found: {input_file}")
        frame = tables.read_frame(input_file)  # checks the file first: a regular file, its header
        columns = tables.table_columns(frame, schema, input_file)
        labels = tables.table_labels(frame, schema, input_file) if schema.label in frame.columns else None
    n = len(next(iter(columns.values())))
    if n < num_queries:
        raise ValueError(f"asked for {num_queries} queries but only {n} inputs are available")
    first = {k: v[:num_queries] for k, v in columns.items()}
    x = raw_inputs([c.name for c in schema.numeric()], [c.name for c in schema.categorical()], first)
    return x, (None if labels is None else np.asarray(labels[:num_queries]))


def check_model_dir(model_dir: str) -> None:
    """A clear error for a missing or non-SavedModel folder, before any budget is looked at."""
    if not os.path.isdir(model_dir):
        raise ValueError(f"model folder not found: {model_dir}")
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        raise ValueError(f"{model_dir} is not a Keras SavedModel folder (no saved_model.pb)")


def model_probabilities(model_dir: str, x: np.ndarray) -> np.ndarray:
    """Class probabilities of a saved classifier: softmax of its outputs, unless they already are.

    We call the SavedModel's `serving_default` signature rather than reviving Keras layers
    with `tf.keras.models.load_model`: it needs no custom objects (e.g. TF-Privacy's
    DPSequential), and Keras 2.14's revival of a Flatten layer fails when TensorFlow is
    first imported inside `absl.app.run` ("Attempt to convert a value (None)").
    Outputs that are already probability vectors (non-negative, rows summing to 1) are kept;
    anything else is treated as logits.
    """
    check_model_dir(model_dir)
    import tensorflow as tf

    try:
        serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    except Exception as e:  # noqa: BLE001 - TF raises many types; the user needs one clear line
        raise ValueError(f"cannot load a SavedModel from {model_dir}: {type(e).__name__}: {e}") from e
    specs = serve.structured_input_signature[1]
    (name,) = serve.structured_outputs
    if isinstance(x, dict):  # a table model's raw columns
        if set(x) != set(specs):
            raise ValueError(
                f"the model takes inputs {sorted(specs)}, got {sorted(x)}: was it trained on this table?"
            )
        n = len(next(iter(x.values())))
        batches = [
            serve(**{k: tf.constant(v[i : i + 1024], dtype=specs[k].dtype) for k, v in x.items()})[name]
            for i in range(0, n, 1024)
        ]
    else:
        (spec,) = specs.values()
        expected = tuple(spec.shape[1:])
        if x.shape[1:] != expected:
            if None in expected or int(np.prod(x.shape[1:])) != int(np.prod(expected)):
                raise ValueError(f"inputs have shape {x.shape[1:]} but the model expects {expected}")
            x = x.reshape((len(x), *expected))
        batches = [
            serve(tf.constant(x[i : i + 1024], dtype=spec.dtype))[name] for i in range(0, len(x), 1024)
        ]
    out = np.concatenate([b.numpy() for b in batches]).astype(np.float64)
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(f"the model outputs shape {out.shape[1:]}; prediction release needs a classifier")
    if np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
        return out / out.sum(axis=1, keepdims=True)
    out = out - out.max(axis=1, keepdims=True)
    e = np.exp(out)
    return e / e.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class PredictResult:
    released: np.ndarray
    labels: np.ndarray | None
    ledger: LedgerState | None
    config: PredictionConfig

    @property
    def accuracy(self) -> float | None:
        if self.labels is None:
            return None
        return float(np.mean(released_labels(self.released) == self.labels))

    def rows(self) -> list[dict]:
        """What is released, one row per query (true labels are NOT in it)."""
        if self.released.ndim == 1:
            return [{"query": i, "label": int(v)} for i, v in enumerate(self.released)]
        return [
            {"query": i, **{f"score_{c}": float(v) for c, v in enumerate(row)}}
            for i, row in enumerate(self.released)
        ]


class NotDeliveredError(Exception):
    """The answers' cost is in the ledger but writing them (all or some) failed: budget lost, no privacy
    lost. `delivered`: answers that reached the reader in full before that (0 for an --output_file)."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


class StdoutFailed(Exception):
    """Writing the answers to standard output failed after `delivered` whole answer rows.

    `reader_closed`: the reader closed the pipe (EPIPE) before reading the rest. On a pipe,
    `delivered` counts the rows the reader read in full, not the ones left unread in the pipe's buffer
    when it closed; elsewhere the rows written in full. A row written in part is not delivered.
    """

    def __init__(self, delivered: int, error: OSError) -> None:
        super().__init__(f"{delivered} answers delivered before: {error.strerror or error}")
        self.delivered = delivered
        self.error = error
        self.reader_closed = error.errno == errno.EPIPE


class Delivery:
    """Where released answers go: a CSV file (written atomically) or, without one, standard output.

    Charge first: `check_writable` runs before the spend and writes no answer (an empty probe file,
    removed at once), `write` runs only after the spend is committed. So a process killed, or held
    on the ledger's lock, at any point leaves no uncharged answer anywhere: an answer that exists
    was paid for. The price is that an answer charged but then not written (disk full, folder
    removed, a kill) loses its budget; that loses budget, never privacy.
    """

    def __init__(self, output_file: str | None) -> None:
        self.output_file = output_file
        if output_file is not None:
            folder = os.path.dirname(os.path.abspath(output_file))
            if not os.path.isdir(folder):
                raise ValueError(f"cannot write --output_file={output_file}: folder {folder} does not exist")
            if os.path.isdir(output_file):
                raise ValueError(f"--output_file={output_file} is a folder; give a file name")

    def _folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.output_file))

    def check_writable(self) -> None:
        """Before the spend: a file can be created beside the destination (nothing is left there)."""
        if self.output_file is None:
            return
        try:
            fd, probe = tempfile.mkstemp(dir=self._folder(), prefix=".tmp-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ValueError(f"cannot write --output_file={self.output_file}: {e.strerror or e}") from e

    def write(self, text: str) -> None:
        """After the spend: the answers to stdout, or to a temporary file renamed over the destination."""
        if self.output_file is None:
            _write_stdout(text)
            return
        fd, tmp = tempfile.mkstemp(dir=self._folder(), prefix=".tmp-answers-", suffix=".csv")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.output_file)
        finally:  # a half-written file of charged answers is no leak, only clutter
            if os.path.exists(tmp):
                os.unlink(tmp)


_CHUNK = 1 << 16


def _write_stdout(text: str) -> None:
    """The answers to standard output, in chunks, counting whole rows; StdoutFailed if that fails.

    Straight to the file descriptor: `sys.stdout.write` of a large text to a pipe whose reader closed
    early returns after a partial write without an error (Python's BufferedWriter reports the short
    count, TextIOWrapper drops it), so the answers were lost without a word. A failed stdout is then
    pointed at /dev/null, so nothing later (the exit's flush, interpreter shutdown) fails on it again.
    """
    lines = text.splitlines(keepends=True)  # the header, then one line per answer (numbers only)
    ends = [0] * (len(lines) - 1)  # byte offset where each answer row ends
    offset = len(lines[0].encode()) if lines else 0
    for i, line in enumerate(lines[1:]):
        offset += len(line.encode())
        ends[i] = offset
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return _write_stdout_object(lines)
    data = memoryview(text.encode())
    written = 0
    try:
        sys.stdout.flush()  # nothing is expected there; if anything, it goes first
        while written < len(data):
            try:
                written += os.write(fd, data[written : written + _CHUNK])
            except BlockingIOError:  # an inherited non-blocking descriptor: wait until it takes more
                select.select([], [fd], [])
    except OSError as e:
        read = written - _unread_in_pipe(fd) if e.errno == errno.EPIPE else written
        _silence_stdout(fd)
        raise StdoutFailed(bisect.bisect_right(ends, read), e) from e


def _write_stdout_object(lines: list[str]) -> None:
    """`_write_stdout` for a sys.stdout without a file descriptor (tests capture it): row by row."""
    delivered = 0
    try:
        sys.stdout.write(lines[0] if lines else "")
        for line in lines[1:]:
            sys.stdout.write(line)
            sys.stdout.flush()
            delivered += 1
    except OSError as e:
        raise StdoutFailed(delivered, e) from e


def _unread_in_pipe(fd: int) -> int:
    """Bytes still in the pipe behind `fd` (written, never read: its reader closed), or 0 if unknown."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        import array
        import fcntl
        import termios

        count = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, count, True)  # Linux and macOS: either end of a pipe
        return max(0, count[0])
    except (OSError, ImportError, AttributeError):
        return 0


def _silence_stdout(fd: int) -> None:
    """Points the descriptor of a failed stdout at /dev/null (see `_write_stdout`); stderr too when it
    is the same closed pipe (`2>&1 | head`): nobody can read it, and writing there would fail as well."""
    try:
        fds = [fd]
        with contextlib.suppress(AttributeError, OSError, ValueError):
            out, err = os.fstat(fd), os.fstat(sys.stderr.fileno())
            if stat.S_ISFIFO(out.st_mode) and (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino):
                fds.append(sys.stderr.fileno())
        null = os.open(os.devnull, os.O_WRONLY)
        for target in fds:
            os.dup2(null, target)
        os.close(null)
    except OSError:
        pass


def answer_queries(
    model_dir: str,
    x: np.ndarray,
    labels: np.ndarray | None,
    config: PredictionConfig,
    epsilon_budget: float | None,
    delta_budget: float | None = None,
    rng: np.random.Generator | None = None,
    delivery: Delivery | None = None,
) -> PredictResult:
    """Checks the budget, scores, draws the noisy answers in memory, commits the spend, then writes them.

    The spend comes before any answer leaves this process (file or stdout), so killing it at any
    point never leaves an uncharged answer; a write that fails after the charge raises
    NotDeliveredError and the budget stays spent (no refund: a partial write may have been read). On
    standard output the error says how many answers were delivered (a reader such as `head` may close
    the pipe early) and how many were charged but not delivered.
    `rng=None` draws the noise from OS entropy: DP noise must be unpredictable, a known seed
    would let anyone subtract it. Pass a seeded generator in tests only. Without `delivery` the
    answers are only returned (the caller releases them; they are charged either way).
    """
    check_model_dir(model_dir)
    ledger = PredictionLedger(ledger_path(model_dir))
    count = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)  # a table model's raw columns
    ledger.check(count, config, epsilon_budget, delta_budget)  # fail fast, before loading TF
    probs = model_probabilities(model_dir, x)  # not released
    rng = np.random.default_rng() if rng is None else rng
    answers = release(probs, config, rng)
    result = PredictResult(answers, labels, None, config)
    text = None if delivery is None else csv_text(result.rows())  # in memory only, until charged
    if delivery is not None:
        delivery.check_writable()
    note = f"model {os.path.abspath(model_dir)}"
    state = ledger.spend(count, config, epsilon_budget, delta_budget, note=note)
    if delivery is not None:
        cost = f"epsilon {config.epsilon:g}" + (f", delta {config.delta:g}" if config.uses_delta else "")
        try:
            delivery.write(text)
        except StdoutFailed as e:
            how = (
                "before the reader closed standard output"
                if e.reader_closed
                else f"before writing standard output failed ({e.error.strerror or e.error})"
            )
            spent = f"epsilon {float(state.epsilon_spent):.6g} of {float(state.epsilon_budget):.6g}"
            raise NotDeliveredError(
                f"answered {count} queries (charged, {cost} each); {e.delivered} delivered {how}; "
                f"{count - e.delivered} charged but not delivered: that budget is spent "
                f"(now {spent}; ledger: {ledger.path})",
                delivered=e.delivered,
            ) from e.error
        except OSError as e:
            where = f"--output_file={delivery.output_file}" if delivery.output_file else "standard output"
            raise NotDeliveredError(
                f"the prediction budget was charged for {count} queries ({cost} each) but the answers "
                f"were not delivered: cannot write {where}: {e.strerror or e}; that budget is spent "
                f"(ledger: {ledger.path})"
            ) from e
    return dataclasses.replace(result, ledger=state)
