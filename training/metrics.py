"""Test-set metrics that still mean something when the labels are imbalanced.

Accuracy alone hides a model that never predicts a rare class (99% accuracy on 1% positives), so
every run reports, besides ``test_loss`` and ``test_accuracy``, the metrics of its task: ROC AUC and
average precision for binary labels, balanced accuracy and per-class recall for more classes,
RMSE and MAE for regression. All are computed in numpy/scikit-learn from one ``model.predict``
(`evaluate_model`), on the held-out test split: they are released like test accuracy.

No TensorFlow here, and scikit-learn is imported only when metrics are computed, so the binaries'
``--help`` (which validates ``--metric`` names against `METRICS`) stays fast.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np

# The names `test_metrics` / `evaluate_model` return, and what each says.
METRICS: dict[str, str] = {
    "test_loss": "mean sparse softmax cross-entropy of the logits (classification), mean squared "
    "error (regression), as Keras's SparseCategoricalCrossentropy(from_logits=True) / MeanSquaredError",
    "test_accuracy": "share of test rows whose arg-max logit is the label (classification)",
    "test_auc": "binary labels: ROC AUC of the softmax probability of class 1 (the positive class); "
    "NaN when the test split holds one class only",
    "test_average_precision": "binary labels: average precision (area under the precision-recall "
    "curve) of class 1; NaN when the test split holds no positive",
    "test_balanced_accuracy": "more than two classes: mean recall over the classes in the test split",
    "test_recall_<i>": "more than two classes: recall of class i; NaN when the test split has none",
    "test_rmse": "regression: root mean squared error",
    "test_mae": "regression: mean absolute error",
}
_RECALL = re.compile(r"test_recall_(\d+)")
_LOWER_IS_BETTER = ("loss", "rmse", "mae")
# binary labels whose positive class is rarer than this get AUC as their headline metric
RARE_POSITIVE_FRACTION = 0.2


def is_metric(name: str) -> bool:
    """A name `test_metrics` can return (for some task): `METRICS`' names, test_recall_<i> included."""
    return (name in METRICS and "<" not in name) or _RECALL.fullmatch(name) is not None


def metric_names(task: str, num_classes: int) -> list[str]:
    """The keys `evaluate_model` returns for this task and number of classes, in its order."""
    if task != "classification":
        return ["test_loss", "test_rmse", "test_mae"]
    names = ["test_loss", "test_accuracy"]
    if num_classes == 2:
        names += ["test_auc", "test_average_precision"]
    elif num_classes > 2:
        names += ["test_balanced_accuracy", *(f"test_recall_{i}" for i in range(num_classes))]
    return names


def default_metric(task: str, num_classes: int, positive_fraction: float | None) -> str:
    """The headline metric: AUC for binary labels with a rare positive class, else accuracy (RMSE
    for regression).

    `positive_fraction` (the share of rows in class 1) must be a DP release (e.g. the noisy label
    histogram of a table's private preprocessing) or public knowledge: choosing the metric from the
    raw labels would make the choice itself a non-private statistic. This module never computes it
    from data; pass None when no such estimate exists (the answer is then test_accuracy).
    """
    if task != "classification":
        return "test_rmse"
    if num_classes == 2 and positive_fraction is not None and positive_fraction < RARE_POSITIVE_FRACTION:
        return "test_auc"
    return "test_accuracy"


def higher_is_better(metric: str) -> bool:
    """False for losses and errors (loss, RMSE, MAE), True for accuracies, AUC, recall, precision."""
    return metric.rsplit("_", 1)[-1] not in _LOWER_IS_BETTER


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row maximum so no exp overflows."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def mean_loss(task: str, y_true: np.ndarray, outputs: np.ndarray) -> float:
    """Keras's test loss, in numpy: mean cross-entropy from logits, or mean squared error."""
    y = np.asarray(y_true)
    if len(y) == 0:
        return math.nan
    if task == "classification":
        logp = _log_softmax(outputs)
        return float(-np.mean(logp[np.arange(len(y)), y.astype(np.int64).reshape(-1)]))
    pred = np.asarray(outputs, dtype=np.float64).reshape(len(y), -1)
    return float(np.mean((pred - y.astype(np.float64).reshape(len(y), 1)) ** 2))


def _binary(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """AUC and AP of class 1, ranked by the logit margin: the exact order of the softmax probability
    of class 1 (p1 = sigmoid(l1 - l0)), without the ties p1 gets where it rounds to 1.0."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    score = logits[:, 1].astype(np.float64) - logits[:, 0].astype(np.float64)
    positive = y == 1
    auc = ap = math.nan
    if positive.any() and not positive.all():
        auc = float(roc_auc_score(positive, score))
    if positive.any():
        ap = float(average_precision_score(positive, score))
    return {"test_auc": auc, "test_average_precision": ap}


def _multiclass(y: np.ndarray, pred: np.ndarray, num_classes: int) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score, recall_score

    labels = list(range(num_classes))
    recalls = recall_score(y, pred, labels=labels, average=None, zero_division=np.nan)
    out = {"test_balanced_accuracy": float(balanced_accuracy_score(y, pred))}
    out.update({f"test_recall_{i}": float(r) for i, r in zip(labels, recalls)})
    return out


def test_metrics(task: str, num_classes: int, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The task's metrics (not the loss) of logits (n, K) or predictions (n,) / (n, 1).

    Undefined values are NaN, never an exception: AUC with one class in the test split, recall of a
    class absent from it, everything on an empty split."""
    y = np.asarray(y_true).reshape(-1)
    if task != "classification":
        pred = np.asarray(outputs, dtype=np.float64).reshape(-1)
        if len(y) == 0:
            return {"test_rmse": math.nan, "test_mae": math.nan}
        err = pred - y.astype(np.float64)
        return {"test_rmse": float(np.sqrt(np.mean(err**2))), "test_mae": float(np.mean(np.abs(err)))}
    logits = np.asarray(outputs)
    if logits.ndim != 2 or logits.shape != (len(y), num_classes):
        raise ValueError(f"expected logits of shape ({len(y)}, {num_classes}), got {logits.shape}")
    names = metric_names(task, num_classes)[1:]  # all but the loss
    if len(y) == 0:
        return {name: math.nan for name in names}
    y = y.astype(np.int64)
    pred = np.argmax(logits, axis=1)
    out = {"test_accuracy": float(np.mean(pred == y))}
    with warnings.catch_warnings():  # absent classes: NaN by design, not a warning per evaluation
        warnings.simplefilter("ignore")
        if num_classes == 2:
            out.update(_binary(y, logits))
        elif num_classes > 2:
            out.update(_multiclass(y, pred, num_classes))
    return out


def evaluate_model(
    model: Any, x_test: np.ndarray, y_test: np.ndarray, task: str, num_classes: int, batch_size: int = 1024
) -> dict[str, float]:
    """test_loss and every `test_metrics` value from one `model.predict` over the test split.

    Replaces Keras's `model.evaluate`, whose loss it matches (no regularization terms: the models
    here have none), so that every pipeline reports the same keys."""
    if len(x_test) == 0:
        width = num_classes if task == "classification" else 1
        outputs = np.zeros((0, width), np.float32)
    else:
        outputs = np.asarray(model.predict(x_test, batch_size=batch_size, verbose=0))
    return {"test_loss": mean_loss(task, y_test, outputs), **test_metrics(task, num_classes, y_test, outputs)}
