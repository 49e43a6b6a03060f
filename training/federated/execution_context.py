"""The TFF execution context of a run: local (one owned `worker_binary`) or remote workers.

With `workers=["host:port", ...]` the client work runs on remote `worker_binary` processes, one async
context per worker merged by `create_mergeable_comp_execution_context` (TFF 0.87 has no helper for it).
A worker that dies mid-run raises `WorkerLostError` instead of TFF's endless retry.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

from training.federated.worker_processes import (
    DEFAULT_CONNECT_TIMEOUT_S,
    context_workers,
    enter_lifecycle,
    exit_lifecycle,
    parse_worker_address,
    start_worker,
    stop_processes,
    wait_ready,
)


class WorkerLostError(RuntimeError):
    """A worker died or became unreachable mid-computation (TFF itself would retry forever)."""


# RPCs whose failure means lost work. Dispose calls are left alone: TFF swallows their errors.
_GUARDED_RPCS = (
    "get_executor",
    "create_value",
    "create_struct",
    "create_call",
    "create_selection",
    "compute",
)


def _guarded_stub(channel: Any, address: str, timeout_s: float, process: subprocess.Popen | None) -> Any:
    """A RemoteExecutorGrpcStub whose UNAVAILABLE errors become `WorkerLostError` once the worker is gone.

    TFF's async context retries "retryable" gRPC errors (UNAVAILABLE, FAILED_PRECONDITION) with no limit,
    so a crashed worker turns a run into a silent, endless hang. A short outage is still retried.
    """
    import grpc
    import tensorflow_federated as tff
    from tensorflow_federated.python.core.impl.executors import executors_errors

    lost: list[str] = []  # once declared lost, later calls fail at once instead of waiting again

    def raise_if_lost(error: Exception) -> None:
        if not lost and process is not None and process.poll() is not None:
            lost.append(
                f"TFF worker_binary (pid {process.pid}, {address}) exited with code {process.returncode} "
                "during a computation."
            )
        if not lost:
            try:
                grpc.channel_ready_future(channel).result(timeout=timeout_s)
            except grpc.FutureTimeoutError:
                lost.append(
                    f"TFF worker at {address} has been unreachable for {timeout_s:g} s during a computation "
                    "(crashed, stopped or network down); restart it and resume from the last checkpoint."
                )
        if lost:
            raise WorkerLostError(lost[0]) from error

    def guard(name: str) -> Any:
        rpc = getattr(tff.framework.RemoteExecutorGrpcStub, name)

        def call(self: Any, request: Any) -> Any:
            try:
                return rpc(self, request)
            except executors_errors.RetryableError as e:
                raise_if_lost(e)
                raise  # reachable again: let TFF retry

        return call

    stub_class = type(
        "GuardedRemoteExecutorGrpcStub",
        (tff.framework.RemoteExecutorGrpcStub,),
        {name: guard(name) for name in _GUARDED_RPCS},
    )
    return stub_class(channel)


def _remote_executor_factory(stub: Any) -> Any:
    import tensorflow_federated as tff

    def stack_fn(cardinalities: dict) -> Any:
        # Without a CLIENTS cardinality FedAvg's initialize() fails ("no cardinality for clients").
        cardinalities.setdefault(tff.CLIENTS, 0)
        executor = tff.framework.RemoteExecutor(stub)
        executor.set_cardinalities(cardinalities)
        return executor

    return tff.framework.ResourceManagingExecutorFactory(stack_fn)


def _context_kwargs() -> dict[str, Any]:
    import tensorflow_federated as tff

    return dict(
        compiler_fn=tff.backends.native.desugar_and_transform_to_native,
        transform_args=tff.tensorflow.transform_args,
        transform_result=tff.tensorflow.transform_result,
    )


def _check_workers(workers: Sequence[str]) -> list[str]:
    if isinstance(workers, str):
        raise ValueError("workers must be a list of 'host:port' strings, not one string.")
    addresses = [w.strip() for w in workers]
    if not addresses:
        raise ValueError("workers is empty: pass None to run on a local worker.")
    for a in addresses:
        parse_worker_address(a)
    duplicates = sorted({a for a in addresses if addresses.count(a) > 1})
    if duplicates:
        raise ValueError(f"Worker address(es) listed twice: {', '.join(duplicates)}.")
    return addresses


def check_reachable(workers: Sequence[str], timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """ValueError unless every remote worker accepts connections (checked before a run writes anything).

    A refused TCP connection (nothing listens there) fails at once; otherwise gRPC gets `timeout_s`.
    """
    for address in _check_workers(workers):
        host, port = parse_worker_address(address)
        try:
            socket.create_connection((host.strip("[]"), port), timeout=min(5.0, timeout_s)).close()
        except ConnectionRefusedError:
            raise ValueError(
                f"TFF worker at {address} refused the connection: nothing listens there. Start it on that "
                f"machine with `python -m pipelines.tff_worker --port={port}`, or fix --workers"
            ) from None
        except OSError:
            pass  # unreachable or slow: gRPC's own wait below decides
        wait_ready(address, timeout_s).close()


@contextlib.contextmanager
def execution_context(
    workers: Sequence[str] | None = None,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    max_concurrent_computation_calls: int = -1,
) -> Iterator[None]:
    """Runs the enclosed TFF computations locally (None) or on remote `worker_binary`s ("host:port").

    Local: one C++ worker owned by this context, with no limit on concurrent calls (the fastest
    setting measured), stopped on the way out. Remote: the workers are not ours and are left running;
    their clients' work is split across them. TFF's context stack is thread-local, so computations
    must run in the thread that entered the context. Signal handlers are installed only when entered
    from the main thread.
    """
    addresses = None if workers is None else _check_workers(workers)
    if connect_timeout_s <= 0:
        raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s}.")
    channels: list[Any] = []
    own_process: subprocess.Popen | None = None
    enter_lifecycle()
    try:
        # Reach the remote workers first: an unreachable one fails in seconds, not after TFF's import.
        for address in addresses or ():
            channels.append(wait_ready(address, connect_timeout_s))
        import tensorflow_federated as tff

        kwargs = _context_kwargs()
        if addresses is None:
            address, own_process, channel = start_worker(
                None, max_concurrent_computation_calls, True, connect_timeout_s, context_workers
            )
            channels.append(channel)
            stub = _guarded_stub(channel, address, connect_timeout_s, own_process)
            context = tff.framework.SyncExecutionContext(_remote_executor_factory(stub), **kwargs)
        else:
            async_contexts = []
            for address, channel in zip(addresses, channels, strict=True):
                stub = _guarded_stub(channel, address, connect_timeout_s, None)
                async_contexts.append(
                    tff.framework.AsyncExecutionContext(executor_fn=_remote_executor_factory(stub), **kwargs)
                )
            context = tff.backends.native.create_mergeable_comp_execution_context(async_contexts)
        with tff.framework.get_context_stack().install(context):
            yield
    finally:
        if own_process is not None:
            stop_processes([own_process])
        for channel in channels:
            channel.close()
        exit_lifecycle()
