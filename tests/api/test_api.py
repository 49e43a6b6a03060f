"""The Python API (`import ppml`) gives what the binaries give for the same settings, from any data form."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pandas as pd
import pytest

import ppml
from data.datasets import load_digits


def _metrics(run_dir) -> list[dict[str, str]]:
    """metrics.csv without its timings (a non-private run keeps them; they differ run to run)."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in row.items() if not k.endswith("_time_s")} for row in csv.DictReader(f)]


def _privacy(run_dir) -> dict:
    with open(os.path.join(run_dir, "privacy.json")) as f:
        return json.load(f)


def test_import_is_light_and_bad_settings_are_one_line_config_errors():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import ppml, sys; print('tensorflow' in sys.modules)"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "False"
    with pytest.raises(ppml.ConfigError, match="exactly one of target_epsilon and noise_multiplier"):
        ppml.DP()
    with pytest.raises(ppml.ConfigError, match="unknown settings \\['epoch'\\]"):
        ppml.train_centralized(epoch=3)
    with pytest.raises(ppml.ConfigError) as e:
        ppml.train_centralized(data=(np.zeros((3, 2)), np.zeros(4, np.int32)))
    assert "\n" not in str(e.value) and "3 rows" in str(e.value)
    with pytest.raises(ppml.ConfigError, match="exceeds"):
        ppml.budget(10, 100, 1, target_epsilon=1.0)


def test_budget_equals_the_binary(run_binary):
    flags = ["--num_examples=60000", "--batch_size=256", "--epochs=60", "--target_epsilon=3", "--output=json"]
    proc = run_binary("budget", *flags)
    assert proc.returncode == 0, proc.stderr
    assert ppml.budget(60000, 256, 60, target_epsilon=3.0) == json.loads(proc.stdout)


@pytest.mark.slow
def test_train_centralized_equals_the_binary(run_binary, tmp_path):
    """Same settings and seed: the same metrics.csv and privacy.json, and the model comes back."""
    flags = ["--dp", "--target_epsilon=3", "--epochs=4", "--batch_size=256", "--seed=1"]
    proc = run_binary("train_centralized", *flags, f"--root_output_dir={tmp_path / 'cli'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = ppml.train_centralized("mlp", "digits", ppml.DP(target_epsilon=3), epochs=4, batch_size=256, seed=1,
                                 output_dir=str(tmp_path / "api"))  # fmt: skip
    cli_dir, api_dir = tmp_path / "cli" / "centralized", tmp_path / "api" / "centralized"
    assert _metrics(api_dir) == _metrics(cli_dir)
    assert _privacy(api_dir) == _privacy(cli_dir) == res.privacy
    assert res.metrics[-1]["test_accuracy"] == pytest.approx(float(_metrics(cli_dir)[-1]["test_accuracy"]))
    ds = load_digits(seed=1)
    accuracy = float(np.mean(np.argmax(res.model.predict(ds.x_test, verbose=0), 1) == ds.y_test))
    assert accuracy == pytest.approx(res.test_accuracy, abs=1e-6)


