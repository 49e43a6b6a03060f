"""Starts an absl binary the same way as `python -m pipelines.X` and as its console script.

absl's `--help` lists the key flags of the module named by sys.argv[0]. Under a console script
(`ppml-budget`) that is the script, not the module that defined the flags, so the help would be
empty; registering the binary's key flags for sys.argv[0] too fixes that.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags


def run(main: Callable[[list[str]], None], module_name: str) -> None:
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
