"""Membership audit of real models: an overfit model leaks, an unseen one does not; LiRA; loading."""

from __future__ import annotations

import pytest

from privacy.auditing import membership as audit
from training import membership_audit


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
    res = audit.audit_model(
        membership_audit.keras_logits_fn(overfit), x_small, y_small, p["x_test"], p["y_test"], split
    )
    loss_attack = res.attacks["loss_threshold"]
    assert res.member_accuracy == 1.0 and res.nonmember_accuracy < 0.95
    assert loss_attack.auc > 0.62, loss_attack
    assert loss_attack.num_members == loss_attack.num_nonmembers == len(split.members) == 99

    # Same recipe trained on disjoint data: neither side was seen, so ~0.5 (299 per side).
    unseen = _fit(p["x_other"], p["y_other"], epochs=150)
    split0 = audit.audit_split(len(p["x_train"]), len(p["x_test"]), seed=0)
    res0 = audit.audit_model(
        membership_audit.keras_logits_fn(unseen), p["x_train"], p["y_train"], p["x_test"], p["y_test"], split0
    )
    assert abs(res0.attacks["loss_threshold"].auc - 0.5) < 0.08, res0.attacks
    assert loss_attack.auc > res0.attacks["loss_threshold"].auc + 0.1


def test_lira_offline_on_overfit_model(digits_parts, tmp_path):
    p = digits_parts
    # Members come from the first 150 training examples; the other 150 are the reference population.
    x_tr, y_tr = p["x_train"], p["y_train"]
    split = audit.audit_split(len(x_tr), 150, seed=1)
    target = _fit(x_tr, y_tr, epochs=150)
    ref = membership_audit.train_reference_stats(
        x_tr,
        y_tr,
        p["x_test"],
        p["y_test"],
        10,
        split,
        membership_audit.ReferenceRecipe(model="mlp", num_models=2, epochs=20),
        seed=0,
    )
    assert ref.member_mean.shape == (150,) and ref.std > 0
    assert abs(ref.null_loss_auc - 0.5) < 0.12  # reference models saw neither side
    # A saved model round-trips through the black-box loader.
    target.save(str(tmp_path / "model"))
    fn = membership_audit.load_logits_fn(str(tmp_path / "model"))
    res = audit.audit_model(fn, x_tr, y_tr, p["x_test"], p["y_test"], split, reference=ref)
    assert set(res.attacks) == {"loss_threshold", "lira_offline"}
    assert res.attacks["lira_offline"].auc > 0.6, res.attacks
    d = res.as_dict()
    assert d["attacks"]["lira_offline"]["num_members"] == 150
    assert "lira_offline" in audit.summarize(res) and "split baseline" in audit.summarize(res)
    assert d["null_loss_auc"] == ref.null_loss_auc


def test_load_logits_fn_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        membership_audit.load_logits_fn(str(tmp_path / "nope"))
