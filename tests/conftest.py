"""Session guard: no TFF `worker_binary` started by this test session may outlive it (issue 3, item 6).

Every process the session starts inherits a per-session token in its environment, so a worker is
recognised as ours even after it was orphaned to PID 1 and even on a machine where other TFF jobs run.
"""

from __future__ import annotations

import os
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
