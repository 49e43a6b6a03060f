"""Preprocessing statistics of a table, estimated under DP (or declared, or plainly non-private).

Why here: scaling bounds, imputation values and category sets computed from the private rows are
releases about those rows (they ship inside the model); DP-SGD's epsilon does not cover them unless
they are DP mechanisms composed with it. This module makes them one Gaussian mechanism whose
DpEvent the run composes with its training event (`privacy.accounting`), plus a partition selection
whose out-of-support probability is added to delta.

The mechanism (mode "private"): every unit (a row, or a user in federated runs: its rows weighted
1/rows, so a user's total weight is 1) adds a one-hot vector to m histograms: for each numeric column
without declared bounds a histogram over a fixed, data-independent grid of signed half-decade bins
(plus a "missing" bin); for each categorical column without declared categories a histogram over its
values; for a classification label a histogram over its (public) classes. Each histogram is scaled by
1/sqrt(m), so one unit moves the whole vector by at most 1 in L2 (add/remove), and Gaussian noise of
stddev z is added: on raw counts that is stddev z*sqrt(m). From the noisy counts:

* numeric bounds: the contiguous run of bins around the fullest one whose noisy counts exceed
  2 stddevs, widened by one bin each side; values are clipped there and scaled by the run's centre and
  half-width (the centre also imputes missing values); a missing-value indicator column is added when
  the noisy "missing" count exceeds 2 stddevs;
* categories: Gaussian partition selection: a value is kept when its noisy count exceeds
  1 + z*sqrt(m)*Phi^-1(1 - delta_sel); a value held by one unit only (count <= 1) then appears with
  probability <= delta_sel per column, which the accountant adds to delta (union bound over columns);
  values outside the vocabulary map to one "other" bucket;
* the label's positive fraction (for the default metric).

Mode "schema" reads nothing from the rows: bounds and categories must be declared. Mode "non_private"
uses the plain statistics (mean, standard deviation, min/max, all values seen) and is reported as not
covered. Library choice: dp_accounting + numpy (the Gaussian histogram composes in the same RDP/PLD
accountant as DP-SGD, which diffprivlib's Laplace/Gaussian (epsilon, delta) mechanisms would not).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

MODES = ("private", "schema", "non_private")
THRESHOLD_STDDEVS = 4.0  # a bin is "occupied" when its noisy count exceeds this many noise stddevs
# fixed bin edges: 0, +-10^(k/2) for k = -8..20 (1e-4 .. 1e10): data-independent, scale-free
_POSITIVE_EDGES = 10.0 ** (np.arange(-8, 21) / 2.0)
EDGES = np.concatenate(
    [-_POSITIVE_EDGES[::-1], _POSITIVE_EDGES]
)  # bins: (-inf,e0), [e0,e1), ..., [e_last, inf)
NUM_BINS = len(EDGES) + 1  # plus the missing bin, last


class PreprocessingError(ValueError):
    """A preprocessing mode that cannot run on this schema (e.g. schema mode without bounds)."""


@dataclasses.dataclass(frozen=True)
class PreprocessingConfig:
    mode: str = "private"
    noise_multiplier: float = 0.0  # z of the one Gaussian release (relative to its L2 sensitivity 1)
    selection_delta: float = 0.0  # per categorical column whose categories are selected from the rows
    budget_share: float | None = None  # the share of the target epsilon z was chosen for (reported)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PreprocessingError(f"preprocessing must be one of {MODES}, got {self.mode!r}")
        if self.mode == "private" and not self.noise_multiplier > 0:
            raise PreprocessingError("private preprocessing needs a noise multiplier > 0")


@dataclasses.dataclass(frozen=True)
class NumericTransform:
    """x -> (clip(x if present else fill, lower, upper) - center) / scale, plus 1[missing] if `indicator`."""

    name: str
    lower: float
    upper: float
    center: float
    scale: float
    fill: float
    indicator: bool


@dataclasses.dataclass(frozen=True)
class CategoricalTransform:
    """value -> one-hot over ["other"] + `vocabulary` (the missing token "" included)."""

    name: str
    vocabulary: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Cost:
    """What the statistics cost: one Gaussian release (noise multiplier z) plus partition selection."""

    noise_multiplier: float  # 0: nothing was released from the rows (schema mode, or all declared)
    histograms: int  # m: the histograms released together
    selection_delta: float  # total over the selected categorical columns (added to the run's delta)
    parts: tuple[dict[str, Any], ...]  # per column: what was estimated, and how
    budget_share: float | None = None  # the share of the target epsilon z was chosen for

    @property
    def count_stddev(self) -> float:
        return self.noise_multiplier * math.sqrt(self.histograms)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A filled-in preprocessing: the transforms, what they cost, and the (DP) positive fraction."""

    mode: str
    numeric: tuple[NumericTransform, ...]
    categorical: tuple[CategoricalTransform, ...]
    cost: Cost
    positive_fraction: float | None  # binary labels: share of the last class (noisy in private mode)
    schema: Any = None  # the data.schema.TableSchema it was fitted under (public structure)

    @property
    def width(self) -> int:
        """Number of encoded features."""
        return sum(1 + t.indicator for t in self.numeric) + sum(
            len(t.vocabulary) + 1 for t in self.categorical
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "numeric": [dataclasses.asdict(t) for t in self.numeric],
            "categorical": [{"name": t.name, "vocabulary": list(t.vocabulary)} for t in self.categorical],
            "positive_fraction": self.positive_fraction,
        }


