"""Importing TensorFlow inside an absl `main()` without breaking Keras.

TF 2.14's `tensorflow.python.distribute.combinations` registers
`absl.app.call_after_init(_set_total_phsyical_gpus)` at import time. Inside `main()` absl's init is
already done, so that callback runs *during* `import tensorflow`: it initializes the eager context
half-way through the import, and Keras then builds TF1 graph placeholders instead of KerasTensors.
Every Sequential model with a Flatten layer then fails with "Attempt to convert a value (None) ...".

Binaries keep TF out of module top (fast --help), so they import it through this function, which
imports TF as if absl's init had not run yet: the callback is queued (and never needed) instead of
running mid-import.
"""

from __future__ import annotations

import sys


def import_tensorflow():
    """Imports and returns tensorflow; safe to call from absl main() (idempotent)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    from absl import app

    done = getattr(app._run_init, "done", False)  # noqa: SLF001 - see the module docstring
    app._run_init.done = False  # noqa: SLF001
    try:
        import tensorflow as tf
    finally:
        app._run_init.done = done  # noqa: SLF001
    return tf
