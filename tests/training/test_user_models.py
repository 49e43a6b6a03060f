"""Your own model through the pipelines' libraries: recipes by input shape, the engine and why, federated
starting weights, and the comparison refusing a bad model before any arm runs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.specs import build_model, register_model
from training import recipes

L = tf.keras.layers


def _flat_dense(input_shape, num_classes):
    return tf.keras.Sequential([L.InputLayer(input_shape), L.Flatten(), L.Dense(num_classes)])


class _Subclassed(tf.keras.Model):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.flatten, self.out = L.Flatten(), L.Dense(num_classes)

    def call(self, x, training=None):
        return self.out(self.flatten(x))


def test_a_users_model_takes_the_recipe_of_its_input_shape():
    spec = register_model(_flat_dense)
    assert recipes.default_recipe(spec, (20,), dp=True) is recipes.DIGITS  # tabular: the MLP's
    assert recipes.default_recipe(spec, (8, 8, 1), dp=True) is recipes.DIGITS  # digits-sized images
    assert recipes.default_recipe(spec, (28, 28, 1), dp=True) is recipes.MNIST_CNN_DP
    assert recipes.default_recipe("examples/my_model.py:build", (32, 32, 3), dp=True) is recipes.CIFAR_CNN_DP
    assert recipes.default_recipe("mlp", (28, 28, 1), dp=True) is recipes.DIGITS  # built-ins unchanged


def test_auto_says_why_it_did_not_pick_ghost_and_privacy_json_records_it(digits, tmp_path):
    from training import centralized

    spec = register_model(lambda input_shape, num_classes: _Subclassed(num_classes))
    config = centralized.CentralizedConfig(
        model=spec, dp=True, noise_multiplier=1.0, epochs=1, root_output_dir=str(tmp_path)
    )
    plan = centralized.prepare(config, digits)
    assert plan.engine == "vectorized" and "subclassed" in plan.engine_reason
    report = centralized._report(plan, 1)  # noqa: SLF001 - privacy.json's content
    assert report["engine"] == "vectorized" and report["engine_reason"] == plan.engine_reason
    ghost = centralized.prepare(
        centralized.CentralizedConfig(dp=True, noise_multiplier=1.0, epochs=1, root_output_dir=str(tmp_path)),
        digits,
    )
    assert ghost.engine == "ghost" and ghost.engine_reason is None
    assert not (tmp_path / "centralized").exists()  # prepare writes nothing


def test_federated_pretrained_starts_from_the_saved_weights(digits, tmp_path):
    from training import federated
    from training.federated import execution_context
    from training.federated.process import build_process
    from training.federated.round_loop import initial_state

    saved = build_model("examples/my_model.py:build", digits.input_shape, 10, seed=1)
    for w in saved.weights:
        w.assign(w + 0.25)
    path = str(tmp_path / "public.keras")
    saved.save(path)
    states = {}
    for init in ("pretrained", "fresh"):
        config = federated.FederatedConfig(
            model=path, model_init=init, num_clients=20, clients_per_round=5, rounds=1,
            root_output_dir=str(tmp_path / init),
        )  # fmt: skip
        plan = federated.plan_run(config, digits)
        with execution_context.execution_context():  # owns (and stops) its TFF worker
            process = build_process(config, plan.dp, plan.population)
            state = initial_state(config, plan.population, process)
            states[init] = [np.asarray(w) for w in process.get_model_weights(state).trainable]
    expected = [w.numpy() for w in saved.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(states["pretrained"], expected, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(states["fresh"], expected) if b.ndim == 2)


def test_federated_plan_refuses_a_bad_model_before_writing(digits, tmp_path):
    from training import federated

    spec = register_model(lambda input_shape, num_classes: _flat_dense(input_shape, 3))
    config = federated.FederatedConfig(
        model=spec, num_clients=20, clients_per_round=5, root_output_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match=r"outputs shape \(None, 3\), but the labels need \(None, 10\)"):
        federated.plan_run(config, digits)
    assert list(tmp_path.iterdir()) == []


def test_comparison_refuses_a_bad_model_before_any_arm(digits, tmp_path):
    from training.comparison import ComparisonConfig, run_comparison

    spec = register_model(lambda input_shape, num_classes: _flat_dense(input_shape, 3))
    config = ComparisonConfig(
        model=spec, arms=("central_dp",), target_epsilons=(3.0,), root_output_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match="labels need"):
        run_comparison(config, dataset=digits, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []
