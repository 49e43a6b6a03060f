"""Membership-inference audit of trained models: reference models, loading a saved model, one procedure.

The attack math is in `privacy.auditing` (numpy only); this module trains the LiRA reference models
and runs the audit on a saved model, for `pipelines.audit` and for the comparison alike.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from data.datasets import Dataset
from privacy.auditing.membership import (
    AuditResult,
    AuditSplit,
    LogitsFn,
    ReferenceStats,
    auc,
    audit_model,
    audit_split,
    cross_entropy,
    logit_scaled_confidence,
)


@dataclasses.dataclass(frozen=True)
class ReferenceRecipe:
    """How reference (shadow) models are trained: a plain, non-private recipe.

    Offline LiRA only needs each audited point's OUT distribution, so the reference models
    need not use the target's (possibly DP) optimizer; a mismatch can only weaken the attack,
    never make the measured leakage an overestimate.
    """

    model: str = "mlp"
    num_models: int = 4
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if self.num_models < 1:
            raise ValueError(f"num_models must be >= 1, got {self.num_models}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("reference recipe: epochs, batch_size and learning_rate must be > 0")


def train_reference_stats(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    split: AuditSplit,
    recipe: ReferenceRecipe = ReferenceRecipe(),
    seed: int = 0,
) -> ReferenceStats:
    """Trains `recipe.num_models` reference models on random halves of the reference population."""
    import tensorflow as tf

    from models.specs import build_model  # any model spec: the comparison audits a user's model too

    if len(split.reference) < 2:
        raise ValueError("lira_offline needs reference examples (training examples outside the audit)")
    rng = np.random.default_rng(seed + 7919)
    x_mem, y_mem = x_train[split.members], y_train[split.members]
    x_non, y_non = x_test[split.nonmembers], y_test[split.nonmembers]
    phis_mem, phis_non, null_aucs = [], [], []
    for i in range(recipe.num_models):
        half = rng.choice(split.reference, size=max(1, len(split.reference) // 2), replace=False)
        model = build_model(recipe.model, x_train.shape[1:], num_classes, seed=seed * 1000 + i + 1)
        model.compile(
            optimizer=tf.keras.optimizers.Adam(recipe.learning_rate),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x_train[half], y_train[half], epochs=recipe.epochs, batch_size=recipe.batch_size, verbose=0)
        logits_mem, logits_non = _predict(model, x_mem), _predict(model, x_non)
        phis_mem.append(logit_scaled_confidence(logits_mem, y_mem))
        phis_non.append(logit_scaled_confidence(logits_non, y_non))
        null_aucs.append(auc(-cross_entropy(logits_mem, y_mem), -cross_entropy(logits_non, y_non)))
    phi_mem, phi_non = np.stack(phis_mem), np.stack(phis_non)  # (models, k)
    all_phi = np.concatenate([phi_mem, phi_non], axis=1)
    if recipe.num_models > 1:
        std = float(np.sqrt(np.mean(np.var(all_phi, axis=0, ddof=1))))
    else:
        std = float(np.std(all_phi))
    return ReferenceStats(
        phi_mem.mean(0), phi_non.mean(0), max(std, 1e-6), recipe.num_models, float(np.mean(null_aucs))
    )


def _predict(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate(
        [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    )


def keras_logits_fn(model, batch_size: int = 1024) -> LogitsFn:
    return lambda x: _predict(model, x, batch_size)


def load_logits_fn(model_dir: str) -> LogitsFn:
    """Loads a saved model (Keras SavedModel with a logits output) as a black box.

    Falls back to the raw SavedModel signature when the Keras object cannot be rebuilt
    (e.g. a model saved from a DP training wrapper with custom classes).
    """
    import tensorflow as tf

    if not os.path.isdir(model_dir):
        raise ValueError(f"model folder not found: {model_dir}")
    try:
        model = tf.keras.models.load_model(model_dir, compile=False)
        return keras_logits_fn(model)
    except Exception as keras_error:  # noqa: BLE001 - any rebuild failure: use the raw signature
        try:
            loaded = tf.saved_model.load(model_dir)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"cannot load a SavedModel from {model_dir}: {e}") from keras_error
        sig = loaded.signatures.get("serving_default")
        if sig is None:
            raise ValueError(f"{model_dir} has no serving_default signature") from keras_error
        (input_name,) = sig.structured_input_signature[1].keys()

        def fn(x: np.ndarray) -> np.ndarray:
            outs = []
            for i in range(0, len(x), 1024):
                out = sig(**{input_name: tf.constant(x[i : i + 1024], dtype=tf.float32)})
                outs.append(np.asarray(next(iter(out.values()))))
            return np.concatenate(outs)

        return fn


class MembershipAuditor:
    """Audits saved models on one split; LiRA reference statistics are trained once and reused.

    Used by `pipelines.audit` (one model) and by the comparison (every arm of a seed shares the
    reference models). The canary audit (an epsilon lower bound) is the training run's own
    (`training.canary_audit`); these AUC attacks are the secondary, example-level view.
    """

    def __init__(
        self,
        model: str,
        reference_models: int = 4,
        max_per_side: int | None = None,
    ) -> None:
        self.model, self.reference_models, self.max_per_side = model, reference_models, max_per_side
        self._reference: dict[tuple, ReferenceStats] = {}

    def reference_stats(self, dataset: Dataset, split: AuditSplit, seed: int) -> ReferenceStats | None:
        if self.reference_models == 0:
            return None
        key = (id(dataset), seed)
        if key not in self._reference:
            self._reference[key] = train_reference_stats(
                dataset.x_train,
                dataset.y_train,
                dataset.x_test,
                dataset.y_test,
                dataset.num_classes,
                split,
                ReferenceRecipe(model=self.model, num_models=self.reference_models),
                seed=seed,
            )
        return self._reference[key]

    def audit(self, logits_fn: LogitsFn, dataset: Dataset, seed: int) -> AuditResult:
        split = audit_split(dataset.num_train, len(dataset.x_test), seed=seed, max_per_side=self.max_per_side)
        return audit_model(
            logits_fn,
            dataset.x_train,
            dataset.y_train,
            dataset.x_test,
            dataset.y_test,
            split,
            reference=self.reference_stats(dataset, split, seed),
        )

    def __call__(self, model_dir: str, dataset: Dataset, seed: int) -> dict[str, Any]:
        """The audit record (attacks, accuracies, split baseline) of the model saved in `model_dir`.

        A table's model takes raw columns (its encoder inside): the attacks see row references and
        the model the rows' raw columns. Its reference models (LiRA) would need that encoder too, so a
        table gets the loss-threshold attack only (the canary audit of each run stands beside it)."""
        if dataset.table is None:
            return self.audit(load_logits_fn(model_dir), dataset, seed).as_dict()
        import tensorflow as tf

        model = tf.keras.models.load_model(model_dir, compile=False)
        refs = dataclasses.replace(dataset, x_train=_row_refs(0, dataset.num_train),
                                   x_test=_row_refs(1, len(dataset.y_test)))  # fmt: skip
        loss_only = MembershipAuditor(self.model, 0, self.max_per_side)
        return loss_only.audit(_table_logits_fn(model, dataset.table), refs, seed).as_dict()


def _row_refs(side: int, n: int) -> np.ndarray:
    """Rows of a table as [side (0 train, 1 test), index] pairs: what the attacks index and split."""
    return np.stack([np.full(n, side, np.int64), np.arange(n, dtype=np.int64)], axis=1)


def _table_logits_fn(model, table, batch_size: int = 1024) -> LogitsFn:
    """Logits of `model` (raw-column inputs) for row references into `table`'s train or test rows."""
    from models.table_encoding import raw_inputs

    numeric = [c.name for c in table.schema.numeric()]
    categorical = [c.name for c in table.schema.categorical()]

    def fn(refs: np.ndarray) -> np.ndarray:
        out = None
        for side, columns in ((0, table.train), (1, table.test)):
            where = np.flatnonzero(refs[:, 0] == side)
            for start in range(0, len(where), batch_size):
                chosen = where[start : start + batch_size]
                rows = {k: v[refs[chosen, 1]] for k, v in columns.items()}
                logits = np.asarray(model(raw_inputs(numeric, categorical, rows), training=False))
                out = np.zeros((len(refs), logits.shape[1]), np.float32) if out is None else out
                out[chosen] = logits
        return out if out is not None else np.zeros((0, 0), np.float32)

    return fn


def saved_model_name(model_dir: str) -> str | None:
    """The Keras model's name, which `models.builders` sets to the builder's name (None: unknown)."""
    import tensorflow as tf

    try:
        return tf.keras.models.load_model(model_dir, compile=False).name
    except Exception:  # noqa: BLE001 - any failure means: unknown, ask the user
        return None
