"""Membership-inference audit: metrics on hand-built scores, and attacks on real Keras models."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.auditing import membership as audit


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


def test_recalibrated_out_mean_is_affine_and_label_free():
    mu = np.array([0.0, 1.0, 2.0, 3.0])
    phi = 0.5 * mu - 1.0  # a less confident target on the same difficulty ranking
    assert np.allclose(audit.recalibrated_out_mean(phi, mu), phi)
    assert np.allclose(audit.recalibrated_out_mean(phi, np.ones(4)), phi.mean())
