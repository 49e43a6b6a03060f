"""Ctrl-C and SIGTERM: one way to stop a run, the same for binaries and for TFF contexts.

The handler raises `Interrupted` (a `SystemExit` with code 128 + signal number) in the main thread;
the stack unwinds through every `finally` (TFF contexts stop their `worker_binary` there, files are
already written atomically), and the process exits 130 (SIGINT) or 143 (SIGTERM). It does not stop
workers itself: that would fail the computation in flight on another thread and turn a clean stop
into a worker-lost error. A signal that lands inside a GC callback or `__del__` (where Python ignores
exceptions) is delivered again at the next ordinary bytecode. So is one that library code swallowed
(jax's import-time `try: import etils.epath except: ...` catches everything, so a signal landing in
that import was lost and the run went on until the watchdog): until the process ends, the signal is
re-delivered every `REDELIVER_S` to a main thread that is not handling the interrupt (a `finally` or
`except` that runs because of it sees it in `sys.exc_info()` and is left to finish its cleanup).
Exceptions in other threads after the signal (gRPC pollers whose channel the unwinding closed) are
consequences of stopping, not printed.
A second signal while unwinding exits at once, and a watchdog exits hard if unwinding takes longer
than `grace_s` (TFF's gRPC threads can otherwise hold the process).

`pipelines/_app.py` turns `Interrupted` into one line and an exit that skips interpreter teardown
(gRPC's C++ threads can abort it with "terminate called after throwing ...").
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_GRACE_S = 20.0
REDELIVER_S = 0.5  # how often a signal the main thread swallowed is raised again


class Interrupted(SystemExit):
    """The run was stopped by SIGINT or SIGTERM; `code` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


_lock = threading.Lock()
_installed: dict[int, Any] = {}  # signum -> the handler we replaced
_interrupted: list[int] = []
_redelivering: list[int] = []
_grace_s = DEFAULT_GRACE_S
_previous_unraisablehook = sys.unraisablehook
_previous_excepthook = threading.excepthook


def _hard_exit_later(code: int, grace_s: float) -> None:
    def _exit() -> None:
        time.sleep(grace_s)
        sys.stderr.write(f"did not stop within {grace_s:g} s of the signal; exiting hard\n")
        sys.stderr.flush()
        os._exit(code)

    threading.Thread(target=_exit, name="interrupt-exit-watchdog", daemon=True).start()


def _redeliver_until_exit(signum: int) -> None:
    """Raises the signal again in the main thread every REDELIVER_S (see `_handle`)."""
    import _thread

    def _loop() -> None:
        while True:
            time.sleep(REDELIVER_S)
            _redelivering.append(signum)
            _thread.interrupt_main(signum)  # no real signal: blocking calls are not broken off

    threading.Thread(target=_loop, name="interrupt-redeliver", daemon=True).start()


def _stopping() -> bool:
    """True while the main thread runs a `finally`/`except` because of the interrupt (or of an error
    the interrupt caused): that is the unwinding, to be left alone."""
    error = sys.exc_info()[1]
    seen = 0
    while error is not None and seen < 100:
        if isinstance(error, Interrupted):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


_deferring: list[int] = []  # open `deferred` blocks (main thread)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside (also as a decorator), a signal waits until the block has ended: files that must agree
    (a checkpoint and the privacy.json that accounts for it; a model and its privacy.json) are written
    together or not at all. The watchdog still bounds the wait; a second signal exits at once."""
    _deferring.append(1)
    try:
        yield
    finally:
        _deferring.pop()
    if _interrupted and not _deferring and not _stopping():
        raise Interrupted(_interrupted[0])


def _handle(signum: int, frame: Any) -> None:
    if _redelivering:  # our re-delivery: raise again only if the first exception was swallowed
        _redelivering.clear()
        if _stopping() or _deferring:
            return
        raise Interrupted(signum)
    if _interrupted:  # a second Ctrl-C while unwinding: the user means it
        os._exit(128 + signum)
    _interrupted.append(signum)
    _hard_exit_later(128 + signum, _grace_s)
    _redeliver_until_exit(signum)
    if _deferring:  # `deferred` raises it when its block ends
        return
    raise Interrupted(signum)


def _unraisable(unraisable: Any) -> None:
    """A handler that ran inside a GC callback or __del__ raised where Python ignores exceptions: not
    printed; the re-delivery raises `Interrupted` again at an ordinary bytecode."""
    if isinstance(unraisable.exc_value, Interrupted):
        return
    _previous_unraisablehook(unraisable)


def _thread_exception(args: Any) -> None:
    """Once a signal has been received, an exception in another thread is a consequence of stopping
    (gRPC's connectivity poller raises "Channel closed" when the unwinding main thread closes its
    channel): it is not printed. Before that, it is reported as usual."""
    if _interrupted:
        return
    _previous_excepthook(args)


_held: list[int] = []


def _hold(signum: int, frame: Any) -> None:
    if _held:  # a second signal: the user means it
        os._exit(128 + signum)
    _held.append(signum)


def hold() -> None:
    """Until `install`: a signal is recorded (for the binary to report at once) instead of killing
    the process without a word. For a binary's imports (numpy, the flag modules: ~1.5 s on a loaded
    machine), when nothing is written yet; a second signal exits at once."""
    for signum in SIGNALS:
        signal.signal(signum, _hold)


def held_signal() -> int | None:
    """The signal `hold` recorded, or None."""
    return _held[0] if _held else None


def install(grace_s: float = DEFAULT_GRACE_S) -> bool:
    """Installs the handlers (main thread only; idempotent). False when they could not be installed."""
    global _grace_s
    if threading.current_thread() is not threading.main_thread():
        return False
    with _lock:
        _grace_s = grace_s
        for signum in SIGNALS:
            if signum not in _installed:
                _installed[signum] = signal.signal(signum, _handle)
        sys.unraisablehook = _unraisable
        threading.excepthook = _thread_exception
    return True


def installed() -> bool:
    return bool(_installed)


def uninstall() -> None:
    """Gives the signals back to the handlers `install` replaced (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        for signum, previous in list(_installed.items()):
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        _installed.clear()
        sys.unraisablehook = _previous_unraisablehook
        threading.excepthook = _previous_excepthook


def interrupted() -> bool:
    """True once a signal has been received (and `Interrupted` raised)."""
    return bool(_interrupted)


def received_signal() -> int | None:
    """The first signal received, or None."""
    return _interrupted[0] if _interrupted else None