def bin_index(values: np.ndarray) -> np.ndarray:
    """Each value's bin on the fixed grid (NaN: the missing bin, NUM_BINS - 1)."""
    idx = np.searchsorted(EDGES, np.nan_to_num(values, nan=0.0), side="right")
    return np.where(np.isnan(values), NUM_BINS - 1, idx)


def bin_bounds(b: int) -> tuple[float, float]:
    """The [low, high) edges of grid bin `b` (the open-ended ones capped at the grid's ends)."""
    lo = EDGES[b - 1] if b >= 1 else -_POSITIVE_EDGES[-1] * math.sqrt(10)
    hi = EDGES[b] if b < len(EDGES) else _POSITIVE_EDGES[-1] * math.sqrt(10)
    return float(lo), float(hi)


def _window(c: np.ndarray, threshold: float) -> tuple[int, int]:
    """The bins [lo, hi]: the three adjacent bins (1.5 decades) with the largest noisy mass, widened
    over neighbouring bins whose noisy counts exceed `threshold` (many rows there)."""
    window = np.convolve(c, np.ones(3), mode="valid")  # window i covers bins i, i+1, i+2
    lo = int(np.argmax(window))
    hi = lo + 2
    while lo > 0 and c[lo - 1] > threshold:
        lo -= 1
    while hi < len(c) - 1 and c[hi + 1] > threshold:
        hi += 1
    return lo, hi


def bounds_from_counts(counts: np.ndarray, threshold: float) -> tuple[float, float]:
    """(lower, upper) from a column's noisy grid counts (missing bin excluded): the edges of
    `_window`. Pure post-processing of the noisy counts."""
    lo, hi = _window(counts[: NUM_BINS - 1], threshold)
    return bin_bounds(lo)[0], bin_bounds(hi)[1]


def moments_from_counts(counts: np.ndarray, threshold: float) -> tuple[float, float]:
    """(centre, scale) from the same noisy counts: the mean and standard deviation of the window's bin
    midpoints weighted by their (non-negative) noisy counts, plus each bin's own spread (width^2/12);
    the scale is at least a tenth of the window's half-width. Post-processing: no extra cost."""
    c = counts[: NUM_BINS - 1]
    lo, hi = _window(c, threshold)
    edges = np.array([bin_bounds(b) for b in range(lo, hi + 1)])
    mids, widths = edges.mean(axis=1), edges[:, 1] - edges[:, 0]
    w = np.maximum(c[lo : hi + 1], 0.0)
    half = (edges[-1, 1] - edges[0, 0]) / 2
    if w.sum() <= 0:
        return float((edges[0, 0] + edges[-1, 1]) / 2), float(half)
    mean = float(np.sum(w * mids) / w.sum())
    var = float(np.sum(w * ((mids - mean) ** 2 + widths**2 / 12)) / w.sum())
    return mean, max(math.sqrt(var), half / 10)


def selection_threshold(count_stddev: float, delta: float) -> float:
    """Gaussian partition selection's threshold: a count-1 value passes with probability <= delta."""
    from scipy.stats import norm

    return 1.0 + count_stddev * float(norm.isf(delta))