@pytest.mark.slow
def test_train_federated_equals_the_binary(run_binary, tmp_path):
    flags = ["--num_clients=40", "--clients_per_round=8", "--rounds=3", "--client_epochs=1", "--eval_every=3",
             "--aggregator=fixed", "--noise_multiplier=0.8"]  # fmt: skip
    proc = run_binary("train_federated", *flags, f"--root_output_dir={tmp_path / 'cli'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    settings = dict(num_clients=40, clients_per_round=8, rounds=3, client_epochs=1, eval_every=3)
    res = ppml.train_federated("mlp", "digits", ppml.DP(noise_multiplier=0.8), **settings,
                               output_dir=str(tmp_path / "api"))  # fmt: skip
    cli_dir, api_dir = tmp_path / "cli" / "federated", tmp_path / "api" / "federated"
    assert _metrics(api_dir) == _metrics(cli_dir)
    assert _privacy(api_dir) == _privacy(cli_dir) == res.privacy
    assert res.privacy["unit"] == "user" and res.model is not None


@pytest.mark.slow
def test_a_dataframe_trains_as_the_same_csv_does_through_the_binary(run_binary, tmp_path):
    ds = load_digits()
    pixels = ds.x_train.reshape(len(ds.x_train), -1)
    frame = pd.DataFrame(pixels, columns=[f"p{i}" for i in range(64)]).assign(label=ds.y_train)
    path = tmp_path / "digits.csv"
    frame.to_csv(path, index=False)
    flags = ["--dataset=csv", f"--data_dir={path}", "--epochs=3", "--batch_size=128", "--model=logistic"]
    proc = run_binary("train_centralized", *flags, f"--root_output_dir={tmp_path / 'cli'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = ppml.train_centralized("logistic", pd.read_csv(path), epochs=3, batch_size=128,
                                 output_dir=str(tmp_path / "api"))  # fmt: skip
    assert _metrics(tmp_path / "api" / "centralized") == _metrics(tmp_path / "cli" / "centralized")
    assert res.output_dir == str(tmp_path / "api" / "centralized")


@pytest.mark.slow
def test_arrays_and_tf_data_give_the_same_run_and_no_folder_is_left_without_output_dir(tmp_path):
    import tensorflow as tf

    ds = load_digits()
    arrays = (ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    a = ppml.train_centralized("logistic", arrays, ppml.DP(noise_multiplier=1.0), epochs=2, batch_size=128)
    assert a.output_dir is None and a.model is not None and a.privacy["dp"] is True
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    b = ppml.train_centralized("logistic", (x, y), ppml.DP(noise_multiplier=1.0), epochs=2, batch_size=128)
    c = ppml.train_centralized("logistic", tf.data.Dataset.from_tensor_slices((x, y)).batch(100),
                               ppml.DP(noise_multiplier=1.0), epochs=2, batch_size=128)  # fmt: skip
    assert b.metrics == c.metrics  # the same rows, split by the same seed
    assert b.privacy["num_examples"] == len(x) - round(0.2 * len(x))


@pytest.mark.slow
def test_tune_and_compare_equal_the_binaries(run_binary, tmp_path):
    tune_flags = ["--target_epsilon=3", "--epoch_counts=3", "--batch_sizes=256", "--widths=32"]
    proc = run_binary("tune", *tune_flags, f"--root_output_dir={tmp_path / 'cli'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from training.tuning import SearchSpace

    space = SearchSpace(epochs=(3,), batch_size=(256,), width=(32,))
    res = ppml.tune("mlp", "digits", target_epsilon=3.0, space=space, output_dir=str(tmp_path / "api"))
    assert _privacy(tmp_path / "api" / "tune") == _privacy(tmp_path / "cli" / "tune") == res.privacy
    with open(tmp_path / "cli" / "tune" / "result.json") as f:
        assert res.test_accuracy == json.load(f)["selected"]["test_accuracy"]
    flags = ["--arms=central_dp,fed_dp", "--target_epsilons=3", "--central_epochs=3", "--fed_rounds=3",
             "--audit_canaries=50", "--audit_example_canaries=0", "--audit_canary_clients=0",
             "--audit_reference_models=0"]  # fmt: skip
    proc = run_binary("compare", *flags, f"--root_output_dir={tmp_path / 'cli'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    comparison = ppml.compare("mlp", "digits", target_epsilons=(3.0,), arms=("central_dp", "fed_dp"),
                              central_epochs=3, fed_rounds=3, audit_canaries=50, audit_example_canaries=0,
                              audit_canary_clients=0, audit_reference_models=0,
                              output_dir=str(tmp_path / "api"))  # fmt: skip
    with open(tmp_path / "cli" / "comparison" / "results.csv") as f:  # paths aside, the same table
        cli = f.read().replace(str(tmp_path / "cli"), "ROOT")
    with open(os.path.join(comparison.output_dir, "results.csv")) as f:
        assert f.read().replace(str(tmp_path / "api"), "ROOT") == cli
