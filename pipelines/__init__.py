"""The binaries (`python -m pipelines.<name>`). Started that way, a signal during their imports is
held for the binary to report as an interruption (`training.interrupts.hold`)."""

import sys as _sys


def _started_as_binary() -> bool:
    """`python -m pipelines.X`: runpy imports this package before the module, with argv[0] '-m'."""
    argv = getattr(_sys, "orig_argv", [])
    if _sys.argv[:1] != ["-m"] or "-m" not in argv:
        return False
    index = argv.index("-m") + 1
    return index < len(argv) and argv[index].startswith("pipelines.")


if _started_as_binary():
    from training import interrupts as _interrupts

    _interrupts.hold()
