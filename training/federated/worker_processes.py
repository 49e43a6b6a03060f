"""The life of TFF's `worker_binary` processes: started, owned and always stopped by us.

TFF 0.87 runs every computation on a C++ gRPC executor, the `worker_binary` shipped in
`tensorflow_federated/data/`. Its default context starts that process lazily and manages it badly:
the worker ignores SIGINT, TFF's `ServiceManager.__del__` sends SIGINT and then `wait()`s forever,
and at interpreter exit the worker is orphaned to PID 1. This module is the only one in the project
that knows about these processes, so that no run leaves one behind or hangs on exit.

`execution_context.py` therefore does not use TFF's `ServiceManager`: it starts the worker here
(same binary, same flags, same `RemoteExecutor` stack and compiler as TFF's local C++ context), owns
the `Popen`, and SIGTERMs it on every way out (normal exit, exception, SIGINT, SIGTERM, atexit). Workers
are started with `PR_SET_PDEATHSIG=SIGTERM` so that even a SIGKILLed parent takes them down.

With `workers=["host:port", ...]` the client work runs on remote `worker_binary` processes, one async
context per worker merged by `create_mergeable_comp_execution_context` (TFF 0.87 has no helper for it).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import psutil
from absl import logging

from training import interrupts

WORKER_BINARY_NAME = "worker_binary"
# Same limits as TFF's own local context: model updates easily exceed gRPC's 4 MB default.
_GRPC_MAX_MESSAGE_BYTES = 2 * 1000 * 1000 * 1000
_GRPC_CHANNEL_OPTIONS = [
    ("grpc.max_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _GRPC_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _GRPC_MAX_MESSAGE_BYTES),
]
DEFAULT_CONNECT_TIMEOUT_S = 30.0
# How long a worker gets to exit on SIGTERM before SIGKILL; it normally takes milliseconds.
_STOP_TIMEOUT_S = 10.0
# After a SIGINT/SIGTERM the process gets this long to unwind (finally blocks, writers) before a hard
# exit. TFF's in-flight gRPC calls can otherwise keep the interpreter from finishing.
_SIGNAL_EXIT_GRACE_S = 20.0

# Runs between fork and the worker's exec: ask the kernel to SIGTERM the worker when its parent dies
# (also on SIGKILL, where no Python cleanup runs). A separate interpreter instead of `preexec_fn`,
# which is unsafe in a process with TensorFlow's threads.
_DIE_WITH_PARENT_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)  # parent already gone\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

_lock = threading.RLock()
# Workers started for local contexts; stopped when their context ends.
context_workers: dict[int, subprocess.Popen] = {}
# Workers started by `start_local_workers` to serve remote contexts; they outlive contexts and are
# stopped by `stop_workers` or at exit.
_served_workers: dict[int, subprocess.Popen] = {}
_active_contexts = 0
_atexit_registered = False
_installed_interrupts = False  # the Ctrl-C handlers were installed by a context, not by a binary


def worker_binary_path() -> str:
    """Path of TFF's C++ worker, found without importing TFF (that import takes ~20 s)."""
    spec = importlib.util.find_spec("tensorflow_federated")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tensorflow_federated is not installed; it ships the worker_binary.")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", WORKER_BINARY_NAME)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise RuntimeError(f"Expected TFF's executable worker binary at {path}.")
    return path


def parse_worker_address(address: str) -> tuple[str, int]:
    """Splits 'host:port' (or '[ipv6]:port'), rejecting what gRPC would only fail on much later."""
    text = address.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"Worker address {address!r} must look like host:port, e.g. 10.0.0.5:8000.")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"Worker address {address!r}: port must be in 1..65535.")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"Worker address {address!r}: write IPv6 hosts in brackets, e.g. [::1]:8000.")
    return host, port


def _register_atexit() -> None:
    global _atexit_registered
    with _lock:
        if not _atexit_registered:
            atexit.register(_stop_everything)
            _atexit_registered = True


