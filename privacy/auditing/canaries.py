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
        return poisson_sample(self.inserted, rate, rng)


def poisson_sample(inserted: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Float mask of the canaries in one step or round: each inserted one with probability `rate`."""
    return ((rng.random(len(inserted)) < rate) & inserted).astype(np.float32)


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


@dataclasses.dataclass(frozen=True)
class UpdateCanaries:
    """White-box canary users whose model update spans two tensors of the real update structure.

    Canary i's update is `norm` * (e_a - e_b) / sqrt(2), with a and b at the SAME flat offset in two
    different tensors (a kernel and a bias, two kernels, ...), cycling over the pairs of tensors; its
    score is the released aggregate projected on that direction. Under correct noise this has the
    power of a one-coordinate (Dirac) canary; it also sees what a Dirac canary cannot: noise that is
    shared between tensors (one random stream reused for every tensor gives equal noise at equal
    offsets, which cancels in the difference). Once no pair of tensors has a common free offset left
    (a model of one tensor, or small tensors such as a logistic model's bias), the remaining canaries
    are one-coordinate (Dirac) canaries on the free coordinates.
    """

    shapes: tuple[tuple[int, ...], ...]
    first: np.ndarray  # [m, 2]: (tensor, flat offset) of the +1/sqrt(2) coordinate
    second: np.ndarray  # [m, 2]: (tensor, flat offset) of the -1/sqrt(2) coordinate; -1s: a Dirac
    other: tuple[int, int]  # where every non-canary user's update of norm `norm` goes
    inserted: np.ndarray
    norm: float
    seed: int

    @classmethod
    def make(cls, num: int, shapes, norm: float, seed: int, inserted: np.ndarray) -> UpdateCanaries:
        shapes = tuple(tuple(int(d) for d in s) for s in shapes)
        sizes = [int(np.prod(s)) for s in shapes]
        rng = np.random.default_rng([seed, 0xD3])
        largest = int(np.argmax(sizes))
        other = (largest, sizes[largest] - 1)
        free = [set(range(n)) for n in sizes]
        free[largest].discard(other[1])
        pairs = [(a, b) for a in range(len(sizes)) for b in range(a + 1, len(sizes))]
        first, second = [], []
        live = list(pairs)  # pairs of tensors that still have a common free offset
        for i in range(num):
            placed = False
            while live and not placed:
                a, b = live[i % len(live)]
                k = _free_offset(free[a], free[b], min(sizes[a], sizes[b]), rng)
                if k is None:
                    live.remove((a, b))
                    continue
                free[a].discard(k)
                free[b].discard(k)
                first.append((a, k))
                second.append((b, k))
                placed = True
            if placed:
                continue
            # no pair left (a model of one tensor, or small tensors): a one-coordinate canary
            candidates = [t for t in range(len(sizes)) if free[t]]
            if not candidates:
                raise ValueError(
                    f"{num} canary users need {num} disjoint directions in the model's update "
                    f"({sum(sizes)} parameters in {len(sizes)} tensors); use fewer --audit_canaries"
                )
            t = candidates[i % len(candidates)]
            k = int(sorted(free[t])[rng.integers(len(free[t]))])
            free[t].discard(k)
            first.append((t, k))
            second.append((-1, -1))
        return cls(shapes, np.array(first).reshape(-1, 2), np.array(second).reshape(-1, 2), other,
                   np.asarray(inserted, bool), float(norm), seed)  # fmt: skip

    def zeros(self) -> list[np.ndarray]:
        return [np.zeros(s, np.float32) for s in self.shapes]

    def canary_update(self, i: int, scale: float = 1.0) -> list[np.ndarray]:
        """Canary i's model update: norm * scale along its direction."""
        update = self.zeros()
        (a, k), (b, j) = self.first[i], self.second[i]
        weight = self.norm * scale * (1.0 if b < 0 else 2**-0.5)
        update[a].reshape(-1)[k] = weight
        if b >= 0:
            update[b].reshape(-1)[j] = -weight
        return update

    def other_update(self) -> list[np.ndarray]:
        """Every other sampled user's update: norm `norm`, orthogonal to every canary."""
        update = self.zeros()
        update[self.other[0]].reshape(-1)[self.other[1]] = self.norm
        return update

    def observe(self, released) -> np.ndarray:
        """[m]: the released aggregate (one array per tensor) projected on each canary's direction."""
        flat = [np.asarray(t, np.float64).reshape(-1) for t in released]
        plus = np.array([flat[a][k] for a, k in self.first])
        minus = np.array([flat[b][j] if b >= 0 else 0.0 for b, j in self.second])
        dirac = self.second[:, 0] < 0
        return np.where(dirac, plus, (plus - minus) * 2**-0.5)


def _free_offset(free_a: set, free_b: set, size: int, rng: np.random.Generator) -> int | None:
    """A random offset free in both tensors (a few random tries, then an exhaustive look), or None."""
    for k in rng.integers(0, size, 16):
        if int(k) in free_a and int(k) in free_b:
            return int(k)
    common = sorted(free_a & free_b)
    return int(common[rng.integers(len(common))]) if common else None
