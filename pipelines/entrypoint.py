"""`app.run` for binaries that use TensorFlow, with TF imported before absl parses flags.

Keras 2.14 cannot build a Sequential model with a Flatten layer ("Attempt to convert a
value (None)") when TensorFlow is first imported inside `main` under `absl.app.run`;
importing it before `app.run` avoids that. `--help` skips the import so it stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app

_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def run_with_tensorflow(main: Callable[[list[str]], None]) -> None:
    if not any(arg.split("=")[0] in _HELP for arg in sys.argv[1:]):
        import tensorflow  # noqa: F401  (see module docstring)
    app.run(main)
