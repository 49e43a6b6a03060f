"""Membership-inference audit: metrics on hand-built scores, and attacks on real Keras models."""

from __future__ import annotations

import numpy as np
import pytest

from privacy import audit

# ---------------------------------------------------------------- metrics


def test_perfect_separator_has_auc_one_and_full_tpr():
    members, nonmembers = np.arange(10, 20.0), np.arange(0, 10.0)
    assert audit.auc(members, nonmembers) == 1.0
    assert audit.tpr_at_fpr(members, nonmembers, 0.01) == 1.0
    r = audit.evaluate_attack("x", members, nonmembers)
    assert r.advantage == 1.0


def test_inverted_and_constant_scores():
    assert audit.auc(np.zeros(5), np.ones(5)) == 0.0  # no flipping: a bad attack reports < 0.5
    assert audit.auc(np.ones(7), np.ones(3)) == 0.5  # all ties count one half
    assert audit.tpr_at_fpr(np.ones(7), np.ones(3), 0.01) == 0.0  # tied points move together


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    m = rng.integers(0, 6, 300).astype(float)  # many ties
    n = rng.integers(0, 5, 200).astype(float)
    y = np.r_[np.ones(300), np.zeros(200)]
    assert audit.auc(m, n) == pytest.approx(roc_auc_score(y, np.r_[m, n]), abs=1e-12)
    fpr, tpr = audit.roc_curve(m, n)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0 and fpr[0] == 0.0


def test_tpr_at_one_percent_fpr_hand_built():
    # 200 non-members with scores 0..199: FPR <= 1% allows at most 2 false positives,
    # i.e. a threshold t > 197.
    nonmembers = np.arange(200.0)
    members = np.array([500.0, 400.0, 198.5, 198.0, 197.5, 10.0, 5.0, 1.0, 0.5, 0.0])
    # t = 197.5: FP = {198, 199} -> FPR 0.01; TP = {500, 400, 198.5, 198, 197.5} -> 0.5.
    # t = 197 would add the non-member 197 (FPR 0.015).
    assert audit.tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.5)
    # zero false positives allowed: only scores above 199 count (500, 400)
    assert audit.tpr_at_fpr(members, nonmembers, 0.0) == pytest.approx(0.2)
    # a member tied with the 3rd-highest non-member cannot be counted at FPR <= 1%
    tied = np.array([197.0])
    assert audit.tpr_at_fpr(tied, nonmembers, 0.01) == 0.0
    assert audit.tpr_at_fpr(tied, nonmembers, 0.015) == 1.0


