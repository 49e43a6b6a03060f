"""The tff_worker binary: Ctrl-C and SIGTERM stop it and its worker_binary; a taken port is one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import portpicker
import pytest

from training.federated import worker_processes


def test_worker_binary_refuses_taken_port(repo):
    # worker_binary itself would start on a taken port (SO_REUSEPORT) and silently share it.
    (address, process), *_ = worker_processes.start_local_workers(1)
    try:
        taken = int(address.rsplit(":", 1)[1])
        out = subprocess.run(
            [sys.executable, "-m", "pipelines.tff_worker", f"--port={taken}"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert (
            out.stderr.strip() == f"tff_worker: error: Port {taken} is already in use; pick another --port."
        )
    finally:
        worker_processes.stop_workers([process])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tff_worker_binary_stops_on_ctrl_c_and_sigterm(signum, wait_gone, worker_children, repo):
    port = portpicker.pick_unused_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.tff_worker", f"--port={port}"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (children := worker_children(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert children, "tff_worker did not start worker_binary"
        records = [(c.pid, c.create_time()) for c in children]
        time.sleep(0.5)
        server.send_signal(signum)
        assert server.wait(timeout=15) == 128 + signum
        assert server.stderr.read().strip() == f"tff_worker: stopped ({signal.Signals(signum).name})"
        assert wait_gone(records) == []
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
