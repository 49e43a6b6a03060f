"""Progress of a long run on stdout: a bounded number of lines, each with the elapsed time and an ETA
(unless untimed: a DP run's durations depend on its private data, e.g. the Poisson batch sizes, and no
guarantee covers them, so its lines carry none).

Epochs and rounds are reported at most `max_lines` times (evenly spaced, plus the last), so a
100-epoch run prints about 20 lines, not 100; notes (stopped for the budget, resumed) always print.
A silent reporter (used inside the comparison, which prints one line per arm) prints nothing.

A run that diverges (a non-finite loss or weights, TerminateOnNaN's rule) stops with `Diverged`: the
binaries turn it into one line and exit code 5 (pipelines/_app.py's EXIT_CODES_HELP).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

DEFAULT_MAX_LINES = 20


def duration(seconds: float) -> str:
    """3.2s, 1m05s, 2h03m."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """`step(done, text)` after each of `total` epochs/rounds; `note(text)` for events."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        first: int = 1,
        enabled: bool = True,
        timed: bool = True,
        max_lines: int = DEFAULT_MAX_LINES,
        printer: Callable[[str], None] | None = None,
    ) -> None:
        """`timed=False`: step lines without elapsed time and ETA (a DP run's, which nothing covers)."""
        self.label, self.total, self.first, self.enabled = label, total, first, enabled
        self.timed = timed
        self.every = max(1, math.ceil((total - first + 1) / max_lines))
        self.printer = printer or (lambda line: print(line, flush=True))
        self._start = time.monotonic()

    def _print(self, text: str) -> None:
        if self.enabled:
            self.printer(f"[{self.label}] {text}")

    def eta(self, done: int) -> float:
        steps = done - self.first + 1
        if steps <= 0:
            return math.inf
        return (time.monotonic() - self._start) / steps * (self.total - done)

    def step(self, done: int, text: str) -> None:
        if done == self.total or (done - self.first) % self.every == 0:
            if not self.timed:
                self._print(text)
                return
            elapsed = duration(time.monotonic() - self._start)
            self._print(f"{text} [{elapsed}, eta {duration(self.eta(done))}]")

    def note(self, text: str) -> None:
        self._print(text)


class Diverged(RuntimeError):
    """Training produced a non-finite loss or weights: the run stopped there (its steps accounted).

    `where`: "epoch 3" / "round 4"; `reason`: what was not finite; `hint`: which settings to lower;
    `folder`: the run folder, which keeps the privacy.json of the steps taken and no model."""

    exit_code = 5  # documented in pipelines/_app.py's EXIT_CODES_HELP

    def __init__(self, where: str, reason: str, hint: str, folder: str) -> None:
        self.where, self.reason, self.hint, self.folder = where, reason, hint, folder
        super().__init__(
            f"training diverged at {where} ({reason}): {hint}, and use a new --experiment_name ({folder} "
            "keeps the privacy.json of the steps taken; no model was saved)"
        )

    @classmethod
    def recorded(cls, privacy: Mapping[str, Any], hint: str, folder: str) -> Diverged | None:
        """The divergence a run folder's privacy.json records (a rerun says it again), or None."""
        record = privacy.get("diverged")
        if not isinstance(record, Mapping):
            return None
        return cls(str(record.get("at")), str(record.get("reason")), hint, folder)

    def record(self) -> dict[str, str]:
        """What privacy.json keeps of it (`recorded` reads it back)."""
        return {"at": self.where, "reason": self.reason}

    def report_fields(self, unit: str, count: int) -> dict[str, Any]:
        """privacy.json's fields for a run that stopped so after `count` epochs or rounds (`unit`)."""
        return {"stopped_early_for_budget": False, "diverged": {unit: count, **self.record()}}


def all_finite(arrays: Iterable[Any]) -> bool:
    """Every value of every array (weights: numpy arrays or tf.Variables) is finite."""
    return all(bool(np.isfinite(np.asarray(a)).all()) for a in arrays)


def divergence(losses: Mapping[str, float | None], weights: Iterable[Any] | None = None) -> str | None:
    """Why a step diverged ("test loss nan", "non-finite weights"), or None when everything is finite.

    `losses`: {name: value} of the losses the run may act on (None: not measured this step)."""
    reasons = [
        f"{name} {value:g}"
        for name, value in losses.items()
        if value is not None and not math.isfinite(value)
    ]
    if weights is not None and not all_finite(weights):
        reasons.append("non-finite weights")
    return ", ".join(reasons) or None
