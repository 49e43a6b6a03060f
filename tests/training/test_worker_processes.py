"""TFF execution contexts: no worker_binary survives any way out, and remote workers match local ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import portpicker
import psutil
import pytest

from training.federated import execution_context, worker_processes

# Runs a TFF computation in a local context, records the workers it started, then ends in `mode`.
_CHILD = """
import json, os, sys
mode, record = sys.argv[1], sys.argv[2]
import numpy as np
import tensorflow_federated as tff
from training.federated import execution_context, worker_processes

@tff.tensorflow.computation(np.int32)
def add_one(x):
    return x + 1

if mode == "tff_default":
    add_one(1)  # TFF's own default context starts a worker it would orphan (or hang on) at exit
with execution_context.execution_context():
    assert add_one(1) == 2
    workers = [(p.pid, p.create_time()) for p in worker_processes.worker_descendants()]
    with open(record + ".tmp", "w") as f:
        json.dump(workers, f)
    os.replace(record + ".tmp", record)
    if mode == "raise":
        raise RuntimeError("boom")
    if mode in ("sigterm", "sigint", "sigkill"):
        while True:  # computations in flight when the signal lands
            add_one(1)
print("left the context", flush=True)
"""


_EXPECTED_CODE = {"normal": 0, "tff_default": 0, "raise": 1, "sigterm": 143, "sigint": 130, "sigkill": -9}


_SIGNAL = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL}


@pytest.mark.parametrize("address", ["localhost:8000", "10.0.0.5:1", "[::1]:65535", "my-host.example:80"])
def test_parse_worker_address_accepts(address):
    host, port = worker_processes.parse_worker_address(address)
    assert f"{host}:{port}" == address


@pytest.mark.parametrize(
    "address", ["localhost", ":8000", "host:", "host:0", "host:70000", "host:80a", "::1:80"]
)
def test_parse_worker_address_rejects(address):
    with pytest.raises(ValueError, match="Worker address"):
        worker_processes.parse_worker_address(address)


@pytest.mark.parametrize(
    ("workers", "message"),
    [
        ([], "empty"),
        ("127.0.0.1:8000", "list"),
        (["127.0.0.1:8000", "127.0.0.1:8000"], "twice"),
        (["x"], "host:port"),
    ],
)
def test_bad_worker_lists_are_rejected(workers, message):
    with pytest.raises(ValueError, match=message), execution_context.execution_context(workers):
        pass


def test_unreachable_worker_is_a_clear_error_not_a_hang():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"{address}.*not reachable"):
        with execution_context.execution_context([address], connect_timeout_s=1.0):
            pass
    assert time.monotonic() - start < 10
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_runtime_import_does_not_import_tensorflow(repo):
    code = (
        "import sys, training.federated.worker_processes, training.federated.execution_context, "
        "pipelines.tff_worker; print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_start_and_stop_local_workers(wait_gone):
    import grpc

    workers = worker_processes.start_local_workers(2)
    try:
        addresses = [a for a, _ in workers]
        assert len(set(addresses)) == 2
        for address, process in workers:
            assert process.poll() is None
            assert psutil.Process(process.pid).name() == "worker_binary"
            channel = grpc.insecure_channel(address)
            grpc.channel_ready_future(channel).result(timeout=5)
            channel.close()
        records = [(p.pid, psutil.Process(p.pid).create_time()) for _, p in workers]
    finally:
        worker_processes.stop_workers(workers)
    assert wait_gone(records) == []
    assert [p.returncode for _, p in workers] == [-signal.SIGTERM, -signal.SIGTERM]


@pytest.mark.slow
def test_local_context_leaves_no_worker_child(worker_children):
    import numpy as np
    import tensorflow_federated as tff

    @tff.tensorflow.computation(np.int32)
    def add_one(x):
        return x + 1

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with execution_context.execution_context():
        assert add_one(41) == 42
        inside = worker_processes.worker_descendants()
        assert len(inside) == 1
        assert signal.getsignal(signal.SIGTERM) is not handlers[1]
    assert worker_children(os.getpid()) == []
    assert not inside[0].is_running() or inside[0].status() == psutil.STATUS_ZOMBIE
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    # A second context starts a fresh worker: leaving the first did not break TFF.
    with execution_context.execution_context():
        assert add_one(1) == 2
    assert worker_children(os.getpid()) == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(_EXPECTED_CODE))
def test_no_worker_survives_the_process(mode, tmp_path, wait_gone, repo):
    script, record, log = tmp_path / "child.py", tmp_path / "workers.json", tmp_path / "child.log"
    script.write_text(_CHILD)
    env = dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log, "w") as out:
        child = subprocess.Popen(
            [sys.executable, str(script), mode, str(record)], cwd=repo, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 180
        while not record.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert record.exists(), f"child never ran its computation:\n{log.read_text()[-3000:]}"
        workers = [tuple(w) for w in json.loads(record.read_text())]
        assert len(workers) >= 1
        if mode in _SIGNAL:
            time.sleep(1.0)  # let it get busy with the loop of computations
            child.send_signal(_SIGNAL[mode])
        # 20 s is below the 30 s hard-exit watchdog: the graceful path itself must not hang.
        code = child.wait(timeout=20 if mode in _SIGNAL else 60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == _EXPECTED_CODE[mode], log.read_text()[-3000:]
    assert wait_gone(workers) == [], f"worker_binary survived {mode}"


def _tiny_fed_avg(workers: list[str] | None, rounds: int = 2):
    """Weighted FedAvg, no noise, 4 synthetic clients of different sizes (so the weights matter)."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_federated as tff

    rng = np.random.default_rng(0)
    clients = []
    for c in range(4):
        x = rng.normal(size=(6 + 5 * c, 3)).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5], np.float32) > 0).astype(np.int32)
        clients.append(tf.data.Dataset.from_tensor_slices((x, y)).batch(4))

    def model_fn():
        keras_model = tf.keras.Sequential(
            [tf.keras.layers.Dense(2, input_shape=(3,), kernel_initializer="zeros", bias_initializer="zeros")]
        )
        return tff.learning.models.from_keras_model(
            keras_model,
            input_spec=clients[0].element_spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
    )
    losses = []
    with execution_context.execution_context(workers):
        state = process.initialize()
        for _ in range(rounds):
            output = process.next(state, clients)
            state = output.state
            losses.append(float(output.metrics["client_work"]["train"]["loss"]))
        weights = process.get_model_weights(state)
    return [np.asarray(v) for v in weights.trainable], losses