def _weighted_counts(codes: np.ndarray, size: int, weights: np.ndarray) -> np.ndarray:
    return np.bincount(codes, weights=weights, minlength=size).astype(np.float64)


def fit(
    schema,
    train: dict[str, np.ndarray],
    y: np.ndarray,
    config: PreprocessingConfig,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
) -> Fitted:
    """The transforms of `schema`'s columns from the training rows `train` (data.table_files.RawTable's
    format) under `config`. `weights`: each row's weight, a unit's weights summing to <= 1 (None: 1
    per row: example-level); `rng` draws the noise (seeded, or from OS entropy)."""
    n = len(y)
    weights = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if config.mode == "non_private":
        fitted = _fit_plain(schema, train, y)
    elif config.mode == "schema":
        fitted = _fit_declared(schema)
    else:
        fitted = _fit_private(schema, train, y, config, rng, weights)
    return dataclasses.replace(fitted, schema=schema)


def _declared_numeric(col) -> NumericTransform:
    mid, half = (col.lower + col.upper) / 2, (col.upper - col.lower) / 2
    return NumericTransform(col.name, col.lower, col.upper, mid, half or 1.0, mid, True)


def _fit_declared(schema) -> Fitted:
    missing = [c.name for c in schema.numeric() if c.lower is None or c.upper is None]
    missing += [c.name for c in schema.categorical() if c.categories is None]
    if missing:
        raise PreprocessingError(
            f"--preprocessing=schema reads nothing from the rows, so --schema must declare bounds (numeric) "
            f"and categories (categorical) for every column; missing for {missing}"
        )
    numeric = tuple(_declared_numeric(c) for c in schema.numeric())
    categorical = tuple(CategoricalTransform(c.name, _vocabulary(c.categories)) for c in schema.categorical())
    parts = ({"columns": "all", "source": "declared in the schema (public knowledge, no privacy cost)"},)
    return Fitted("schema", numeric, categorical, Cost(0.0, 0, 0.0, parts), None)


MISSING = ""  # the missing token of a categorical column (data.table_files.MISSING, tested equal)


def _vocabulary(values) -> tuple[str, ...]:
    """Sorted values with the missing token (public: every column may have missing values) first."""
    return (MISSING, *sorted(str(v) for v in set(values) if v != MISSING))


def _fit_plain(schema, train: dict[str, np.ndarray], y: np.ndarray) -> Fitted:
    numeric = []
    for col in schema.numeric():
        x = train[col.name]
        present = x[~np.isnan(x)]
        lo, hi = float(present.min()), float(present.max())
        mean, std = float(present.mean()), float(present.std())
        numeric.append(NumericTransform(col.name, lo, hi, mean, std or 1.0, mean, bool(np.isnan(x).any())))
    categorical = tuple(
        CategoricalTransform(c.name, _vocabulary(c.categories or train[c.name])) for c in schema.categorical()
    )
    positive = (
        float(np.mean(y == 1)) if schema.task == "classification" and len(schema.classes) == 2 else None
    )
    parts = (
        {
            "columns": "all",
            "source": "plain statistics of the training rows: NOT covered by any DP guarantee",
        },
    )
    return Fitted("non_private", tuple(numeric), categorical, Cost(0.0, 0, 0.0, parts), positive)


