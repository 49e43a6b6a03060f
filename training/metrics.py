"""Test-set metrics that mean something for the task at hand (imbalanced binary labels included).

Accuracy alone says little when 3% of the rows are positive: binary labels also get AUC-ROC and
average precision of class 1 (the positive class: the last of the label's sorted classes),
multi-class labels balanced accuracy and per-class recall, regression RMSE and MAE. Computed
centrally on the test split, like test accuracy.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = {
    "test_loss": "cross-entropy of the logits (classification) or mean squared error (regression)",
    "test_accuracy": "share of correct argmax predictions",
    "test_auc": "binary: ROC AUC of the predicted probability of class 1",
    "test_average_precision": "binary: average precision (area under precision-recall) of class 1",
    "test_balanced_accuracy": "multi-class: mean of the per-class recalls",
    "test_recall_<i>": "multi-class: recall of class i (NaN when the test split has none)",
    "test_rmse": "regression: root mean squared error",
    "test_mae": "regression: mean absolute error",
}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_metrics(task: str, num_classes: int, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """The metrics of `outputs` (logits (n, K), or regression predictions) against `y_true`."""
    from sklearn import metrics as sk

    if task == "regression":
        err = np.asarray(outputs, np.float64).reshape(-1) - np.asarray(y_true, np.float64).reshape(-1)
        return {"test_rmse": float(np.sqrt(np.mean(err**2))), "test_mae": float(np.mean(np.abs(err)))}
    y = np.asarray(y_true).astype(np.int64).reshape(-1)
    logits = np.asarray(outputs, np.float64)
    out = {"test_accuracy": float(np.mean(np.argmax(logits, axis=1) == y))}
    if num_classes == 2:
        p1 = _softmax(logits)[:, 1]
        both = len(np.unique(y)) == 2
        out["test_auc"] = float(sk.roc_auc_score(y, p1)) if both else math.nan
        out["test_average_precision"] = float(sk.average_precision_score(y, p1)) if both else math.nan
    elif num_classes > 2:
        pred = np.argmax(logits, axis=1)
        recalls = [float(np.mean(pred[y == i] == i)) if np.any(y == i) else math.nan for i in range(num_classes)]
        present = [r for r in recalls if not math.isnan(r)]
        out["test_balanced_accuracy"] = float(np.mean(present)) if present else math.nan
        out.update({f"test_recall_{i}": r for i, r in enumerate(recalls)})
    return out


def default_metric(task: str, num_classes: int, positive_fraction: float | None) -> str:
    """The headline metric: AUC for binary labels whose positive class is under 20% of the rows,
    RMSE for regression, accuracy otherwise. `positive_fraction` must be a DP release (a table's
    private preprocessing gives one) or public knowledge: None gives accuracy."""
    if task == "regression":
        return "test_rmse"
    if num_classes == 2 and positive_fraction is not None and positive_fraction < 0.2:
        return "test_auc"
    return "test_accuracy"


def higher_is_better(metric: str) -> bool:
    return not any(metric.endswith(s) for s in ("rmse", "mae", "loss"))


def evaluate_model(model, x_test, y_test, task: str, num_classes: int, batch_size: int = 1024) -> dict[str, float]:
    """test_loss and `test_metrics` of `model` on the test split, from one predict() pass."""
    outputs = np.asarray(model.predict(x_test, batch_size=batch_size, verbose=0), np.float64)
    if task == "regression":
        err = outputs.reshape(-1) - np.asarray(y_test, np.float64).reshape(-1)
        loss = float(np.mean(err**2))
    else:
        z = outputs - outputs.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = float(-np.mean(log_p[np.arange(len(outputs)), np.asarray(y_test).astype(np.int64)]))
    return {"test_loss": loss, **test_metrics(task, num_classes, y_test, outputs)}
