"""Shared fixtures, and the session guard: no TFF `worker_binary` started by the tests may outlive them.

Every process the session starts inherits a per-session token in its environment, so a worker is
recognised as ours even after it was orphaned to PID 1 and even on a machine where other TFF jobs run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid

import psutil
import pytest

_SESSION_ENV = "PPML_TEST_SESSION"
_WORKER_NAME = "worker_binary"


def _session_workers(token: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "ppid", "status"]):
        if p.info["name"] != _WORKER_NAME or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            ours = p.info["ppid"] == os.getpid() or p.environ().get(_SESSION_ENV) == token
        except psutil.NoSuchProcess:
            continue
        except psutil.AccessDenied:  # another user's process: only our direct children count
            ours = p.info["ppid"] == os.getpid()
        if ours:
            found.append(p)
    return found


@pytest.fixture(scope="session", autouse=True)
def no_worker_binary_survives():
    token = uuid.uuid4().hex
    previous = os.environ.get(_SESSION_ENV)
    os.environ[_SESSION_ENV] = token
    yield
    # Parent-death signals and SIGTERMs are asynchronous: give a dying worker a moment.
    deadline = time.monotonic() + 5.0
    survivors = _session_workers(token)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.2)
        survivors = _session_workers(token)
    described = [f"pid {p.pid} (ppid {p.info['ppid']})" for p in survivors]
    for p in survivors:  # do not leak them past the report
        p.terminate()
    psutil.wait_procs(survivors, timeout=5.0)
    if previous is None:
        os.environ.pop(_SESSION_ENV, None)
    else:
        os.environ[_SESSION_ENV] = previous
    if survivors:
        pytest.fail(f"TFF worker_binary processes started by this test session survived it: {described}")


# ---------------------------------------------------------------- shared fixtures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _binary_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the binaries' own default: quiet
    return env


@pytest.fixture(scope="session")
def repo() -> str:
    """The repository root (binaries run from there unless a test gives another cwd)."""
    return REPO


@pytest.fixture(scope="session")
def binary_env() -> dict[str, str]:
    """Environment for binaries started from another folder: the repo importable, default logging."""
    return _binary_env()


@pytest.fixture(scope="session")
def run_binary():
    """run_binary("train_centralized", *flags, cwd=..., timeout=...) -> CompletedProcess (text)."""

    def run(name: str, *args: str, cwd: str | None = None, timeout: float = 600, **kwargs):
        return subprocess.run(
            [sys.executable, "-m", f"pipelines.{name}", *args],
            cwd=cwd or REPO,
            env=_binary_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    return run


def _workers_in(cwd: str) -> list[psutil.Process]:
    """worker_binary processes started from `cwd` (each test runs its binary in its own tmp dir)."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] == _WORKER_NAME and p.status() != psutil.STATUS_ZOMBIE and p.cwd() == cwd:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.fixture(scope="session")
def assert_no_workers_left():
    """assert_no_workers_left(cwd): no TFF worker started from `cwd` is alive (waits up to 10 s)."""

    def check(cwd: str) -> None:
        deadline = time.time() + 10
        while _workers_in(cwd) and time.time() < deadline:
            time.sleep(0.2)
        assert not _workers_in(cwd), "the run left a TFF worker_binary behind"

    return check


@pytest.fixture(scope="session")
def digits():
    from data.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def saved_digits_model(tmp_path_factory) -> str:
    """A small logistic model on digits, trained and saved as a SavedModel in a subprocess."""
    model_dir = str(tmp_path_factory.mktemp("saved") / "run" / "model")
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        from data.datasets import load_digits
        from models.builders import build_model
        d = load_digits()
        m = build_model("logistic", d.input_shape, 10)
        m.compile(optimizer=tf.keras.optimizers.Adam(0.05),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(d.x_train, d.y_train, epochs=10, verbose=0)
        m.save({model_dir!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, capture_output=True, timeout=300)
    return model_dir


# ---------------------------------------------------------------- process checks


def _alive(pid: int, create_time: float) -> bool:
    """Still running as the same process (a recycled PID does not count)."""
    try:
        p = psutil.Process(pid)
        return p.create_time() == create_time and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="session")
def wait_gone():
    """wait_gone([(pid, create_time), ...], timeout_s=5) -> the pids still alive after the wait."""

    def wait(workers: list[tuple[int, float]], timeout_s: float = 5.0) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = [pid for pid, t in workers if _alive(pid, t)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)

    return wait


@pytest.fixture(scope="session")
def worker_children():
    """worker_children(pid) -> the live worker_binary processes below `pid`."""
    return lambda pid: [c for c in psutil.Process(pid).children(recursive=True) if c.name() == _WORKER_NAME]