def _fit_private(schema, train, y, config: PreprocessingConfig, rng, weights) -> Fitted:
    estimated_num = [c for c in schema.numeric() if c.lower is None or c.upper is None]
    estimated_cat = [c for c in schema.categorical() if c.categories is None]
    if estimated_cat and not np.all(weights == 1.0):
        # user-level: a user may hold several values no one else has, each below the threshold's count 1,
        # so the per-column delta of the selection would not bound them; declare the categories instead
        raise PreprocessingError(
            "user-level (federated) private preprocessing needs categorical columns' categories declared "
            f"in --schema; missing for {[c.name for c in estimated_cat]}"
        )
    binary = schema.task == "classification" and len(schema.classes) == 2
    m = len(estimated_num) + len(estimated_cat) + int(schema.task == "classification")
    if m == 0:
        return dataclasses.replace(_fit_declared(schema), mode="private")
    sd = config.noise_multiplier * math.sqrt(m)  # on raw (unscaled) counts
    threshold = THRESHOLD_STDDEVS * sd
    noisy = lambda counts: counts + rng.normal(0.0, sd, size=counts.shape)  # noqa: E731
    numeric, categorical, parts = [], [], []
    for col in schema.numeric():
        if col not in estimated_num:
            numeric.append(_declared_numeric(col))
            parts.append({"column": col.name, "source": "declared bounds"})
            continue
        counts = noisy(_weighted_counts(bin_index(train[col.name]), NUM_BINS, weights))
        lo, hi = bounds_from_counts(counts, threshold)
        centre, scale = moments_from_counts(counts, threshold)
        numeric.append(
            NumericTransform(col.name, lo, hi, centre, scale, centre, bool(counts[-1] > threshold))
        )
        parts.append(
            {
                "column": col.name,
                "source": "Gaussian histogram on the fixed half-decade grid",
                "bins": NUM_BINS,
            }
        )
    cut = selection_threshold(sd, config.selection_delta) if estimated_cat else None
    for col in schema.categorical():
        if col not in estimated_cat:
            categorical.append(CategoricalTransform(col.name, _vocabulary(col.categories)))
            parts.append({"column": col.name, "source": "declared categories"})
            continue
        values, codes = np.unique(train[col.name].astype(str), return_inverse=True)
        counts = noisy(_weighted_counts(codes.ravel(), len(values), weights))
        kept = [str(v) for v, c in zip(values, counts, strict=True) if c > cut]
        categorical.append(CategoricalTransform(col.name, _vocabulary(kept)))
        parts.append(
            {
                "column": col.name,
                "source": "Gaussian partition selection",
                "threshold": cut,
                "delta": config.selection_delta,
            }
        )
    positive = None
    if schema.task == "classification":
        counts = noisy(_weighted_counts(y.astype(np.int64), len(schema.classes), weights))
        parts.append({"column": schema.label, "source": "Gaussian histogram of the label's classes"})
        if binary:
            clipped = np.maximum(counts, 0.0)
            positive = float(clipped[1] / clipped.sum()) if clipped.sum() > 0 else None
    selection_delta = config.selection_delta * len(estimated_cat)
    cost = Cost(config.noise_multiplier, m, selection_delta, tuple(parts), config.budget_share)
    return Fitted("private", tuple(numeric), tuple(categorical), cost, positive)


def released_histograms(schema) -> int:
    """m: how many histograms private mode releases for `schema` (0: everything is declared)."""
    m = sum(c.lower is None or c.upper is None for c in schema.numeric())
    m += sum(c.categories is None for c in schema.categorical())
    return m + int(schema.task == "classification")


def selected_columns(schema) -> int:
    """How many categorical columns private mode selects categories for (each adds delta_sel)."""
    return sum(c.categories is None for c in schema.categorical())


def _category_codes(values: np.ndarray, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Each value's index in the (sorted, unique) `vocabulary`, -1 where it is not in it. pandas hashes
    the python strings directly (an `astype(str)` copy of 100,000 rows took most of `encode`)."""
    import pandas as pd

    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=False) != "string":
        values = values.astype(str).astype(object)  # as the fit reads them: None -> "None", 3 -> "3"
    codes = pd.Categorical(values, categories=list(vocabulary)).codes
    return np.asarray(codes, dtype=np.int64)


def encode(fitted: Fitted, columns: dict[str, np.ndarray]) -> np.ndarray:
    """The numeric features of raw `columns` under `fitted`, in numpy (the reference the Keras layers
    of `models.table_encoding` are tested against). Written into one float32 array, column by column."""
    n = len(next(iter(columns.values()))) if columns else 0
    width = sum(1 + t.indicator for t in fitted.numeric)
    width += sum(len(t.vocabulary) + 1 for t in fitted.categorical)
    out = np.zeros((n, width), np.float32)
    j = 0
    for t in fitted.numeric:
        x = columns[t.name].astype(np.float64)
        missing = np.isnan(x)
        out[:, j] = (np.clip(np.where(missing, t.fill, x), t.lower, t.upper) - t.center) / t.scale
        j += 1
        if t.indicator:
            out[:, j] = missing
            j += 1
    for t in fitted.categorical:
        codes = _category_codes(columns[t.name], t.vocabulary)  # the missing token "" is in the vocabulary
        out[np.arange(n), j + codes + 1] = 1.0  # position 0: "other" (Keras StringLookup's order)
        j += len(t.vocabulary) + 1
    return out
