"""How every binary starts, logs, fails and stops: the same under `python -m pipelines.X` and as a
console script. Not a binary (the leading underscore says so).

`run(main, __name__)` starts a binary with one error path for all of them:

* bad input (flags, files, columns, settings): one line on stderr, `<binary>: error: ...`, naming the
  problem and the fix; exit code 2; no traceback. Binaries mark the code that checks input with
  `with bad_input():` (a ValueError or OSError raised there is the user's) or raise `Exit`.
* Ctrl-C / SIGTERM: one line, exit 130 / 143 (`training/interrupts.py`), no traceback, no orphan
  TFF worker; "resume with the same command" where resuming exists.
* a bug: the traceback, then a line saying it is a bug; exit code 1.
* quiet by default: TensorFlow's C++ and Python logs, absl INFO lines and Python warnings are off
  unless `--verbosity` is given (0 = info, -1 = warnings, 1 = debug).

Console scripts: absl's `--help` lists the key flags of the module named by sys.argv[0]. Under a
console script (`ppml-budget`) that is the script, so the binary's key flags are registered for it too.

TensorFlow inside `main()`: TF 2.14's `tensorflow.python.distribute.combinations` registers
`absl.app.call_after_init(_set_total_phsyical_gpus)` at import time. Inside `main()` absl's init is
already done, so that callback runs *during* `import tensorflow`: it initializes the eager context
half-way through the import, and Keras then builds TF1 graph placeholders instead of KerasTensors
("Attempt to convert a value (None) ..." for every Sequential model with a Flatten layer). Binaries
keep TF out of module top (fast --help) and import it with `import_tensorflow`, which imports TF as
if absl's init had not run yet: the callback is queued (and never needed) instead of running mid-import.
"""

from __future__ import annotations

import atexit
import contextlib
import logging as py_logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator

from absl import app, flags, logging

from training import interrupts
from training.run_folder import FolderInUse, environment_failure

EXIT_BUG, EXIT_BAD_INPUT = 1, 2
EXIT_CODES_HELP = """
Exit codes: 0 done; 2 bad input (one line on stderr says what to change, nothing is written);
3 / 4 (predict) the batch would exceed the budget / charged but not delivered;
5 training diverged (a loss or the weights not finite): one line says where and what to lower; the
  run folder keeps the privacy.json of the steps taken, and no model;
130 / 143 stopped by Ctrl-C / SIGTERM (one line; earlier results and checkpoints stay intact);
1 a failure that is not your input: the machine's (a full disk or quota, a read-only disk: one line
  naming the file; a new folder is removed, an earlier one is left as a rerun continues it), a lost
  TFF worker, or a bug (which prints a traceback).
Logs of TensorFlow, TFF and absl are off unless --verbosity is given (0: info, 1: debug)."""


class Exit(Exception):
    """A planned failure: `message` goes to stderr as one line, the process exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def bad_input(*more: type[BaseException]) -> Iterator[None]:
    """Inside: ValueError, OSError (and `more`) are the user's input, reported as one line, exit 2."""
    try:
        yield
    except (ValueError, OSError, *more) as e:
        raise Exit(str(e)) from None


