"""The prediction budget ledger: what a model's released answers have cost, persisted next to it.

Queries compose by basic composition: answering n queries at eps costs n * eps (and n * delta).
The ledger (`<model_dir>/../prediction_ledger.json`) holds what has been spent, in exact rational
arithmetic, and refuses any batch that would push the total past the budget: all-or-nothing, no
query of a refused batch is answered. A file lock (fcntl) serializes concurrent processes, and the
ledger file is replaced atomically, so a crash can never leave it half-written.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

from privacy.prediction_release import PredictionConfig

LEDGER_NAME = "prediction_ledger.json"


class BudgetExceededError(Exception):
    """A batch of queries would take total spent epsilon (or delta) past the budget."""


def _exact(value: float | str) -> Fraction:
    """The decimal the user wrote, as an exact rational (0.1 -> 1/10), so sums never drift."""
    return Fraction(str(value))


def ledger_path(model_dir: str) -> str:
    """`<model_dir>/../prediction_ledger.json`: next to the model, in its run folder."""
    return os.path.join(os.path.dirname(os.path.abspath(model_dir.rstrip(os.sep) or os.sep)), LEDGER_NAME)


@dataclasses.dataclass(frozen=True)
class LedgerState:
    epsilon_budget: Fraction
    delta_budget: Fraction
    epsilon_spent: Fraction
    delta_spent: Fraction
    queries_answered: int

    @property
    def epsilon_left(self) -> Fraction:
        return self.epsilon_budget - self.epsilon_spent

    def affordable_queries(self, config: PredictionConfig) -> int:
        n = math.floor(self.epsilon_left / _exact(config.epsilon))
        if config.uses_delta:
            n = min(n, math.floor((self.delta_budget - self.delta_spent) / _exact(config.delta)))
        return max(n, 0)


class PredictionLedger:
    """The persisted record of prediction epsilon spent on one model.

    The budget is fixed when the ledger is created; later runs must pass the same budget
    (or none). Changing it means deleting the ledger on purpose, which is the model owner's
    decision, not a flag a querier can flip.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock_path = path + ".lock"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise ValueError(f"folder for the prediction ledger does not exist: {folder}")
        with open(self.lock_path, "a") as lock:  # a separate file: the ledger itself is replaced
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict | None:
        if not os.path.exists(self.path):
            return None
        try:
            with open(self.path) as f:
                data = json.load(f)
            for key in ("epsilon_budget", "delta_budget", "epsilon_spent", "delta_spent"):
                Fraction(data[key])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"prediction ledger {self.path} is unreadable ({e}); refusing to answer queries "
                "rather than guess how much budget was spent"
            ) from e
        return data

    def _state(self, data: dict) -> LedgerState:
        return LedgerState(
            Fraction(data["epsilon_budget"]),
            Fraction(data["delta_budget"]),
            Fraction(data["epsilon_spent"]),
            Fraction(data["delta_spent"]),
            int(data["queries_answered"]),
        )

    def _resolve(self, data: dict | None, epsilon_budget: float | None, delta_budget: float | None) -> dict:
        if data is None:
            delta_budget = 0.0 if delta_budget is None else delta_budget
            if epsilon_budget is None:
                raise ValueError(
                    f"no prediction ledger at {self.path} yet: pass --prediction_budget to set the "
                    "total epsilon this model may spend on answers"
                )
            if not (math.isfinite(epsilon_budget) and epsilon_budget > 0) or not (0 <= delta_budget < 1):
                raise ValueError(
                    "prediction budget must be epsilon > 0 and delta in [0, 1), "
                    f"got {epsilon_budget}, {delta_budget}"
                )
            return {
                "epsilon_budget": str(_exact(epsilon_budget)),
                "delta_budget": str(_exact(delta_budget)),
                "epsilon_spent": "0",
                "delta_spent": "0",
                "queries_answered": 0,
                "composition": "basic: n queries at (eps, delta) cost (n eps, n delta)",
                "entries": [],
            }
        if epsilon_budget is not None and _exact(epsilon_budget) != Fraction(data["epsilon_budget"]):
            raise ValueError(
                f"the prediction ledger {self.path} fixes the budget at epsilon "
                f"{float(Fraction(data['epsilon_budget'])):g}; --prediction_budget={epsilon_budget:g} "
                "differs (omit it, or delete the ledger deliberately to start a new budget)"
            )
        if delta_budget is not None and _exact(delta_budget) != Fraction(data["delta_budget"]):
            raise ValueError(
                f"the prediction ledger {self.path} fixes the delta budget at "
                f"{float(Fraction(data['delta_budget'])):g}; "
                f"--prediction_delta_budget={delta_budget:g} differs"
            )
        return data

    def state(self, epsilon_budget: float | None = None, delta_budget: float | None = None) -> LedgerState:
        """Current totals (no lock, no write): for a fast pre-check and for reports."""
        return self._state(self._resolve(self._read(), epsilon_budget, delta_budget))

    def check(
        self,
        num_queries: int,
        config: PredictionConfig,
        epsilon_budget: float | None,
        delta_budget: float | None,
    ) -> None:
        """Raises BudgetExceededError now if the batch is unaffordable (an early, unlocked check)."""
        state = self.state(epsilon_budget, delta_budget)
        _require_affordable(state, num_queries, config, self.path)

    def spend(
        self,
        num_queries: int,
        config: PredictionConfig,
        epsilon_budget: float | None,
        delta_budget: float | None = None,
        note: str = "",
    ) -> LedgerState:
        """Durably records the cost of `num_queries` answers, or raises BudgetExceededError.

        Called BEFORE any of the answers exists outside the caller's memory (charge first): under
        the lock we read, check and write the new total, so two processes can never both spend the
        last of it, and it is on disk when this returns. There is no refund: a charged answer that
        was then not delivered loses budget, never privacy.
        """
        if num_queries <= 0:
            raise ValueError(f"num_queries must be > 0, got {num_queries}")
        with self._locked():
            data = self._resolve(self._read(), epsilon_budget, delta_budget)
            state = self._state(data)
            _require_affordable(state, num_queries, config, self.path)
            eps_cost = num_queries * _exact(config.epsilon)
            delta_cost = num_queries * _exact(config.delta)
            data = dict(data)
            data["epsilon_spent"] = str(state.epsilon_spent + eps_cost)
            data["delta_spent"] = str(state.delta_spent + delta_cost)
            data["queries_answered"] = state.queries_answered + num_queries
            data["epsilon_spent_float"] = float(state.epsilon_spent + eps_cost)
            data["entries"] = list(data.get("entries", [])) + [
                {
                    "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    "pid": os.getpid(),
                    "num_queries": num_queries,
                    "release": config.release,
                    "mechanism": config.mechanism,
                    "epsilon_per_query": str(_exact(config.epsilon)),
                    "delta_per_query": str(_exact(config.delta)),
                    "note": note,
                }
            ]
            _replace_file(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")
            return self._state(data)


def _require_affordable(state: LedgerState, num_queries: int, config: PredictionConfig, path: str) -> None:
    eps_after = state.epsilon_spent + num_queries * _exact(config.epsilon)
    delta_after = state.delta_spent + num_queries * _exact(config.delta)
    if eps_after <= state.epsilon_budget and delta_after <= state.delta_budget:
        return
    what = "epsilon" if eps_after > state.epsilon_budget else "delta"
    raise BudgetExceededError(
        f"prediction budget exceeded: {num_queries} queries at epsilon {config.epsilon:g}"
        + (f", delta {config.delta:g}" if config.uses_delta else "")
        + f" would raise {what} spent to "
        + (f"{float(eps_after):.6g}" if what == "epsilon" else f"{float(delta_after):.3g}")
        + f" (budget epsilon {float(state.epsilon_budget):.6g}, delta {float(state.delta_budget):.3g}; "
        f"spent so far {float(state.epsilon_spent):.6g}); at most {state.affordable_queries(config)} more "
        f"queries at this epsilon are affordable; no query of this batch was answered (ledger: {path})"
    )


def _replace_file(path: str, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it over `path` (atomic).

    The folder is synced after the rename so the new total survives a power loss too: the answers
    written after a spend must never outlive the record of it.
    """
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-ledger-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
