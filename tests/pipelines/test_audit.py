"""The audit binary on a saved model: membership_audit.json, and a clean usage error."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_audit_binary_writes_membership_audit_json(tmp_path, run_binary):
    """`python -m pipelines.audit` on a saved digits model (the split of seed 0)."""
    import json

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
    p = run_binary(
        "audit",
        f"--model_dir={tmp_path / 'run' / 'model'}",
        "--dataset=digits",
        "--seed=0",
        "--reference_models=1",
        "--max_per_side=100",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "loss_threshold" in p.stdout and "lira_offline" in p.stdout
    record = json.load(open(tmp_path / "run" / "membership_audit.json"))
    assert record["num_members"] == record["num_nonmembers"] == 100
    assert 0.0 <= record["attacks"]["loss_threshold"]["auc"] <= 1.0
    # a missing model folder is a clean usage error
    bad = run_binary("audit", f"--model_dir={tmp_path / 'nope'}")
    assert bad.returncode != 0 and "model_dir" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_audit_of_your_own_model_trains_references_of_the_same_model(tmp_path, run_binary):
    """A model trained with --model=examples/my_model.py:build is audited with reference models of the
    same function (`--reference_architecture` takes the training run's --model)."""
    import json

    spec = "examples/my_model.py:build"
    train = run_binary("train_centralized", f"--model={spec}", "--epochs=5", f"--root_output_dir={tmp_path}")
    assert train.returncode == 0, train.stderr[-3000:]
    model_dir = tmp_path / "centralized" / "model"
    guessed = run_binary("audit", f"--model_dir={model_dir}", "--reference_models=1")
    assert guessed.returncode == 2 and "--reference_architecture" in guessed.stderr
    p = run_binary("audit", f"--model_dir={model_dir}", f"--reference_architecture={spec}",
                   "--reference_models=1", "--max_per_side=100")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    record = json.load(open(tmp_path / "centralized" / "membership_audit.json"))
    assert 0.0 <= record["attacks"]["lira_offline"]["auc"] <= 1.0
