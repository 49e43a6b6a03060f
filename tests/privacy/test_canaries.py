"""Canaries: half inserted from a recorded seed; the audit record says what it rests on."""

from __future__ import annotations

import numpy as np
import pytest

from privacy.auditing.canaries import ExampleCanaries, GradientCanaries, audit_scores, inclusion


def test_inclusion_is_half_independent_and_reproducible():
    a = inclusion(10_000, seed=3, salt=1)
    assert abs(a.mean() - 0.5) < 0.02
    assert np.array_equal(a, inclusion(10_000, seed=3, salt=1))
    assert not np.array_equal(a, inclusion(10_000, seed=3, salt=2))  # kinds draw independently


def test_example_canaries_are_out_of_distribution_units():
    c = ExampleCanaries.make(50, (8, 8, 1), 10, seed=0, per_unit=3)
    assert c.x.shape == (150, 8, 8, 1) and c.num == 50
    assert np.all(c.y.reshape(50, 3) == c.y[::3, None])  # one label per unit
    assert len(c.x_inserted) == 3 * c.inserted.sum()
    logits = np.zeros((150, 10))
    logits[np.arange(150), c.y] = 5.0  # a model that memorized every canary label
    scores = c.scores(logits)
    assert scores.shape == (50,) and np.all(scores > -0.1)


def test_gradient_canaries_are_distinct_coordinates_sampled_only_when_inserted():
    g = GradientCanaries.make(100, 1000, 0.5, seed=1)
    assert len(np.unique(g.coordinates)) == 100 and g.norm == 0.5
    mask = g.sample(1.0, np.random.default_rng(0))
    assert np.array_equal(mask.astype(bool), g.inserted)


def test_audit_record_flags_a_refuted_claim():
    inserted = inclusion(1000, seed=0, salt=0)
    separable = inserted.astype(float)  # a perfect attack
    record = audit_scores(separable, inserted, 1e-5, claimed_epsilon=1.0, mode="test", seed=0)
    assert record["epsilon_lower_bound"] > 1.0 and record["exceeds_claim"] and record["auc"] == 1.0
    noise = np.random.default_rng(0).normal(size=1000)
    record = audit_scores(noise, inserted, 1e-5, claimed_epsilon=1.0, mode="test", seed=0)
    assert record["epsilon_lower_bound"] < 1.0 and not record["exceeds_claim"]
    assert audit_scores(separable, inserted, 1e-5, None, "test", 0)["exceeds_claim"] is False


def test_update_canaries_span_two_tensors_of_the_real_update_and_are_disjoint():
    from privacy.auditing.canaries import UpdateCanaries, inclusion

    shapes = [(64, 128), (128,), (128, 10), (10,)]  # the digits MLP: kernel, bias, kernel, bias
    c = UpdateCanaries.make(500, shapes, 0.7, 3, inclusion(500, 3, 1))
    assert (c.second[:, 0] >= 0).all() and (c.first[:, 0] != c.second[:, 0]).all()
    assert (c.first[:, 1] == c.second[:, 1]).all()  # the same offset in two different tensors
    tensors = set(c.first[:, 0]) | set(c.second[:, 0])
    assert tensors == {0, 1, 2, 3}  # kernels and biases
    coordinates = {tuple(p) for p in c.first} | {tuple(p) for p in c.second} | {c.other}
    assert len(coordinates) == 2 * 500 + 1  # disjoint: no canary's signal reaches another's score
    for i in (0, 1, 7, 499):
        update = c.canary_update(i)
        assert np.sqrt(sum((u**2).sum() for u in update)) == pytest.approx(0.7, rel=1e-6)
        seen = c.observe(update)
        assert seen[i] == pytest.approx(0.7, rel=1e-6) and np.abs(np.delete(seen, i)).max() == 0
    assert np.abs(c.observe(c.other_update())).max() == 0
    # noise shared between tensors at equal offsets cancels in every canary's score
    stream = np.random.default_rng(0).normal(size=64 * 128)
    shared = [stream[: int(np.prod(s))].reshape(s) for s in shapes]
    np.testing.assert_allclose(c.observe(shared), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="fewer --audit_canaries"):
        UpdateCanaries.make(20, [(4,), (3,)], 1.0, 0, np.ones(20, bool))
