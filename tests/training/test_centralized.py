"""Centralized pipeline: end-to-end smoke on digits, budget stop, outputs, bad input."""

import json
import math
import os

import pytest

from training import centralized


def test_dp_run_writes_every_output_and_respects_target(tmp_path):
    cfg = centralized.CentralizedConfig(
        epochs=3,
        batch_size=256,
        dp=True,
        target_epsilon=2.0,
        root_output_dir=str(tmp_path),
        experiment_name="dp",
    )
    result = centralized.run(cfg)
    out = tmp_path / "dp"
    privacy = json.loads((out / "privacy.json").read_text())
    for key in (
        "epsilon",
        "delta",
        "accountant",
        "sampling",
        "adjacency",
        "noise_multiplier",
        "l2_norm_clip",
        "steps",
    ):
        assert key in privacy
    assert privacy["epsilon"] <= 2.0 and privacy["sampling"] == "poisson"
    assert privacy["adjacency"] == "add/remove one example" and privacy["unit"] == "example"
    assert privacy["steps"] == 3 * 6  # ceil(1437 / 256) = 6 steps per epoch
    assert (out / "metrics.csv").read_text().count("\n") == 4
    assert os.listdir(out / "tensorboard")
    assert result.test_accuracy > 0.3

    import numpy as np
    import tensorflow as tf

    from data.datasets import load_digits

    reloaded = tf.keras.models.load_model(str(out / "model"))
    d = load_digits()
    acc = float(np.mean(np.argmax(reloaded.predict(d.x_test, verbose=0), axis=1) == d.y_test))
    assert acc == pytest.approx(result.test_accuracy, abs=1e-6)


def test_budget_stops_training_before_it_is_exceeded(tmp_path):
    cfg = centralized.CentralizedConfig(
        epochs=30, batch_size=256, dp=True, noise_multiplier=2.5, target_epsilon=2.0,
        root_output_dir=str(tmp_path), experiment_name="budget",
    )  # fmt: skip
    result = centralized.run(cfg)
    assert result.privacy["stopped_early_for_budget"]
    assert result.privacy["epsilon"] <= 2.0
    done = result.privacy["epochs"]
    assert 0 < done < 30
    from privacy import accounting

    dp = centralized.prepare(cfg).dp
    assert accounting.dp_sgd_epsilon(dp, done + 1) > 2.0  # one more epoch would have exceeded it


def test_shuffle_run_reports_shuffle_epsilon(tmp_path):
    cfg = centralized.CentralizedConfig(
        epochs=2, batch_size=256, dp=True, noise_multiplier=2.0, sampling="shuffle",
        root_output_dir=str(tmp_path), experiment_name="shuffle",
    )  # fmt: skip
    privacy = centralized.run(cfg).privacy
    assert privacy["sampling"] == "shuffle" and "no privacy amplification" in privacy["statement"]
    from privacy import accounting
    from privacy.config import DpSgdConfig

    poisson = DpSgdConfig(num_examples=1437, batch_size=256, epochs=2, noise_multiplier=2.0)
    assert privacy["epsilon"] > accounting.dp_sgd_epsilon(poisson)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dp=True), "noise_multiplier or --target_epsilon"),
        (dict(epochs=0), "epochs"),
        (dict(delta=1.5), "delta"),
        (dict(engine="magic"), "engine"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        centralized.CentralizedConfig(**kwargs)


def test_delta_must_be_below_one_over_n():
    cfg = centralized.CentralizedConfig(dp=True, target_epsilon=1.0, delta=1e-3)
    with pytest.raises(ValueError, match="1/N"):
        centralized.prepare(cfg)


def test_local_dp_is_reported_separately(tmp_path):
    from privacy.local_dp import LocalDpConfig

    cfg = centralized.CentralizedConfig(
        epochs=1, batch_size=256, dp=True, target_epsilon=2.0, root_output_dir=str(tmp_path),
        experiment_name="local", local_dp=LocalDpConfig(label_epsilon=2.0),
    )  # fmt: skip
    result = centralized.run(cfg)
    privacy = json.loads((tmp_path / "local" / "privacy.json").read_text())
    assert privacy == json.loads(json.dumps(result.privacy))
    assert privacy["epsilon"] <= 2.0  # the training epsilon is unchanged by local DP
    labels = privacy["local_dp"]["labels"]
    assert labels["epsilon"] == 2.0 and labels["mechanism"] == "k-ary randomized response"
    assert labels["keep_probability"] == pytest.approx(math.exp(2.0) / (math.exp(2.0) + 9))
    assert privacy["local_dp"]["per_record_epsilon"] == 2.0
