"""Canaries for the one-run audit: each inserted into training with probability 1/2, independently.

Two kinds, both counted as training examples (or users) by the accountant:

* example canaries (black box): out-of-distribution inputs (uniform noise) with a random label. The
  score of canary i is minus the final model's loss on its label: what anyone holding the model sees.
  Clipping alone hides them well (a black-box audit cannot catch a noise bug).
* gradient canaries (white box, "Dirac"): canary i contributes exactly C * e_{k_i} (one fixed
  parameter coordinate k_i, the clip norm C) to every step (round) in which it is sampled, and the
  score is the sum over steps of the observed noisy update at k_i: what an adversary who sees every
  step observes, and what DP-SGD's proof covers. This is the mode with power.

Which canaries are inserted is drawn from `seed`, which the audit records: the auditor must know it
(the guarantee does not rely on it being secret).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from privacy.auditing.lower_bounds import DEFAULT_SIGNIFICANCE, LowerBound, one_run_audit, one_run_ceiling
from privacy.auditing.membership import auc, cross_entropy


def inclusion(num_canaries: int, seed: int, salt: int) -> np.ndarray:
    """Bool mask: canary i inserted with probability 1/2, independently (from (seed, salt))."""
    return np.random.default_rng([seed, salt]).random(num_canaries) < 0.5


@dataclasses.dataclass(frozen=True)
class ExampleCanaries:
    """Out-of-distribution canary units; `inserted` says which join the training data.

    A unit is what the guarantee protects: one example centrally (`per_unit` 1), one client
    (`per_unit` examples sharing one random label) in federated learning.
    """

    x: np.ndarray  # [num * per_unit, ...]: unit i's rows are i * per_unit ... (i + 1) * per_unit - 1
    y: np.ndarray
    inserted: np.ndarray  # [num] bool
    seed: int
    per_unit: int = 1

    @classmethod
    def make(
        cls, num: int, input_shape: tuple[int, ...], num_classes: int, seed: int, per_unit: int = 1
    ) -> ExampleCanaries:
        rng = np.random.default_rng([seed, 0xE1])
        x = rng.random((num * per_unit, *input_shape), dtype=np.float32)  # uniform noise: far from real data
        y = np.repeat(rng.integers(0, num_classes, num).astype(np.int32), per_unit)
        return cls(x, y, inclusion(num, seed, 0xE2), seed, per_unit)

    @property
    def num(self) -> int:
        return len(self.inserted)

    @property
    def rows_inserted(self) -> np.ndarray:
        return np.repeat(self.inserted, self.per_unit)

    @property
    def x_inserted(self) -> np.ndarray:
        return self.x[self.rows_inserted]

    @property
    def y_inserted(self) -> np.ndarray:
        return self.y[self.rows_inserted]

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Minus each unit's mean loss on its canary label (higher: more likely inserted)."""
        return -cross_entropy(logits, self.y).reshape(self.num, self.per_unit).mean(axis=1)


@dataclasses.dataclass(frozen=True)
class GradientCanaries:
    """White-box Dirac canaries: canary i adds `norm` at flat parameter coordinate `coordinates[i]`."""

    coordinates: np.ndarray
    inserted: np.ndarray
    norm: float
    seed: int

    @classmethod
    def make(cls, num: int, num_parameters: int, norm: float, seed: int) -> GradientCanaries:
        if num > num_parameters:
            raise ValueError(
                f"{num} gradient canaries need as many distinct coordinates; the model has {num_parameters}"
            )
        coords = np.sort(np.random.default_rng([seed, 0xD1]).choice(num_parameters, num, replace=False))
        return cls(coords, inclusion(num, seed, 0xD2), float(norm), seed)

    @property
    def num_inserted(self) -> int:
        return int(self.inserted.sum())

    def sample(self, rate: float, rng: np.random.Generator) -> np.ndarray:
        """Float mask of the canaries in one step: each inserted one with probability `rate` (Poisson)."""
        return ((rng.random(len(self.inserted)) < rate) & self.inserted).astype(np.float32)


def audit_scores(
    scores: np.ndarray,
    inserted: np.ndarray,
    delta: float,
    claimed_epsilon: float | None,
    mode: str,
    seed: int,
    significance: float = DEFAULT_SIGNIFICANCE,
) -> dict:
    """The audit record of one kind of canary: the one-run lower bound, the AUC, and what they rest on."""
    scores = np.asarray(scores, dtype=np.float64)
    bound: LowerBound = one_run_audit(scores[inserted], scores[~inserted], delta, significance)
    refuted = claimed_epsilon is not None and bound.epsilon_lower_bound > claimed_epsilon
    return {
        "mode": mode,
        **dataclasses.asdict(bound),
        "claimed_epsilon": claimed_epsilon,
        "exceeds_claim": refuted,
        "epsilon_ceiling": one_run_ceiling(len(scores), int(inserted.sum()), delta, significance),
        "auc": auc(scores[inserted], scores[~inserted]),
        "inserted": int(inserted.sum()),
        "left_out": int((~inserted).sum()),
        "canary_seed": seed,
    }
