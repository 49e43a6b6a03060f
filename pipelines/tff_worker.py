"""Serves TFF client work to `train_federated --workers=host:port,...` from this machine.

  python -m pipelines.tff_worker --port=8000

Runs TFF's C++ `worker_binary` in the foreground. Unlike the bare binary, which ignores SIGINT,
Ctrl-C stops it. It listens on all interfaces without authentication and executes whatever TF graph
it is sent, so open the port only to the coordinating machine (trusted network, VPN or SSH tunnel).
Imports neither TensorFlow nor TensorFlow Federated.
"""

from __future__ import annotations

import signal
import sys

from absl import flags

from pipelines import _app

_PORT = flags.DEFINE_integer(
    "port", None, "TCP port to serve on (all interfaces).", lower_bound=1, upper_bound=65535
)
_MAX_CONCURRENT_CALLS = flags.DEFINE_integer(
    "max_concurrent_computation_calls",
    -1,
    "Most parallel calls of one computation (e.g. clients trained at once); <= 0 means no limit, the "
    "fastest setting measured. Lower it only if the worker runs out of memory.",
)
flags.mark_flag_as_required("port")


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    from training.federated import worker_processes

    with _app.bad_input(RuntimeError):  # e.g. the port is taken: one line, no traceback
        status = worker_processes.serve_worker(_PORT.value, _MAX_CONCURRENT_CALLS.value)
    if status > 128:
        print(f"tff_worker: stopped ({signal.Signals(status - 128).name})", file=sys.stderr)
    sys.exit(status)


def run() -> None:
    _app.run(main, __name__)


if __name__ == "__main__":
    run()