def _popen_worker(
    port: int, max_concurrent_computation_calls: int, die_with_parent: bool
) -> subprocess.Popen:
    command = [
        worker_binary_path(),
        f"--port={port}",
        f"--max_concurrent_computation_calls={max_concurrent_computation_calls}",
    ]
    # PDEATHSIG fires when the *thread* that forked dies, so only tie it to the main thread.
    if die_with_parent and threading.current_thread() is threading.main_thread():
        command = [sys.executable, "-c", _DIE_WITH_PARENT_LAUNCHER, str(os.getpid()), *command]
    # Output is inherited, as in TFF's own context, but without TF's INFO lines (a dozen per round);
    # stdin is closed so the worker never competes for a terminal.
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # Its own session: a terminal's Ctrl-C reaches this process only, which then stops the worker
    # after the computation in flight has unwound (the worker would ignore SIGINT anyway).
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def _ensure_port_free(port: int) -> None:
    """worker_binary binds with SO_REUSEPORT: on a taken port it starts anyway and silently shares the
    port's connections with whatever server holds it. A plain bind (no SO_REUSEPORT) detects that."""
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this machine
        with probe:
            try:
                probe.bind((host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise RuntimeError(f"Port {port} is already in use; pick another --port.") from None
                continue
        return


def wait_ready(address: str, timeout_s: float, process: subprocess.Popen | None = None) -> Any:
    """Returns a gRPC channel to `address` once it accepts connections; ValueError on timeout."""
    import grpc

    channel = grpc.insecure_channel(address, _GRPC_CHANNEL_OPTIONS)
    ready = grpc.channel_ready_future(channel)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                ready.result(timeout=min(0.2, max(deadline - time.monotonic(), 0.01)))
                return channel
            except grpc.FutureTimeoutError:
                if process is not None and process.poll() is not None:
                    raise RuntimeError(
                        f"TFF worker_binary for {address} exited with code {process.returncode} "
                        "before accepting connections (port taken?)."
                    ) from None
                if time.monotonic() >= deadline:
                    raise ValueError(
                        f"TFF worker at {address} is not reachable within {timeout_s:g} s. Start it on that "
                        f"machine with `python -m pipelines.tff_worker --port={address.rsplit(':', 1)[1]}` "
                        "and check that the port is open."
                    ) from None
    except BaseException:
        ready.cancel()
        channel.close()
        raise


def start_worker(
    port: int | None,
    max_concurrent_computation_calls: int,
    die_with_parent: bool,
    ready_timeout_s: float,
    registry: dict[int, subprocess.Popen],
) -> tuple[str, subprocess.Popen, Any]:
    """Starts one worker on 127.0.0.1, waits until it serves; retries a port lost to a race."""
    import portpicker  # a TFF dependency; picks the port the way TFF's own context does

    _register_atexit()
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else portpicker.pick_unused_port()
        address = f"127.0.0.1:{chosen}"
        try:
            _ensure_port_free(chosen)
        except RuntimeError:
            if attempt + 1 == attempts:
                raise
            continue
        process = _popen_worker(chosen, max_concurrent_computation_calls, die_with_parent)
        with _lock:
            registry[process.pid] = process
        try:
            channel = wait_ready(address, ready_timeout_s, process)
        except RuntimeError:
            stop_processes([process])
            if attempt + 1 == attempts:
                raise
            continue
        except BaseException:
            stop_processes([process])
            raise
        logging.info("Started TFF worker_binary pid %d on %s", process.pid, address)
        return address, process, channel
    raise AssertionError("unreachable")


def stop_processes(
    processes: Iterable[subprocess.Popen | psutil.Process], timeout_s: float = _STOP_TIMEOUT_S
) -> None:
    """SIGTERM (the signal the worker obeys), wait, SIGKILL what is left, and reap."""
    processes = list(processes)
    for p in processes:
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
            p.terminate()
    deadline = time.monotonic() + timeout_s
    for p in processes:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
            logging.warning("TFF worker pid %d ignored SIGTERM; killing it.", p.pid)
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired, psutil.TimeoutExpired):
                p.wait(timeout=timeout_s)
        except (ChildProcessError, psutil.NoSuchProcess):
            pass
        with _lock:
            context_workers.pop(p.pid, None)
            _served_workers.pop(p.pid, None)


def worker_descendants() -> list[psutil.Process]:
    """Live `worker_binary` processes below this one (whoever started them: us or TFF's default context)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if child.name() == WORKER_BINARY_NAME and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


def _sweep_strays(keep_served: bool) -> None:
    """Stops worker descendants we do not track, e.g. one TFF's default context started lazily."""
    with _lock:
        keep = set(_served_workers) if keep_served else set()
    strays = [p for p in worker_descendants() if p.pid not in keep]
    if strays:
        logging.info("Stopping %d worker_binary process(es): %s", len(strays), [p.pid for p in strays])
        stop_processes(strays)


def _stop_everything() -> None:
    """At exit or on a signal: no worker this process started may survive it."""
    with _lock:
        tracked = list(context_workers.values()) + list(_served_workers.values())
    stop_processes(tracked)
    _sweep_strays(keep_served=False)


def _interactive() -> bool:
    """In a REPL or notebook Ctrl-C must stay a KeyboardInterrupt, not end the session; the context's
    own exit still stops its worker."""
    return hasattr(sys, "ps1") or "ipykernel" in sys.modules


def enter_lifecycle() -> None:
    """First active context: Ctrl-C/SIGTERM handlers (`training.interrupts`) and the atexit hook.

    The handlers only raise; the context's `finally` stops its worker while the stack unwinds.
    """
    global _active_contexts, _installed_interrupts
    _register_atexit()
    with _lock:
        _active_contexts += 1
        if _active_contexts == 1 and not _interactive() and not interrupts.installed():
            _installed_interrupts = interrupts.install(_SIGNAL_EXIT_GRACE_S)


def exit_lifecycle() -> None:
    """Last active context gone: stop stray workers and give the signals back to their owners."""
    global _active_contexts, _installed_interrupts
    with _lock:
        _active_contexts -= 1
        last = _active_contexts == 0
    if not last:
        return
    _sweep_strays(keep_served=True)
    if _installed_interrupts and not interrupts.interrupted():
        interrupts.uninstall()
        _installed_interrupts = False


def start_local_workers(
    n: int,
    *,
    max_concurrent_computation_calls: int = -1,
    ready_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> list[tuple[str, subprocess.Popen]]:
    """Starts `n` worker_binary servers on 127.0.0.1 for `execution_context(workers=...)`.

    They die with this process (PDEATHSIG, atexit, signal handlers) and are stopped by `stop_workers`.
    """
    if n < 1:
        raise ValueError(f"Number of workers must be >= 1, got {n}.")
    started: list[tuple[str, subprocess.Popen]] = []
    try:
        for _ in range(n):
            address, process, channel = start_worker(
                None, max_concurrent_computation_calls, True, ready_timeout_s, _served_workers
            )
            channel.close()
            started.append((address, process))
    except BaseException:
        stop_workers(started)
        raise
    return started


def stop_workers(workers: Iterable[tuple[str, subprocess.Popen] | subprocess.Popen]) -> None:
    """SIGTERMs and reaps workers from `start_local_workers` (SIGINT would be ignored by them)."""
    processes = [w[1] if isinstance(w, tuple) else w for w in workers]
    stop_processes(processes)


def serve_worker(port: int, max_concurrent_computation_calls: int = -1) -> int:
    """Runs one worker_binary in the foreground until SIGINT/SIGTERM; returns its exit status.

    Unlike the bare binary, Ctrl-C stops it: both signals are forwarded as SIGTERM.
    """
    if not 1 <= port <= 65535:
        raise ValueError(f"Port must be in 1..65535, got {port}.")
    _register_atexit()
    received: list[int] = []

    def _forward(signum: int, frame: Any) -> None:
        # Only signal here: waiting would contend with the `process.wait()` this handler interrupted.
        received.append(signum)
        for p in list(_served_workers.values()):
            with contextlib.suppress(ProcessLookupError):
                p.terminate()

    previous = {s: signal.signal(s, _forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            address, process, channel = start_worker(
                port, max_concurrent_computation_calls, True, DEFAULT_CONNECT_TIMEOUT_S, _served_workers
            )
        except RuntimeError:
            if received:  # stopped by a signal while starting: that is the outcome, not the failure
                return 128 + received[0]
            raise
        channel.close()
        logging.info(
            "TFF worker pid %d serving on port %d (all interfaces); Ctrl-C stops it.", process.pid, port
        )
        status = process.wait()
    finally:
        stop_processes(list(_served_workers.values()))
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        return 128 + received[0]
    return 128 - status if status < 0 else status