def import_tensorflow():
    """Imports and returns tensorflow; safe to call from absl main() (idempotent)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    done = getattr(app._run_init, "done", False)  # noqa: SLF001 - see the module docstring
    app._run_init.done = False  # noqa: SLF001
    try:
        import tensorflow as tf
    finally:
        app._run_init.done = done  # noqa: SLF001
    if not _verbose():
        tf.get_logger().setLevel(py_logging.ERROR)
        tf.autograph.set_verbosity(0)
    return tf


def _verbose() -> bool:
    return "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present > 0


def _quiet_logs() -> None:
    """Library logs off unless --verbosity was given (TensorFlow reads its variable at import)."""
    if _verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    logging.set_verbosity(logging.ERROR)
    warnings.filterwarnings("ignore")


def _finish(code: int, message: str | None = None) -> None:
    """Runs the exit hooks (TFF workers are stopped there), prints `message`, exits without teardown.

    Skipping interpreter teardown matters after TFF ran: its gRPC threads can abort it in C++.
    """
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()  # noqa: SLF001 - the hooks os._exit would skip
    sys.stdout.flush()
    if message:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(code)


def run(main: Callable[[list[str]], None], module_name: str, resumable: bool = False) -> None:
    """Starts a binary (its `main`) with absl; see the module docstring for what it guarantees.

    `resumable`: an interrupted run continues when the same command is run again.
    """
    binary = main.__globals__  # the binary module's namespace, however it was started
    prog = os.path.splitext(os.path.basename(binary.get("__file__") or sys.argv[0]))[0]
    hint = "; resume with the same command" if resumable else ""
    try:
        interrupts.install()
        early = interrupts.held_signal()  # one that came while the binary's imports ran
        if early is not None:
            _finish(128 + early, f"{prog}: interrupted ({signal.Signals(early).name}){hint}")
        _run(main, module_name, binary, prog, hint)
    except interrupts.Interrupted as e:  # during absl's start-up, before main
        _finish(e.code, f"{prog}: interrupted ({e.signal_name}){hint}")


def _run(main: Callable[[list[str]], None], module_name: str, binary: dict, prog: str, hint: str) -> None:
    """absl's start-up and `main`, with every outcome turned into one line and an exit code."""
    binary["__doc__"] = (binary.get("__doc__") or "") + EXIT_CODES_HELP  # shown by --help
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as e:  # absl puts each failed validator on a line of its own: one line here
            problems = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
            _finish(EXIT_BAD_INPUT, f"{prog}: error: {problems} (see --help)")
        _quiet_logs()
        return rest

    def guarded(argv: list[str]) -> None:
        if len(argv) > 1:
            _finish(
                EXIT_BAD_INPUT,
                f"{prog}: error: unexpected arguments {argv[1:]} (flags look like --name=value)",
            )
        try:
            main(argv)
        except Exit as e:
            _finish(e.code, f"{prog}: error: {e}")
        except FolderInUse as e:  # another process: one line, as for bad input
            _finish(EXIT_BAD_INPUT, f"{prog}: error: {e}")
        except app.UsageError as e:
            _finish(EXIT_BAD_INPUT, f"{prog}: error: {e}")
        except KeyboardInterrupt:  # a Ctrl-C that came before the handlers were installed
            _finish(130, f"{prog}: interrupted (SIGINT){hint}")
        except interrupts.Interrupted as e:
            _finish(e.code, f"{prog}: interrupted ({e.signal_name}){hint}")
        except SystemExit:
            raise
        except BaseException:  # noqa: BLE001 - anything else is a bug: say so, with the traceback
            signum = interrupts.received_signal()
            if signum is not None:  # a consequence of stopping (e.g. an import the signal broke off)
                _finish(128 + signum, f"{prog}: interrupted ({signal.Signals(signum).name}){hint}")
            failure = environment_failure(sys.exc_info()[1])
            if failure is not None:  # a full disk, a read-only disk: not a bug, no traceback
                _finish(EXIT_BUG, f"{prog}: error: {failure}")
            traceback.print_exc()
            _finish(
                EXIT_BUG,
                f"{prog}: internal error: this is a bug, not your input; please report it with the "
                "command and the traceback above",
            )
        _finish(0)

    app.run(guarded, flags_parser=parse)


def result_line(metrics: dict[str, float], accuracy: float, statement: str) -> str:
    """The binary's last line: test accuracy (and AUC / RMSE where the task has them), then the statement."""
    parts = [f"test accuracy {accuracy:.4f}"] if accuracy == accuracy else []
    for k in ("test_auc", "test_average_precision", "test_balanced_accuracy", "test_rmse", "test_mae"):
        if k in metrics:  # NaN: e.g. a test split holding one class has no AUC
            value = metrics[k]
            shown = f"{value:.4f}" if value == value else "n/a"
            parts.append(f"{k.removeprefix('test_')} {shown}")
    return "; ".join([*parts, statement])