def test_bad_scores_are_rejected():
    with pytest.raises(ValueError, match="at least one"):
        audit.auc(np.array([]), np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        audit.auc(np.array([np.nan]), np.ones(3))
    with pytest.raises(ValueError, match="logits"):
        audit.cross_entropy(np.ones((3, 1)), np.zeros(3))


def test_signals_are_stable_and_consistent():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    labels = np.array([0, 2])
    ce = audit.cross_entropy(logits, labels)
    assert np.all(np.isfinite(ce)) and ce[0] == pytest.approx(0.0) and ce[1] == pytest.approx(np.log(3))
    phi = audit.logit_scaled_confidence(logits, labels)
    assert phi[0] == pytest.approx(1000.0) and phi[1] == pytest.approx(np.log(1 / 3) - np.log(2 / 3))


def test_audit_split_is_balanced_disjoint_and_deterministic():
    s = audit.audit_split(100, 30, seed=3)
    assert len(s.members) == len(s.nonmembers) == 30
    assert len(s.reference) == 70 and not set(s.members) & set(s.reference)
    s2 = audit.audit_split(100, 30, seed=3)
    assert np.array_equal(s.members, s2.members) and np.array_equal(s.nonmembers, s2.nonmembers)
    assert len(audit.audit_split(100, 30, max_per_side=10).members) == 10


# ---------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def digits_parts():
    """Digits cut into target-train (members), held-out (non-members) and disjoint 'other'."""
    from data.datasets import load_digits

    d = load_digits(seed=0)
    x, y = d.x_train, d.y_train
    return {
        "x_train": x[:300],
        "y_train": y[:300],
        "x_other": x[300:900],
        "y_other": y[300:900],
        "x_test": d.x_test[:300],
        "y_test": d.y_test[:300],
    }


def _fit(x, y, epochs, seed=0, width=256):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Flatten(input_shape=x.shape[1:]),
            tf.keras.layers.Dense(width, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(3e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def test_overfit_model_leaks_and_unseen_model_does_not(digits_parts):
    p = digits_parts
    # Deliberately overfit: 100 training examples, a wide layer, many epochs.
    x_small, y_small = p["x_train"][:100], p["y_train"][:100]
    split = audit.audit_split(len(x_small), len(p["x_test"]), seed=0)
    overfit = _fit(x_small, y_small, epochs=150)
    res = audit.audit_model(audit.keras_logits_fn(overfit), x_small, y_small, p["x_test"], p["y_test"], split)
    loss_attack = res.attacks["loss_threshold"]
    assert res.member_accuracy == 1.0 and res.nonmember_accuracy < 0.95
    assert loss_attack.auc > 0.62, loss_attack
    assert loss_attack.num_members == loss_attack.num_nonmembers == len(split.members) == 99

    # Same recipe trained on disjoint data: neither side was seen, so ~0.5 (299 per side).
    unseen = _fit(p["x_other"], p["y_other"], epochs=150)
    split0 = audit.audit_split(len(p["x_train"]), len(p["x_test"]), seed=0)
    res0 = audit.audit_model(
        audit.keras_logits_fn(unseen), p["x_train"], p["y_train"], p["x_test"], p["y_test"], split0
    )
    assert abs(res0.attacks["loss_threshold"].auc - 0.5) < 0.08, res0.attacks
    assert loss_attack.auc > res0.attacks["loss_threshold"].auc + 0.1


def test_lira_offline_on_overfit_model(digits_parts, tmp_path):
    p = digits_parts
    # Members come from the first 150 training examples; the other 150 are the reference population.
    x_tr, y_tr = p["x_train"], p["y_train"]
    split = audit.audit_split(len(x_tr), 150, seed=1)
    target = _fit(x_tr, y_tr, epochs=150)
    ref = audit.train_reference_stats(
        x_tr,
        y_tr,
        p["x_test"],
        p["y_test"],
        10,
        split,
        audit.ReferenceRecipe(model="mlp", num_models=2, epochs=20),
        seed=0,
    )
    assert ref.member_mean.shape == (150,) and ref.std > 0
    assert abs(ref.null_loss_auc - 0.5) < 0.12  # reference models saw neither side
    # A saved model round-trips through the black-box loader.
    target.save(str(tmp_path / "model"))
    fn = audit.load_logits_fn(str(tmp_path / "model"))
    res = audit.audit_model(fn, x_tr, y_tr, p["x_test"], p["y_test"], split, reference=ref)
    assert set(res.attacks) == {"loss_threshold", "lira_offline"}
    assert res.attacks["lira_offline"].auc > 0.6, res.attacks
    d = res.as_dict()
    assert d["attacks"]["lira_offline"]["num_members"] == 150
    assert "lira_offline" in audit.summarize(res) and "split baseline" in audit.summarize(res)
    assert d["null_loss_auc"] == ref.null_loss_auc


def test_load_logits_fn_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        audit.load_logits_fn(str(tmp_path / "nope"))


@pytest.mark.slow
def test_audit_binary_writes_audit_json(tmp_path):
    """`python -m pipelines.audit` on a saved digits model (the split of seed 0)."""
    import json
    import os
    import subprocess
    import sys

    from data.datasets import load_dataset
    from models.builders import build_model

    d = load_dataset("digits", seed=0)
    import tensorflow as tf

    model = build_model("mlp", d.input_shape, d.num_classes, seed=0)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(3e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(d.x_train, d.y_train, epochs=5, batch_size=64, verbose=0)
    model.save(str(tmp_path / "run" / "model"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.audit",
            f"--model_dir={tmp_path / 'run' / 'model'}",
            "--dataset=digits",
            "--seed=0",
            "--reference_models=1",
            "--max_per_side=100",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "loss_threshold" in p.stdout and "lira_offline" in p.stdout
    record = json.load(open(tmp_path / "run" / "audit.json"))
    assert record["num_members"] == record["num_nonmembers"] == 100
    assert 0.0 <= record["attacks"]["loss_threshold"]["auc"] <= 1.0
    # a missing model folder is a clean usage error
    bad = subprocess.run(
        [sys.executable, "-m", "pipelines.audit", f"--model_dir={tmp_path / 'nope'}"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "model_dir" in bad.stderr and "Traceback" not in bad.stderr


def test_recalibrated_out_mean_is_affine_and_label_free():
    mu = np.array([0.0, 1.0, 2.0, 3.0])
    phi = 0.5 * mu - 1.0  # a less confident target on the same difficulty ranking
    assert np.allclose(audit.recalibrated_out_mean(phi, mu), phi)
    assert np.allclose(audit.recalibrated_out_mean(phi, np.ones(4)), phi.mean())


def test_canaries_are_planted_and_memorized_canaries_are_detected():
    from sklearn.linear_model import LogisticRegression

    from data.datasets import load_digits

    d = load_digits()
    x, y, canaries = audit.plant_canaries(d.x_train, d.y_train, 10, 60, seed=0)
    assert len(x) == len(d.x_train) - 30 and canaries.inserted.sum() == 30
    # every canary label is wrong, and the inserted ones are in the training set with it
    flat = x.reshape(len(x), -1)
    for cx, cy, ins in zip(canaries.x.reshape(60, -1), canaries.wrong_labels, canaries.inserted):
        rows = np.flatnonzero((flat == cx).all(1))
        assert (len(rows) > 0 and np.all(y[rows] == cy)) if ins else np.all(y[rows] != cy)
    memorizer = LogisticRegression(C=1e4, max_iter=5000).fit(flat, y)  # fits the wrong labels
    res = audit.canary_audit(lambda q: memorizer.decision_function(q.reshape(len(q), -1)), canaries)
    assert res.auc > 0.9
    blind = LogisticRegression(C=1e4, max_iter=5000).fit(d.x_test.reshape(len(d.x_test), -1), d.y_test)
    res = audit.canary_audit(lambda q: blind.decision_function(q.reshape(len(q), -1)), canaries)
    assert 0.25 < res.auc < 0.75  # never saw any canary
    with pytest.raises(ValueError, match="even"):
        audit.plant_canaries(d.x_train, d.y_train, 10, 7, seed=0)