@pytest.mark.slow
def test_two_remote_workers_match_local_execution(worker_children):
    import numpy as np

    local_weights, local_losses = _tiny_fed_avg(None)
    workers = worker_processes.start_local_workers(2)
    try:
        processes = [psutil.Process(p.pid) for _, p in workers]
        cpu_before = [sum(p.cpu_times()[:2]) for p in processes]
        remote_weights, remote_losses = _tiny_fed_avg([address for address, _ in workers])
        cpu_used = [sum(p.cpu_times()[:2]) - b for p, b in zip(processes, cpu_before, strict=True)]
        # Both workers did client work, not just the first one (an idle worker uses ~0 s).
        assert min(cpu_used) > 0.05, cpu_used
    finally:
        worker_processes.stop_workers(workers)
    assert local_losses[1] < local_losses[0]  # it trained
    np.testing.assert_allclose(remote_losses, local_losses, rtol=1e-5)
    assert len(remote_weights) == len(local_weights) == 2
    for remote, local in zip(remote_weights, local_weights, strict=True):
        np.testing.assert_allclose(remote, local, rtol=1e-5, atol=1e-6)
    assert worker_children(os.getpid()) == []


@pytest.mark.slow
@pytest.mark.parametrize("remote", [False, True])
def test_worker_lost_mid_run_is_an_error_not_an_endless_retry(remote):
    import numpy as np
    import tensorflow_federated as tff

    @tff.tensorflow.computation(np.int32)
    def add_one(x):
        return x + 1

    workers = worker_processes.start_local_workers(1) if remote else []
    try:
        with execution_context.execution_context([a for a, _ in workers] or None, connect_timeout_s=2.0):
            assert add_one(1) == 2
            if remote:
                worker_processes.stop_workers(workers)
            else:
                (worker,) = worker_processes.worker_descendants()
                worker.kill()
                worker.wait(5)
            start = time.monotonic()
            with pytest.raises(execution_context.WorkerLostError, match="127.0.0.1"):
                add_one(2)
            assert time.monotonic() - start < 15
    finally:
        worker_processes.stop_workers(workers)
