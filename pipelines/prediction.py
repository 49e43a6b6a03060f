"""Prediction-level DP: release a trained model's answers with noise, under a total budget.

This is the third of the seed's places for noise. A query is one input x; the model's
class probabilities p(x) are never released, only a noisy function of them:

* release='label': one label per query.
  - 'exponential' (default): report-noisy-max with Gumbel noise = the exponential mechanism,
    P(label r) proportional to exp(eps * p_r / 2);
  - 'noisy_max_laplace': report-noisy-max with Laplace(2/eps) on each p_r;
  - 'randomized_response': the model's top label, then k-ary randomized response.
* release='scores': the whole probability vector plus noise:
  - 'laplace': Laplace(2/eps) per class (L1 sensitivity 2);
  - 'gaussian': analytic-Gaussian sigma for (eps, delta) at L2 sensitivity sqrt(2).

What the per-query epsilon protects (the neighbouring relation). We make no assumption
about how much one training record can move the model: two score vectors are neighbours
whenever both are probability vectors, i.e. ANY two models. Each p_r is in [0, 1]
(sensitivity 1 per score, L-infinity), two points of the simplex are at most 2 apart in
L1 and sqrt(2) in L2. A released answer is therefore eps-indistinguishable between any two
training sets (a fortiori between two that differ in one record). The query input x itself
is not protected: the querier chose it. Under this worst-case relation randomized response
on the top label is the most accurate of the three label mechanisms; the exponential
mechanism only beats it when scores have small sensitivity (e.g. PATE vote counts).

Queries compose by basic composition: answering n queries at eps costs n * eps (and n * delta).
A ledger next to the model (`<model_dir>/../prediction_ledger.json`) holds what has been
spent, in exact rational arithmetic, and refuses any batch that would push the total past
the budget: all-or-nothing, no query of a refused batch is answered. A file lock (fcntl)
serializes concurrent processes, and the ledger is written atomically before any answer
is released, so a crash can waste budget but never overspend it.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction

import numpy as np

from pipelines.outputs import atomic_write_json
from privacy import mechanisms

RELEASES = ("label", "scores")
LABEL_MECHANISMS = ("exponential", "noisy_max_laplace", "randomized_response")
SCORE_MECHANISMS = ("laplace", "gaussian")
LEDGER_NAME = "prediction_ledger.json"
SCORE_SENSITIVITY_LINF = 1.0  # each probability is in [0, 1]
SCORE_SENSITIVITY_L1 = 2.0  # two points of the probability simplex
SCORE_SENSITIVITY_L2 = math.sqrt(2.0)


class BudgetExceededError(Exception):
    """A batch of queries would take total spent epsilon (or delta) past the budget."""


def _exact(value: float | str) -> Fraction:
    """The decimal the user wrote, as an exact rational (0.1 -> 1/10), so sums never drift."""
    return Fraction(str(value))


@dataclasses.dataclass(frozen=True)
class PredictionConfig:
    """How each query is answered and what it costs."""

    release: str = "label"
    mechanism: str = "exponential"
    epsilon: float = 1.0  # per query
    delta: float = 0.0  # per query; only the Gaussian score release uses it

    def __post_init__(self) -> None:
        if self.release not in RELEASES:
            raise ValueError(f"release must be one of {RELEASES}, got {self.release!r}")
        allowed = LABEL_MECHANISMS if self.release == "label" else SCORE_MECHANISMS
        if self.mechanism not in allowed:
            raise ValueError(f"release={self.release!r} takes mechanism in {allowed}, got {self.mechanism!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"prediction epsilon must be a finite number > 0, got {self.epsilon}")
        if self.uses_delta and not (0 < self.delta < 1):
            raise ValueError(
                f"the Gaussian score release needs a per-query delta in (0, 1), got {self.delta}"
            )
        if not self.uses_delta and self.delta != 0:
            raise ValueError(f"mechanism {self.mechanism!r} is pure epsilon-DP; leave delta at 0")

    @property
    def uses_delta(self) -> bool:
        return self.release == "scores" and self.mechanism == "gaussian"

    def describe(self) -> str:
        texts = {
            "exponential": "exponential mechanism (report-noisy-max, Gumbel noise of scale 2/eps)",
            "noisy_max_laplace": "report-noisy-max with Laplace(2/eps) per class score",
            "randomized_response": "k-ary randomized response on the model's top label",
            "laplace": f"Laplace(2/eps) per class probability (L1 sensitivity {SCORE_SENSITIVITY_L1:g})",
            "gaussian": "analytic Gaussian per class probability (L2 sensitivity sqrt(2))",
        }
        cost = f"eps={self.epsilon:g}" + (f", delta={self.delta:g}" if self.uses_delta else "")
        return f"{texts[self.mechanism]}; {cost} per query; neighbours: any two probability vectors"


def release(probs: np.ndarray, config: PredictionConfig, rng: np.random.Generator) -> np.ndarray:
    """The noisy answers to a batch of queries: labels (n,) or scores (n, k). No budget check."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"class probabilities must be (num_queries, num_classes>=2), got {probs.shape}")
    eps, k = config.epsilon, probs.shape[1]
    if config.mechanism == "exponential":
        return mechanisms.report_noisy_max(probs, eps, rng, SCORE_SENSITIVITY_LINF, noise="gumbel")
    if config.mechanism == "noisy_max_laplace":
        return mechanisms.report_noisy_max(probs, eps, rng, SCORE_SENSITIVITY_LINF, noise="laplace")
    if config.mechanism == "randomized_response":
        return mechanisms.randomized_response(np.argmax(probs, axis=1), k, eps, rng)
    if config.mechanism == "laplace":
        return mechanisms.laplace_mechanism(probs, SCORE_SENSITIVITY_L1, eps, rng)
    return mechanisms.gaussian_mechanism(probs, SCORE_SENSITIVITY_L2, eps, config.delta, rng, "analytic")


