"""Hostile inputs and faults (issue "Hostile inputs, faults"): names the filesystem or flags.txt cannot
hold, seeds Keras refuses, floats float32 cannot hold, counts that do not fit in memory, and training
that diverges. The configs are checked directly (fast); a few binary runs check the one-line error,
the exit code and that nothing was written.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from privacy.private_selection import RunsDistribution
from privacy.randomness import SEED_MAX
from tests.pipelines.test_bad_input import _one_line_error, _snapshot
from training.centralized_config import MAX_EPOCHS, MAX_ROUNDS, CentralizedConfig, NonPrivateLedger
from training.comparison import ComparisonConfig
from training.federated import FederatedConfig
from training.progress import Diverged, divergence
from training.run_folder import NAME_RESERVE, check_experiment_name
from training.tuning import SearchSpace, TuningConfig


def _tuning(**kwargs) -> TuningConfig:
    return TuningConfig(3.0, RunsDistribution("poisson", 3.0), **kwargs)


CONFIGS = {
    "centralized": CentralizedConfig,
    "federated": FederatedConfig,
    "tune": _tuning,
    "compare": ComparisonConfig,
}


# ---------------------------------------------------------------- --experiment_name


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize(
    "name, message",
    [
        ("a" * 300, "300 bytes long"),
        ("a\nb", "control characters"),
        ("a\tb", "control characters"),
        ("a\x00b", "control characters"),
        ("a\u2028b", "control characters"),  # a line separator: str.splitlines splits there
        ("", "not empty"),
        (".", "not empty"),
        ("..", "not empty"),
        ("a/b", "plain folder name, without"),
        ("a\\b", "plain folder name, without"),
        ("run ", "blanks"),  # a --flagfile rerun strips the line
    ],
)
def test_every_config_refuses_a_name_the_folder_or_flags_txt_cannot_hold(tmp_path, kind, name, message):
    with pytest.raises(ValueError, match="--experiment_name") as e:
        CONFIGS[kind](root_output_dir=str(tmp_path), experiment_name=name)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_name_limit_is_the_filesystems_less_room_for_temporary_names(tmp_path, monkeypatch):
    limit = os.pathconf(str(tmp_path), "PC_NAME_MAX") - NAME_RESERVE
    check_experiment_name("a" * limit, str(tmp_path / "not" / "made"))  # the deepest existing folder's
    check_experiment_name("é" * (limit // 2), str(tmp_path))  # bytes, not characters
    with pytest.raises(ValueError, match=f"{limit + 1} bytes long"):
        check_experiment_name("a" * (limit + 1), str(tmp_path))
    with pytest.raises(ValueError, match="bytes long"):
        check_experiment_name("é" * (limit // 2 + 1), str(tmp_path))
    monkeypatch.setattr(os, "pathconf", lambda *_: 100)  # a filesystem with shorter names
    with pytest.raises(ValueError, match=f"at most {100 - NAME_RESERVE} bytes"):
        check_experiment_name("a" * (100 - NAME_RESERVE + 1), str(tmp_path))
    assert len(f".tmp-XXXXXXXX{'a' * limit}".encode()) <= limit + NAME_RESERVE  # the temporary names fit


def test_root_output_dir_with_a_newline_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--root_output_dir must not contain control characters"):
        CentralizedConfig(root_output_dir=f"{tmp_path}/a\nb")


# ---------------------------------------------------------------- --seed


def test_seed_max_is_the_largest_seed_keras_numpy_and_derive_seed_accept():
    import numpy as np
    import tensorflow as tf

    from privacy.randomness import derive_seed

    tf.keras.utils.set_random_seed(SEED_MAX)
    np.random.default_rng(SEED_MAX)
    derive_seed(SEED_MAX, "centralized")
    with pytest.raises(ValueError):
        tf.keras.utils.set_random_seed(SEED_MAX + 1)
    tf.keras.utils.set_random_seed(0)


@pytest.mark.parametrize("kind", ["centralized", "federated", "tune"])
@pytest.mark.parametrize("seed", [2**64, SEED_MAX + 1, -1, 1.5])
def test_configs_refuse_seeds_a_consumer_would_refuse(kind, seed):
    with pytest.raises(ValueError, match=r"--seed must be"):
        CONFIGS[kind](seed=seed)
    CONFIGS[kind](seed=SEED_MAX)  # the largest one works


def test_comparison_refuses_seeds_out_of_range():
    with pytest.raises(ValueError, match=r"--seeds must be in \[0, 4294967295\]"):
        ComparisonConfig(seeds=(0, 2**32))


# ---------------------------------------------------------------- float settings


@pytest.mark.parametrize("value", [1e300, math.inf, -math.inf, math.nan])
@pytest.mark.parametrize(
    "kind, field",
    [
        ("centralized", "learning_rate"),
        ("centralized", "l2_norm_clip"),
        ("centralized", "momentum"),
        ("federated", "client_learning_rate"),
        ("federated", "server_learning_rate"),
        ("federated", "clip_norm"),
        ("federated", "fedprox_mu"),
        ("tune", "score_noise"),
        ("compare", "central_learning_rate"),
        ("compare", "fed_clip"),
    ],
)
def test_configs_refuse_floats_float32_cannot_hold(kind, field, value):
    with pytest.raises(ValueError, match=f"--{field} must be a finite number"):
        CONFIGS[kind](**{field: value})


@pytest.mark.parametrize("field", ["noise_multiplier", "target_epsilon", "delta"])
def test_privacy_floats_are_checked_too(field):
    for kind in ("centralized", "federated"):
        with pytest.raises(ValueError, match=f"--{field} must be a finite number"):
            CONFIGS[kind](**{field: math.inf})
    with pytest.raises(ValueError, match="--target_epsilon must be a finite number"):
        TuningConfig(math.inf, RunsDistribution("poisson", 3.0))


def test_floats_float32_holds_pass():
    CentralizedConfig(learning_rate=1e38, l2_norm_clip=1e-30)
    with pytest.raises(ValueError, match="every learning_rate of the search space"):
        _tuning(space=SearchSpace(learning_rate=(0.1, 1e300)))


# ---------------------------------------------------------------- counts


def test_epochs_and_rounds_have_a_sane_bound():
    CentralizedConfig(epochs=MAX_EPOCHS)
    with pytest.raises(ValueError, match="--epochs must be <= 1,000,000"):
        CentralizedConfig(epochs=10**12)
    FederatedConfig(rounds=MAX_ROUNDS)
    with pytest.raises(ValueError, match="--rounds must be <= 10,000,000"):
        FederatedConfig(rounds=10**12)
    with pytest.raises(ValueError, match="--epoch_counts must be <="):
        _tuning(space=SearchSpace(epochs=(10, MAX_EPOCHS + 1)))
    for field, bound in (("central_epochs", MAX_EPOCHS), ("fed_rounds", MAX_ROUNDS)):
        with pytest.raises(ValueError, match=f"--{field} must be <="):
            ComparisonConfig(**{field: bound + 1})


def test_a_non_private_ledger_is_not_allocated_up_front(tmp_path, digits):
    from privacy.accounting import plan_within_budget
    from training import centralized

    ledger = NonPrivateLedger(10**12)
    assert len(ledger) == 10**12 and ledger[0] == ledger[10**12 - 1] == ledger[-1] == math.inf
    assert plan_within_budget(ledger, None, "epoch", "") == 10**12
    with pytest.raises(IndexError):
        ledger[10**12]
    plan = centralized.prepare(CentralizedConfig(epochs=MAX_EPOCHS, root_output_dir=str(tmp_path)), digits)
    assert isinstance(plan.ledger, NonPrivateLedger) and plan.epochs == MAX_EPOCHS


# ---------------------------------------------------------------- divergence


def test_divergence_names_what_is_not_finite():
    assert divergence({"test loss": 0.5}, [[1.0, 2.0]]) is None
    assert divergence({"test loss": None, "train loss": math.inf}) == "train loss inf"
    assert divergence({"test loss": math.nan}, [[1.0, math.inf]]) == "test loss nan, non-finite weights"
    stop = Diverged("epoch 3", "test loss nan", "lower --learning_rate", "runs/x")
    assert str(stop).startswith("training diverged at epoch 3 (test loss nan): lower --learning_rate")
    assert Diverged.recorded({"diverged": stop.record()}, "h", "f").where == "epoch 3"
    assert Diverged.recorded({"epsilon": 1.0}, "h", "f") is None and stop.exit_code == 5


def test_a_diverging_comparison_arm_names_the_comparisons_flags(monkeypatch, digits, tmp_path):
    from training import centralized
    from training.comparison import ArmSpec, run_pipeline_arm

    def diverge(*_, **__):
        raise Diverged("epoch 2", "test loss inf", "lower --learning_rate", "f")

    monkeypatch.setattr(centralized, "run", diverge)
    with pytest.raises(
        Diverged, match="at epoch 2 of arm central_nondp_nodp_seed0 .*--central_learning_rate"
    ):
        run_pipeline_arm(ArmSpec("central_nondp", None, 0), ComparisonConfig(), digits, str(tmp_path))


def test_diverging_dp_sgd_stops_with_one_line_and_accounts_the_epochs_taken(run_binary, tmp_path):
    from training import centralized

    settings = dict(learning_rate=1e38, dp=True, noise_multiplier=1.0, epochs=4)
    args = [f"--root_output_dir={tmp_path}", "--experiment_name=d", "--learning_rate=1e38", "--dp",
            "--noise_multiplier=1", "--epochs=4"]  # fmt: skip
    line = _one_line_error(run_binary("train_centralized", *args, timeout=300), code=5)
    assert line.startswith("train_centralized: error: training diverged at epoch ")
    assert "lower --learning_rate or --l2_norm_clip" in line
    out = tmp_path / "d"
    privacy = json.loads((out / "privacy.json").read_text())
    epochs = privacy["diverged"]["epoch"]
    assert 1 <= epochs < 4 and privacy["epochs"] == epochs and not privacy["stopped_early_for_budget"]
    plan = centralized.prepare(
        CentralizedConfig(**settings, root_output_dir=str(tmp_path), experiment_name="d")
    )
    assert privacy["steps"] == epochs * plan.dp.steps_per_epoch  # exactly the steps taken
    assert privacy["epsilon"] == pytest.approx(plan.ledger[epochs - 1])
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == epochs and not (out / "model").exists()
    before = _snapshot(out)
    with pytest.raises(Diverged, match=f"at epoch {epochs} "):  # a rerun says it again, trains nothing
        centralized.launch(plan, verbose=False)
    assert _snapshot(out) == before


def test_a_federated_round_whose_client_updates_all_diverge_stops_the_run(tmp_path, digits):
    from training import federated

    common = dict(num_clients=20, clients_per_round=5, client_epochs=1, rounds=3, checkpoint_every=2,
                  root_output_dir=str(tmp_path), experiment_name="f")  # fmt: skip
    config = FederatedConfig(**common, client_learning_rate=1e38)
    with pytest.raises(Diverged, match="at round 1 .*every client update non-finite"):
        federated.run(config, digits, verbose=False)
    out = tmp_path / "f"
    privacy = json.loads((out / "privacy.json").read_text())
    assert privacy["rounds"] == privacy["steps"] == 1 and privacy["diverged"]["round"] == 1
    assert not (out / "model").exists() and len((out / "metrics.csv").read_text().splitlines()) == 2
    before = _snapshot(out)
    with pytest.raises(Diverged, match="at round 1 "):  # the same command: said again, nothing redone
        federated.run(config, digits, verbose=False)
    with pytest.raises(ValueError, match="holds a different run"):  # other settings: not mixed in
        federated.plan_run(FederatedConfig(**common, client_learning_rate=0.1), digits)
    assert _snapshot(out) == before


# ---------------------------------------------------------------- the binaries: one line, nothing written


@pytest.mark.parametrize(
    "binary, args, message",
    [
        ("train_federated", ["--seed=18446744073709551616"], "--seed must be in [0, 4294967295]"),
        ("train_centralized", ["--learning_rate=1e300"], "--learning_rate must be a finite number"),
        ("train_centralized", ["--epochs=1000000000000"], "--epochs must be <= 1,000,000"),
        ("train_federated", ["--rounds=1000000000000"], "--rounds must be <= 10,000,000"),
        ("tune", ["--target_epsilon=3", "--learning_rates=0.1,1e300"], "--learning_rates must be"),
        ("train_centralized", ["--experiment_name=" + "a" * 300], "--experiment_name is 300 bytes long"),
        ("tune", ["--target_epsilon=3", "--experiment_name=" + "a" * 300], "--experiment_name is 300 bytes"),
        ("train_federated", ["--experiment_name=a\nb"], "--experiment_name must not contain control"),
        # two flags that fail their validators: both named, on one line
        ("train_centralized", ["--learning_rate=-1", "--l2_norm_clip=-1"], "> 0; flag --l2_norm_clip"),
    ],
)
def test_hostile_flags_are_one_line_and_write_nothing(run_binary, tmp_path, binary, args, message):
    root = tmp_path / "runs"
    proc = run_binary(binary, f"--root_output_dir={root}", *args, timeout=300)
    assert message in _one_line_error(proc)
    assert not root.exists()


def test_the_result_line_says_n_a_for_a_metric_the_test_split_cannot_measure():
    from pipelines._app import result_line

    line = result_line({"test_auc": math.nan, "test_average_precision": 0.5}, 0.9, "statement")
    assert line == "test accuracy 0.9000; auc n/a; average_precision 0.5000; statement"
