"""Test-set metrics: hand-computed AUC/AP, recall with an absent class, Keras's loss, the headline rule."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from training import metrics


def _binary_logits(p1: list[float]) -> np.ndarray:
    """Logits whose softmax probability of class 1 is p1: [0, log(p / (1 - p))]."""
    p = np.asarray(p1, np.float64)
    return np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1)


def test_binary_auc_and_average_precision_by_hand():
    # ranked by p1: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg)
    y = np.array([0, 0, 1, 1])
    out = metrics.test_metrics("classification", 2, y, _binary_logits([0.1, 0.4, 0.35, 0.8]))
    # AUC: of the 4 (pos, neg) pairs, 3 rank the positive higher (0.35 < 0.4 is the miss)
    assert out["test_auc"] == pytest.approx(0.75)
    # AP: precision at each positive, averaged: (1/1 + 2/3) / 2
    assert out["test_average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert out["test_accuracy"] == pytest.approx(0.75)  # argmax: 0, 0, 0, 1
    assert set(out) == {"test_accuracy", "test_auc", "test_average_precision"}


def test_a_perfect_and_a_reversed_classifier():
    y = np.array([0, 1, 0, 1, 1, 0])
    margin = np.array([-2.0, 3.0, -1.0, 0.5, 2.0, -0.5])
    perfect = np.stack([np.zeros(6), margin], axis=1)
    reversed_ = np.stack([np.zeros(6), -margin], axis=1)
    assert metrics.test_metrics("classification", 2, y, perfect)["test_auc"] == 1.0
    assert metrics.test_metrics("classification", 2, y, perfect)["test_average_precision"] == 1.0
    assert metrics.test_metrics("classification", 2, y, reversed_)["test_auc"] == 0.0
    assert metrics.test_metrics("classification", 2, y, reversed_)["test_accuracy"] == 0.0


def test_auc_keeps_the_order_where_the_softmax_probability_rounds_to_one():
    # sigmoid(50) and sigmoid(60) are both 1.0 in float64: ranked by probability they would tie (0.5)
    logits = np.array([[0.0, 50.0], [0.0, 60.0], [0.0, -1.0]])
    out = metrics.test_metrics("classification", 2, np.array([0, 1, 0]), logits)
    assert out["test_auc"] == 1.0


def test_one_class_and_empty_test_splits_give_nan_not_an_error():
    only_neg = metrics.test_metrics(
        "classification", 2, np.zeros(4, int), _binary_logits([0.2, 0.3, 0.6, 0.9])
    )
    assert math.isnan(only_neg["test_auc"]) and math.isnan(only_neg["test_average_precision"])
    assert only_neg["test_accuracy"] == 0.5
    only_pos = metrics.test_metrics(
        "classification", 2, np.ones(4, int), _binary_logits([0.2, 0.3, 0.6, 0.9])
    )
    assert math.isnan(only_pos["test_auc"]) and only_pos["test_average_precision"] == 1.0
    empty = metrics.test_metrics("classification", 3, np.zeros(0, int), np.zeros((0, 3)))
    assert set(empty) == {"test_accuracy", "test_balanced_accuracy", *(f"test_recall_{i}" for i in range(3))}
    assert all(math.isnan(v) for v in empty.values())
    assert math.isnan(metrics.mean_loss("classification", np.zeros(0, int), np.zeros((0, 3))))


def test_balanced_accuracy_and_per_class_recall_with_an_absent_class():
    from sklearn.metrics import balanced_accuracy_score, recall_score

    y = np.array([0, 0, 1, 1, 1, 3])  # class 2 is absent from the test split, yet predicted once
    pred = np.array([0, 1, 1, 1, 0, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an absent class is NaN by design, not a warning
        out = metrics.test_metrics("classification", 4, y, 5.0 * np.eye(4)[pred])
    assert out["test_recall_0"] == pytest.approx(1 / 2)
    assert out["test_recall_1"] == pytest.approx(2 / 3)
    assert math.isnan(out["test_recall_2"])
    assert out["test_recall_3"] == 0.0
    assert out["test_balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)  # over present classes
    assert out["test_accuracy"] == pytest.approx(3 / 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert out["test_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    sk = recall_score(y, pred, labels=[0, 1, 2, 3], average=None, zero_division=np.nan)
    assert [out[f"test_recall_{i}"] for i in range(4)] == pytest.approx(list(sk), nan_ok=True)
    assert list(out) == metrics.metric_names("classification", 4)[1:]


def test_regression_rmse_and_mae():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    out = metrics.test_metrics("regression", 0, y, np.array([[1.5], [2.0], [2.0], [6.0]]))
    assert out == pytest.approx({"test_rmse": math.sqrt((0.25 + 0 + 1 + 4) / 4), "test_mae": 3.5 / 4})


def test_softmax_is_stable_for_huge_logits():
    p = metrics.softmax(np.array([[1000.0, 1000.0, -1000.0], [-1e4, 0.0, 1e4]]))
    assert np.all(np.isfinite(p)) and p == pytest.approx(np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    loss = metrics.mean_loss("classification", np.array([2]), np.array([[1000.0, 0.0, -1000.0]]))
    assert loss == pytest.approx(2000.0)


@pytest.mark.parametrize(
    "task, num_classes", [("classification", 3), ("classification", 2), ("regression", 0)]
)
def test_evaluate_model_loss_matches_keras(task, num_classes):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 5)).astype(np.float32)  # 50 rows in batches of 16: a partial last batch
    if task == "classification":
        y = rng.integers(0, num_classes, 50).astype(np.int32)
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        y = rng.normal(size=50).astype(np.float32)
        loss = tf.keras.losses.MeanSquaredError()
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential(
        [tf.keras.Input((5,)), tf.keras.layers.Dense(8, "relu"), tf.keras.layers.Dense(max(num_classes, 1))]
    )
    model.compile(loss=loss, metrics=["accuracy"] if task == "classification" else [])
    keras = model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    ours = metrics.evaluate_model(model, x, y, task, num_classes, batch_size=16)
    assert ours["test_loss"] == pytest.approx(keras["loss"], rel=1e-5)
    # the loss object itself (a regression label as a column: called directly on (n,) labels and (n, 1)
    # predictions, Keras's MSE broadcasts them to (n, n); evaluate() reshapes them first)
    labels = y if task == "classification" else y.reshape(-1, 1)
    assert ours["test_loss"] == pytest.approx(float(loss(labels, model(x))), rel=1e-5)
    assert list(ours) == metrics.metric_names(task, num_classes)
    if task == "classification":
        assert ours["test_accuracy"] == pytest.approx(keras["accuracy"])
    else:
        assert ours["test_rmse"] == pytest.approx(math.sqrt(keras["loss"]), rel=1e-5)


def test_default_metric_rule():
    assert metrics.default_metric("classification", 2, 0.05) == "test_auc"
    assert metrics.default_metric("classification", 2, 0.199) == "test_auc"
    assert metrics.default_metric("classification", 2, 0.2) == "test_accuracy"  # "under 20%"
    assert metrics.default_metric("classification", 2, 0.5) == "test_accuracy"
    assert metrics.default_metric("classification", 2, None) == "test_accuracy"  # no DP estimate
    assert metrics.default_metric("classification", 10, 0.05) == "test_accuracy"  # binary only
    assert metrics.default_metric("regression", 0, None) == "test_rmse"


def test_names_and_directions():
    for name in ("test_loss", "test_rmse", "test_mae", "train_loss"):
        assert not metrics.higher_is_better(name), name
    for name in (
        "test_accuracy",
        "test_auc",
        "test_average_precision",
        "test_balanced_accuracy",
        "test_recall_3",
    ):
        assert metrics.higher_is_better(name), name
    assert metrics.is_metric("test_recall_12") and metrics.is_metric("test_auc")
    assert not metrics.is_metric("test_recall_<i>") and not metrics.is_metric("auc")
    documented = {n for n in metrics.METRICS if "<" not in n}
    for task, k in (("classification", 2), ("classification", 3), ("regression", 0)):
        assert all(n in documented or n.startswith("test_recall_") for n in metrics.metric_names(task, k))


def test_the_module_imports_neither_tensorflow_nor_sklearn():
    code = "import sys, training.metrics; print('tensorflow' in sys.modules, 'sklearn' in sys.modules)"
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.split() == ["False", "False"]
