"""A table's preprocessing inside a run: the noise its statistics get, the fit, the encoded dataset.

One home for what the centralized, federated and search runs do with a `Dataset` that holds a raw
table (`data.table_files.RawTable`): choose the preprocessing noise from the run's budget, fit the
transforms (`privacy.preprocessing`), and give back the dataset with numeric features. The run then
composes `Fitted.cost` with its training event (DpSgdConfig / DpFedAvgConfig preprocessing fields).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from data.datasets import Dataset
from privacy import accounting, preprocessing
from privacy.preprocessing import Fitted, PreprocessingConfig
from privacy.randomness import derive_seed

SCHEMA_FILE, FITTED_FILE = "schema.json", "preprocessing.json"
# The default share ("auto"): the noise that puts each count's stddev at a tenth of the units (rows,
# or users), so that a column's fullest bins stand out of the noise, within 5% to 50% of the target.
AUTO_COUNT_STDDEV = 0.1  # of the number of units
AUTO_SHARE_RANGE = (0.05, 0.5)
SELECTION_DELTA_SHARE = 0.1  # of delta, for the partition selection of all selected columns together
PREPROCESSING_MODES = preprocessing.MODES


class TablePreprocessingError(ValueError):
    """The preprocessing settings cannot run on this table (the message says what to change)."""


def is_table(dataset: Dataset) -> bool:
    return getattr(dataset, "table", None) is not None


def noise_for(share: float, epsilon: float, delta: float, adjacency: str = "add_or_remove_one") -> float:
    """z of the statistics' Gaussian release: alone it would cost `share` x `epsilon` (RDP, at `delta`,
    under the run's `adjacency`: replace-one moves the release twice as far, so z doubles).

    The training noise is then calibrated so that the composition meets the target: composition in
    RDP is sub-additive, so training gets more than (1 - share) of it."""
    if not 0 < share < 1:
        raise TablePreprocessingError(f"preprocessing_share must be in (0, 1), got {share}")

    def alone(z: float) -> float:
        return accounting.epsilon_of(accounting.preprocessing_event(z, adjacency), "rdp", adjacency, delta)

    return accounting.calibrate_noise(alone, share * epsilon)


def auto_share(units: int, histograms: int, epsilon: float, delta: float, adjacency: str) -> float:
    """The default share of `epsilon`: what a count stddev of AUTO_COUNT_STDDEV x `units` costs alone
    (z = that / sqrt(histograms)), kept in AUTO_SHARE_RANGE. Small tables need a large share for
    usable statistics and large ones a small share; the number of units is treated as public."""
    z = AUTO_COUNT_STDDEV * max(1, units) / math.sqrt(max(1, histograms))
    alone = accounting.epsilon_of(accounting.preprocessing_event(z, adjacency), "rdp", adjacency, delta)
    low, high = AUTO_SHARE_RANGE
    return float(min(high, max(low, alone / epsilon)))


def plan_preprocessing(
    dataset: Dataset,
    mode: str,
    dp: bool,
    share: float,
    epsilon: float | None,
    delta: float,
    adjacency: str = "add_or_remove_one",
) -> PreprocessingConfig:  # `share`: already resolved (fit_for_run turns None into auto_share)
    """The preprocessing config of a run on a table. A non-private run uses the plain statistics
    (it has no guarantee to keep) unless the schema mode was asked for; a private run with
    `mode="private"` needs the epsilon the statistics' share is taken of."""
    if mode not in PREPROCESSING_MODES:
        raise TablePreprocessingError(f"preprocessing must be one of {PREPROCESSING_MODES}, got {mode!r}")
    schema = dataset.table.schema
    if not dp or mode == "non_private":
        return PreprocessingConfig("schema" if mode == "schema" else "non_private")
    if mode == "schema" or preprocessing.released_histograms(schema) == 0:
        return PreprocessingConfig("schema")  # everything declared: nothing to estimate
    if epsilon is None or epsilon == float("inf"):
        raise TablePreprocessingError("private preprocessing needs a finite epsilon to take its share of")
    selected = preprocessing.selected_columns(schema)
    per_column = SELECTION_DELTA_SHARE * delta / selected if selected else 0.0
    return PreprocessingConfig("private", noise_for(share, epsilon, delta, adjacency), per_column, share)


def fit_table(
    dataset: Dataset, config: PreprocessingConfig, seed: int | None, weights: np.ndarray | None = None
) -> tuple[Dataset, Fitted]:
    """The dataset with numeric features (training and test rows encoded alike), and the fit.

    `seed`: the run's noise seed (None: OS entropy); the statistics' noise is its own stream of it.
    `weights`: each training row's weight, one user's summing to at most 1 (user-level statistics;
    None: 1 per row)."""
    table = dataset.table
    rng = np.random.default_rng(None if seed is None else derive_seed(seed, "table_preprocessing"))
    try:
        fitted = preprocessing.fit(table.schema, table.train, table.y_train, config, rng, weights)
    except preprocessing.PreprocessingError as e:
        raise TablePreprocessingError(str(e)) from None
    x_train = preprocessing.encode(fitted, table.train)
    x_test = preprocessing.encode(fitted, table.test)
    return dataclasses.replace(dataset, x_train=x_train, x_test=x_test), fitted