def released_labels(released: np.ndarray) -> np.ndarray:
    """Labels from a release: themselves, or the argmax of noisy scores (post-processing)."""
    return released if released.ndim == 1 else np.argmax(released, axis=1)


# ---------------------------------------------------------------- the budget ledger


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
        """Atomically records the cost of `num_queries` answers, or raises BudgetExceededError.

        Called BEFORE the answers are computed and released: under the lock we read, check
        and write the new total, so two processes can never both spend the last of it.
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
            atomic_write_json(self.path, data)
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


# ---------------------------------------------------------------- queries and the model


def load_queries(
    num_queries: int,
    dataset: str | None = None,
    data_dir: str | None = None,
    input_file: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The first `num_queries` inputs of a dataset's test split or of a .npy/.csv file.

    A CSV may carry a `label` column; its values are then the true labels (used only to
    print accuracy, never released).
    """
    if (dataset is None) == (input_file is None):
        raise ValueError("give exactly one of --dataset or --input_file")
    if num_queries <= 0:
        raise ValueError(f"num_queries must be > 0, got {num_queries}")
    labels = None
    if dataset is not None:
        from data.datasets import load_dataset

        data = load_dataset(dataset, data_dir, seed=seed)
        if data.task != "classification":
            raise ValueError(
                f"dataset {dataset!r} is a regression task; prediction release needs a classifier"
            )
        x, labels = data.x_test, data.y_test
    elif not os.path.isfile(input_file):
        raise ValueError(f"input file not found: {input_file}")
    elif input_file.endswith(".npy"):
        try:
            x = np.load(input_file, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"cannot read {input_file} as a numpy array: {e}") from e
    elif input_file.endswith(".csv"):
        import pandas as pd

        try:
            df = pd.read_csv(input_file)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot parse {input_file}: {e}") from e
        if "label" in df.columns:
            labels = df.pop("label").to_numpy().astype(np.int64)
        bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        if bad or df.isna().any().any():
            raise ValueError(f"{input_file}: features must be numeric with no missing values (bad: {bad})")
        x = df.to_numpy(np.float32)
    else:
        raise ValueError(f"--input_file must end in .npy or .csv, got {input_file}")
    if len(x) < num_queries:
        raise ValueError(f"asked for {num_queries} queries but only {len(x)} inputs are available")
    x = np.asarray(x[:num_queries], dtype=np.float32)
    return x, (None if labels is None else np.asarray(labels[:num_queries]))


def check_model_dir(model_dir: str) -> None:
    """A clear error for a missing or non-SavedModel folder, before any budget is looked at."""
    if not os.path.isdir(model_dir):
        raise ValueError(f"model folder not found: {model_dir}")
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        raise ValueError(f"{model_dir} is not a Keras SavedModel folder (no saved_model.pb)")


def model_probabilities(model_dir: str, x: np.ndarray) -> np.ndarray:
    """Class probabilities of a saved classifier: softmax of its outputs, unless they already are.

    We call the SavedModel's `serving_default` signature rather than reviving Keras layers
    with `tf.keras.models.load_model`: it needs no custom objects (e.g. TF-Privacy's
    DPSequential), and Keras 2.14's revival of a Flatten layer fails when TensorFlow is
    first imported inside `absl.app.run` ("Attempt to convert a value (None)").
    Outputs that are already probability vectors (non-negative, rows summing to 1) are kept;
    anything else is treated as logits.
    """
    check_model_dir(model_dir)
    import tensorflow as tf

    try:
        serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    except Exception as e:  # noqa: BLE001 - TF raises many types; the user needs one clear line
        raise ValueError(f"cannot load a SavedModel from {model_dir}: {type(e).__name__}: {e}") from e
    (spec,) = serve.structured_input_signature[1].values()
    expected = tuple(spec.shape[1:])
    if x.shape[1:] != expected:
        if None in expected or int(np.prod(x.shape[1:])) != int(np.prod(expected)):
            raise ValueError(f"inputs have shape {x.shape[1:]} but the model expects {expected}")
        x = x.reshape((len(x), *expected))
    (name,) = serve.structured_outputs
    out = np.concatenate(
        [serve(tf.constant(x[i : i + 1024], dtype=spec.dtype))[name].numpy() for i in range(0, len(x), 1024)]
    ).astype(np.float64)
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(f"the model outputs shape {out.shape[1:]}; prediction release needs a classifier")
    if np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
        return out / out.sum(axis=1, keepdims=True)
    out = out - out.max(axis=1, keepdims=True)
    e = np.exp(out)
    return e / e.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class PredictResult:
    released: np.ndarray
    labels: np.ndarray | None
    ledger: LedgerState
    config: PredictionConfig

    @property
    def accuracy(self) -> float | None:
        if self.labels is None:
            return None
        return float(np.mean(released_labels(self.released) == self.labels))

    def rows(self) -> list[dict]:
        """What is released, one row per query (true labels are NOT in it)."""
        if self.released.ndim == 1:
            return [{"query": i, "label": int(v)} for i, v in enumerate(self.released)]
        return [
            {"query": i, **{f"score_{c}": float(v) for c, v in enumerate(row)}}
            for i, row in enumerate(self.released)
        ]


def answer_queries(
    model_dir: str,
    x: np.ndarray,
    labels: np.ndarray | None,
    config: PredictionConfig,
    epsilon_budget: float | None,
    delta_budget: float | None = None,
    rng: np.random.Generator | None = None,
) -> PredictResult:
    """Checks the budget, computes the model's scores, spends, then releases the noisy answers.

    `rng=None` draws the noise from OS entropy: DP noise must be unpredictable, a known seed
    would let anyone subtract it. Pass a seeded generator in tests only.
    """
    check_model_dir(model_dir)
    ledger = PredictionLedger(ledger_path(model_dir))
    ledger.check(len(x), config, epsilon_budget, delta_budget)  # fail fast, before loading TF
    probs = model_probabilities(model_dir, x)  # not released
    state = ledger.spend(
        len(x), config, epsilon_budget, delta_budget, note=f"model {os.path.abspath(model_dir)}"
    )
    rng = np.random.default_rng() if rng is None else rng
    return PredictResult(release(probs, config, rng), labels, state, config)


# ---------------------------------------------------------------- accuracy against epsilon


def accuracy_vs_epsilon(
    probs: np.ndarray,
    labels: np.ndarray,
    epsilons: Sequence[float],
    mechanisms_to_compare: Sequence[tuple[str, str]] = (
        ("label", "exponential"),
        ("label", "noisy_max_laplace"),
        ("label", "randomized_response"),
        ("scores", "laplace"),
    ),
    repeats: int = 5,
    seed: int = 0,
) -> list[dict]:
    """Accuracy of released labels vs true labels, per mechanism and per-query epsilon.

    A simulation for choosing epsilon, run on held-out data by the model owner: its noisy
    outputs are never released, so it spends no budget. The non-private accuracy (argmax of
    the model's probabilities) is the ceiling every row approaches as epsilon grows.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    rows = [
        {
            "release": "none",
            "mechanism": "argmax (non-private)",
            "epsilon": math.inf,
            "accuracy": float(np.mean(np.argmax(probs, 1) == labels)),
            "accuracy_std": 0.0,
        }
    ]
    for release_kind, mechanism in mechanisms_to_compare:
        for eps in epsilons:
            config = PredictionConfig(release_kind, mechanism, eps)
            accs = [np.mean(released_labels(release(probs, config, rng)) == labels) for _ in range(repeats)]
            row = {
                "release": release_kind,
                "mechanism": mechanism,
                "epsilon": float(eps),
                "accuracy": float(np.mean(accs)),
                "accuracy_std": float(np.std(accs)),
            }
            if mechanism == "exponential":
                p = mechanisms.exponential_mechanism_probabilities(probs, eps, SCORE_SENSITIVITY_LINF)
                row["expected_accuracy_exact"] = float(np.mean(p[np.arange(len(labels)), labels]))
            rows.append(row)
    return rows


def format_accuracy_table(rows: list[dict]) -> str:
    lines = [f"{'release':<8} {'mechanism':<22} {'eps/query':>9} {'accuracy':>9} {'+-':>6} {'exact':>7}"]
    for r in rows:
        exact = r.get("expected_accuracy_exact")
        lines.append(
            f"{r['release']:<8} {r['mechanism']:<22} {r['epsilon']:>9g} {r['accuracy']:>9.4f} "
            f"{r['accuracy_std']:>6.4f} {'' if exact is None else f'{exact:.4f}':>7}"
        )
    return "\n".join(lines)
