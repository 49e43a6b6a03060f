"""Federated pipeline: config/DP checks (fast) and end-to-end TFF runs (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from privacy import accounting
from training import federated


def test_config_rejects_inconsistent_privacy_flags():
    with pytest.raises(ValueError, match="need a DP aggregator"):
        federated.FederatedConfig(aggregator="none", noise_multiplier=1.0)
    with pytest.raises(ValueError, match="needs --noise_multiplier or --target_epsilon"):
        federated.FederatedConfig(aggregator="fixed")
    with pytest.raises(ValueError, match="unweighted"):
        federated.FederatedConfig(aggregator="fixed", noise_multiplier=1.0, weighted=True)
    with pytest.raises(ValueError, match="exceeds num_clients"):
        federated.FederatedConfig(num_clients=10, clients_per_round=11)
    with pytest.raises(ValueError, match="server_optimizer"):
        federated.FederatedConfig(server_optimizer="yogi")
    assert federated.FederatedConfig().is_weighted
    assert not federated.FederatedConfig(aggregator="fixed", noise_multiplier=1.0).is_weighted


def test_adaptive_clipping_impossible_settings_say_what_to_change():
    cfg = federated.FederatedConfig(aggregator="adaptive", noise_multiplier=1.0, clients_per_round=10)
    with pytest.raises(ValueError, match=r"--clients_per_round >= 11.*--clipped_count_stddev"):
        federated.dp_config(cfg, 300)
    ok = federated.FederatedConfig(aggregator="adaptive", noise_multiplier=1.0, clients_per_round=11)
    assert federated.dp_config(ok, 300).noise_multiplier == 1.0
    explicit = federated.FederatedConfig(
        aggregator="adaptive", noise_multiplier=1.0, clients_per_round=10, clipped_count_stddev=0.4
    )
    with pytest.raises(ValueError, match="clipped_count_stddev > 0.5"):
        federated.dp_config(explicit, 300)


def test_target_epsilon_calibrates_noise_within_budget():
    cfg = federated.FederatedConfig(aggregator="fixed", target_epsilon=5.0, rounds=20, num_clients=300)
    dp = federated.dp_config(cfg, 300)
    assert dp.noise_multiplier > 0
    assert accounting.fedavg_epsilon(dp) <= 5.0
    assert accounting.fedavg_epsilon(dp.replace(noise_multiplier=dp.noise_multiplier * 0.98)) > 5.0 * 0.99


def test_privacy_report_keys_and_statement():
    cfg = federated.FederatedConfig(aggregator="fixed", noise_multiplier=1.0, rounds=10)
    dp = federated.dp_config(cfg, 300)
    rep = federated.privacy_report(cfg, dp, rounds_done=4, empty_rounds=1)
    for key in (
        "epsilon",
        "delta",
        "accountant",
        "sampling",
        "adjacency",
        "noise_multiplier",
        "l2_norm_clip",
        "steps",
        "clients_per_round",
        "num_clients",
        "rounds",
        "statement",
    ):
        assert key in rep, key
    assert rep["unit"] == "user" and rep["rounds"] == 4 and rep["steps"] == 4
    assert rep["epsilon"] == pytest.approx(accounting.fedavg_epsilon(dp, 4))
    assert "add/remove one user" in rep["adjacency"]
    # how many rounds drew no client is a statistic of the sampling: a DP run does not release it
    assert "noise only" not in rep["statement"] and "empty_rounds" not in rep
    assert "treated as public" in rep["statement"]
    tree = federated.FederatedConfig(aggregator="tree", noise_multiplier=1.0, rounds=10)
    rep = federated.privacy_report(tree, federated.dp_config(tree, 300), 3)
    assert rep["sampling"] == "epoch" and "replace one user" in rep["adjacency"]
    plain = federated.FederatedConfig()
    rep = federated.privacy_report(plain, federated.dp_config(plain, 300), 3)
    assert (
        rep["epsilon"] is None and rep["epsilon_is_infinite"] and rep["dp"] is False and rep["unit"] == "user"
    )


def test_population_builds_only_requested_clients_deterministically():
    from data.clients import from_dataset
    from data.datasets import load_digits

    pop = from_dataset(load_digits(), "dirichlet", 300, alpha=1.0, seed=0)
    assert pop.num_clients == 300 and pop.client_sizes().sum() == len(load_digits().x_train)
    dsets = pop.round_datasets([3, 7], epochs=2, batch_size=4, seed=1, round_num=5)
    assert len(dsets) == 2
    xs = np.concatenate([x for x, _ in dsets[0].as_numpy_iterator()])
    assert len(xs) == 2 * pop.client_sizes()[3]
    again = np.concatenate([x for x, _ in pop.client_dataset(3, 2, 4, 1, 5).as_numpy_iterator()])
    assert np.array_equal(xs, again)


def test_client_datasets_skip_tf_data_rewrites_unless_asked():
    from data.clients import from_dataset
    from data.datasets import load_digits

    pop = from_dataset(load_digits(), "iid", 10, seed=0)
    plain = pop.client_dataset(0, 1, 4, 0).options()
    assert not plain.experimental_optimization.apply_default_optimizations and not plain.autotune.enabled
    optimized = pop.client_dataset(0, 1, 4, 0, optimize=True).options()
    assert optimized.experimental_optimization.apply_default_optimizations is not False  # tf.data's default


def test_fast_client_settings_train_the_same_model(tmp_path):
    """The iterator loop without tf.data rewrites (the default, ~4x cheaper per client) and TFF's
    reduce loop with rewrites give the same run, up to floating-point order."""
    from data.datasets import load_digits

    common = dict(num_clients=40, clients_per_round=8, rounds=3, partition="iid", client_sampling="uniform",
                  client_epochs=2, eval_every=3)  # fmt: skip
    # the same experiment name (it is part of the sampling seed) in two root folders
    fast = federated.run(federated.FederatedConfig(**common, root_output_dir=str(tmp_path / "fast")),
                         load_digits())  # fmt: skip
    slow = federated.run(
        federated.FederatedConfig(**common, root_output_dir=str(tmp_path / "slow"), client_loop="reduce",
                                  client_data_optimizations=True), load_digits(),
    )  # fmt: skip
    assert fast.test_loss == pytest.approx(slow.test_loss, rel=1e-5)
    assert [r["train_loss"] for r in fast.history] == pytest.approx(
        [r["train_loss"] for r in slow.history], rel=1e-5
    )


@pytest.mark.slow
def test_library_tree_aggregation_and_fedprox(tmp_path):
    """In-process: DP-FTRL tree aggregation and a non-private FedProx run both train."""
    from data.datasets import load_digits

    ds = load_digits()
    tree = federated.FederatedConfig(
        num_clients=100,
        clients_per_round=20,
        rounds=3,
        aggregator="tree",
        noise_multiplier=0.3,
        server_optimizer="sgd",
        server_learning_rate=1.0,
        client_epochs=1,
        eval_every=3,
        audit_canaries=50,  # tree: canary users take slots of the 100, each at most once
        root_output_dir=str(tmp_path),
        experiment_name="tree",
    )
    res = federated.run(tree, ds)
    assert res.rounds_completed == 3 and np.isfinite(res.test_loss)
    assert res.audit["num_canaries"] == 50 and not res.audit["exceeds_claim"]
    assert res.privacy["adjacency"].startswith("replace one user")
    assert res.privacy["epsilon"] == pytest.approx(accounting.fedavg_epsilon(federated.dp_config(tree, 100)))
    prox = federated.FederatedConfig(
        num_clients=50,
        clients_per_round=10,
        rounds=8,
        partition="iid",
        fedprox_mu=0.01,
        client_sampling="uniform",
        eval_every=4,
        audit_canaries=20,
        audit_canary_clients=6,
        root_output_dir=str(tmp_path),
        experiment_name="prox",
    )
    res = federated.run(prox, ds)
    assert res.test_accuracy > 0.5  # chance is 0.1
    assert all(r["clients"] == 10 for r in res.history)
    inserted = res.audit["kinds"]["black_box"]["inserted"]
    assert res.privacy["num_clients"] == 50 + inserted  # canary clients are users of the population
    # no noise: no left-out canary outscores an inserted one; only never-sampled inserted ones tie
    assert res.audit["claimed_epsilon"] is None and res.audit["kinds"]["white_box"]["auc"] > 0.75


@pytest.mark.slow
def test_remote_workers_match_local_execution(tmp_path):
    """--workers: two worker_binary processes on 127.0.0.1 give the local result (no noise)."""
    from data.datasets import load_digits
    from training.federated import worker_processes

    ds = load_digits()
    common = dict(
        num_clients=40,
        clients_per_round=8,
        rounds=3,
        partition="iid",
        client_sampling="uniform",
        client_epochs=1,
        eval_every=3,
    )  # the same experiment name (part of the sampling seed) in two root folders
    local = federated.run(federated.FederatedConfig(**common, root_output_dir=str(tmp_path / "local")), ds)
    workers = worker_processes.start_local_workers(2)
    try:
        remote = federated.run(
            federated.FederatedConfig(
                **common, root_output_dir=str(tmp_path / "remote"), workers=tuple(a for a, _ in workers)
            ),
            ds,
        )
    finally:
        worker_processes.stop_workers(workers)
    assert remote.test_loss == pytest.approx(local.test_loss, rel=1e-5)
    assert [r["train_loss"] for r in remote.history] == pytest.approx(
        [r["train_loss"] for r in local.history]
    )


@pytest.mark.slow
def test_aggregator_audit_catches_a_noise_bug_and_clears_the_real_aggregator(tmp_path, monkeypatch):
    import dataclasses

    from data.datasets import load_digits
    from privacy import aggregators

    ds = load_digits()

    def run(name: str):
        config = federated.FederatedConfig(
            rounds=15, client_epochs=1, aggregator="fixed", target_epsilon=2.0, eval_every=15,
            audit_canaries=500, root_output_dir=str(tmp_path), experiment_name=name,
        )  # fmt: skip
        return federated.run(config, ds, verbose=False)

    correct = run("correct")
    assert 0 <= correct.audit["epsilon_lower_bound"] <= correct.privacy["epsilon"]
    assert "aggregator" in correct.audit["mode"]
    honest = aggregators.build_factory

    def broken(config, *args, **kwargs):  # 100x too little noise in the aggregator, same claim
        quiet = dataclasses.replace(config, noise_multiplier=config.noise_multiplier / 100)
        return honest(quiet, *args, **kwargs)

    monkeypatch.setattr(aggregators, "build_factory", broken)
    bad = run("broken")
    assert bad.privacy["epsilon"] == pytest.approx(correct.privacy["epsilon"])
    assert bad.audit["epsilon_lower_bound"] > bad.privacy["epsilon"] and bad.audit["exceeds_claim"]
    monkeypatch.setattr(aggregators, "build_factory", honest)

    # defect 1 of the privacy review: the right amount of noise, but one stream for every tensor
    import tensorflow as tf

    from privacy import seeded_noise

    def one_stream_for_all_tensors(self, mean=0.0, stddev=1.0, seed=None):
        draw_seed = tf.random.experimental.stateless_fold_in(self._seed, next(self._draws))
        return lambda shape, dtype=tf.float32: tf.random.stateless_normal(
            shape, seed=draw_seed, mean=mean, stddev=stddev, dtype=dtype
        )

    monkeypatch.setattr(seeded_noise._StatelessTf, "random_normal_initializer", one_stream_for_all_tensors)
    shared = run("shared_stream")
    assert shared.privacy["epsilon"] == pytest.approx(correct.privacy["epsilon"])
    assert shared.audit["epsilon_lower_bound"] > shared.privacy["epsilon"] and shared.audit["exceeds_claim"]


@pytest.mark.parametrize("num_classes", [2, 0])
def test_evaluation_reports_the_metric_keys_of_every_pipeline(num_classes):
    """The federated evaluator gives training.metrics' keys (AUC for binary labels, RMSE for
    regression), its loss Keras's, and a DP run releases them all (held-out data), no client statistic."""
    from data.clients import ClientPopulation
    from training.federated.round_loop import _evaluator, released
    from training.metrics import metric_names

    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(30, 6)).astype(np.float32)
    y_test = rng.integers(0, 2, 30).astype(np.int32) if num_classes else rng.normal(size=30).astype("float32")
    population = ClientPopulation("tiny", x, np.zeros(40, y_test.dtype), [np.arange(20), np.arange(20, 40)],
                                  x_test, y_test, num_classes)  # fmt: skip

    class Weights:  # what process.get_model_weights(state) returns: the state's global weights
        def assign_weights_to(self, model):
            model.set_weights([w + 0.1 for w in model.get_weights()])

    process = type("Process", (), {"get_model_weights": lambda self, state: Weights()})()
    model = "mlp" if num_classes else "linear"
    config = federated.FederatedConfig(num_clients=2, clients_per_round=1, model=model)
    eval_model, evaluate = _evaluator(config, population, process)
    out = evaluate(None)
    task = "classification" if num_classes else "regression"
    assert list(out) == metric_names(task, num_classes)
    keras = eval_model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert out["test_loss"] == pytest.approx(keras["loss"], rel=1e-5)
    if num_classes:
        assert out["test_accuracy"] == pytest.approx(keras["accuracy"]) and 0 <= out["test_auc"] <= 1
    row = {"round": 3, "clients": 1, "train_loss": 0.5, "round_time_s": 1.0, "epsilon": 2.0, **out}
    assert released(row, private=True) == {"round": 3, "epsilon": 2.0, **out}