def fit_for_run(
    dataset: Dataset,
    mode: str,
    dp: bool,
    share: float | None,
    target_epsilon: float | None,
    delta: float,
    training_epsilon: Callable[[], float] | None,
    seed: int | None,
    users: list[np.ndarray] | None = None,
    adjacency: str = "add_or_remove_one",
) -> tuple[Dataset, Fitted]:
    """A run's table fit: the statistics take `share` of the target epsilon (None: `auto_share`); a
    run given a noise multiplier instead (`training_epsilon()`: its training's epsilon alone) gives
    them as much, relative to that (auto: as if the target were twice the training's). `users`: each
    user's training rows (federated): a user's rows weigh 1/rows, so the statistics are user-level;
    rows of no user weigh 0. `adjacency`: the run's (the statistics' share is measured under it)."""
    epsilon = target_epsilon
    if dp and mode == "private":
        if epsilon is None:
            epsilon = training_epsilon() / (1 - (AUTO_SHARE_RANGE[1] if share is None else share))
        if share is None:
            units = dataset.num_train if users is None else len(users)  # clients: public, as in accounting
            histograms = preprocessing.released_histograms(dataset.table.schema)
            share = auto_share(units, histograms, epsilon, delta, adjacency)
    share = AUTO_SHARE_RANGE[1] if share is None else share  # unused unless private
    planned = plan_preprocessing(dataset, mode, dp, share, epsilon, delta, adjacency)
    if target_epsilon is None and planned.mode == "private":  # no target to be a share of: privacy.json
        planned = dataclasses.replace(planned, budget_share=None)  # gives epsilon_alone and the total
    weights = None
    if users is not None:
        weights = np.zeros(dataset.num_train)
        for rows in users:
            weights[rows] = 1.0 / max(1, len(rows))
    return fit_table(dataset, planned, seed, weights)


def dp_fields(fitted: Fitted) -> dict[str, float]:
    """The DpSgdConfig / DpFedAvgConfig fields that make the accountant compose the statistics."""
    return {
        "preprocessing_noise_multiplier": fitted.cost.noise_multiplier,
        "preprocessing_delta": fitted.cost.selection_delta,
    }


def privacy_details(fitted: Fitted, adjacency: str, delta: float) -> dict:
    """privacy.json's `preprocessing`: the mode, the mechanism, its epsilon alone and each part."""
    cost = fitted.cost
    out = {"mode": fitted.mode, "covered": fitted.mode != "non_private", "parts": list(cost.parts)}
    if cost.noise_multiplier > 0:
        event = accounting.preprocessing_event(cost.noise_multiplier, adjacency)
        out.update(
            mechanism="Gaussian release of m histograms, each scaled by 1/sqrt(m) (L2 sensitivity 1)",
            budget_share=cost.budget_share,
            noise_multiplier=cost.noise_multiplier,
            histograms=cost.histograms,
            count_stddev=cost.count_stddev,
            selection_delta=cost.selection_delta,
            epsilon_alone=accounting.epsilon_of(event, "rdp", adjacency, delta),
        )
    if fitted.mode == "non_private":
        out["note"] = (
            "The preprocessing statistics (bounds, means, standard deviations, categories) are "
            "plain statistics of the training rows and are NOT covered by the epsilon."
        )
    return out


def statement_note(fitted: Fitted) -> str:
    """The privacy statement's sentence about a table's preprocessing and schema."""
    schema = (
        "The table's schema (column names and kinds, the label's classes) and its number of rows or "
        "clients (which size the defaults and the statistics' share) are treated as public."
    )
    if fitted.mode == "non_private":
        return (
            "The preprocessing statistics are plain statistics of the training rows and are NOT "
            "covered by this guarantee (--preprocessing=non_private). " + schema
        )
    if fitted.mode == "schema":
        return "The preprocessing uses only the declared schema (no statistics of the rows). " + schema
    return "The preprocessing statistics are DP releases included in this epsilon. " + schema


def compiled(model, task: str):
    """`model` compiled as the trained models are, so that Keras reloads it whole."""
    import tensorflow as tf

    if task == "classification":
        model.compile(
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
        )
    else:
        model.compile(loss=tf.keras.losses.MeanSquaredError())
    return model


def report(fitted: Fitted, guarantee, adjacency: str | None):
    """(the guarantee with the statement's table sentence, privacy.json's `preprocessing`); adjacency
    None: a non-private run (no guarantee to annotate)."""
    details = privacy_details(fitted, adjacency or "add_or_remove_one", guarantee.delta or 1e-5)
    if adjacency is not None:
        guarantee = guarantee.with_note(statement_note(fitted))
    return guarantee, details


def save_model(folder, model, task: str, fitted: Fitted | None) -> None:
    """The released model into `folder` (a RunFolder): for a table, behind its preprocessing layers
    (raw columns in), with schema.json and preprocessing.json beside it."""
    if fitted is None:
        folder.save_model(model)
        return
    from models.table_encoding import raw_input_model

    folder.write_json(SCHEMA_FILE, fitted.schema.to_json())
    folder.write_json(FITTED_FILE, fitted.to_json())
    folder.save_model(compiled(raw_input_model(model, fitted), task))
