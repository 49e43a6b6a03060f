"""The train_federated binary: clear errors, nothing written for bad runs, budget stop, SIGKILL resume."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from privacy import accounting
from privacy.config import DpFedAvgConfig
from privacy.sampling import sample_clients
from tests.pipelines.test_bad_input import _one_line_error, _snapshot
from training.federated.experiment import FederatedConfig, noise_seed

BINARY = [sys.executable, "-m", "pipelines.train_federated"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--aggregator=fixed"], "needs --noise_multiplier or --target_epsilon"),
        (["--noise_multiplier=1"], "need a DP aggregator"),
        (["--aggregator=adaptive", "--noise_multiplier=5"], "--clients_per_round >= 51"),
        (["--clients_per_round=400"], "clients_per_round"),
        (["--aggregator=tree", "--noise_multiplier=1", "--rounds=20"], "at most once"),
        (["--dataset=emnist", "--partition=natural", "--data_dir=/nonexistent"], "emnist_all.sqlite"),
    ],
)
def test_binary_bad_settings_give_clear_errors(tmp_path, args, message, repo, binary_env):
    out = subprocess.run(
        BINARY + [f"--root_output_dir={tmp_path}", *args],
        cwd=repo,
        env=binary_env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert message in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "federated" / "flags.txt").exists()  # nothing written for a bad run


def _read_metrics(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_dp_run_end_to_end_outputs_budget_stop_and_empty_rounds(tmp_path, binary_env, assert_no_workers_left):
    """Adaptive DP-FedAvg on digits via the binary: stops before the budget, noise-only rounds."""
    common = dict(num_clients=20, clients_per_round=1, rounds=6, noise_multiplier=0.5)
    dp = DpFedAvgConfig(**common, aggregator="adaptive", clipped_count_stddev=1.0)
    ledger = accounting.fedavg_epsilon_per_round(dp)
    target = (ledger[3] + ledger[4]) / 2  # affords exactly 4 rounds

    def sampling_seed(seed: int) -> int:  # the run's client sampling seed, derived from --seed
        return noise_seed(FederatedConfig(seed=seed, experiment_name="dp"))

    seed = next(
        s for s in range(100) if any(len(sample_clients(dp, r, sampling_seed(s))) == 0 for r in range(4))
    )
    empty = sum(len(sample_clients(dp, r, sampling_seed(seed))) == 0 for r in range(4))
    args = [
        f"--root_output_dir={tmp_path}",
        "--experiment_name=dp",
        *[f"--{k}={v}" for k, v in common.items()],
        "--aggregator=adaptive",
        "--clipped_count_stddev=1.0",
        f"--target_epsilon={target}",
        f"--seed={seed}",
        "--eval_every=2",
        "--checkpoint_every=3",
        "--client_epochs=1",
    ]
    out = subprocess.run(
        BINARY + args, cwd=tmp_path, env=binary_env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert_no_workers_left(str(tmp_path))
    assert "stopped after 4 rounds" in out.stdout
    run_dir = tmp_path / "dp"
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert privacy["unit"] == "user" and privacy["rounds"] == 4 and privacy["steps"] == 4
    assert privacy["epsilon"] == pytest.approx(ledger[3]) and privacy["epsilon"] <= target
    assert privacy["clients_per_round"] == 1 and privacy["num_clients"] == 20
    assert "empty_rounds" not in privacy  # a statistic of the sampling: not released by a DP run
    assert privacy["value_noise_multiplier"] > privacy["noise_multiplier"] == 0.5
    assert privacy["stopped_early_for_budget"] is True
    rows = _read_metrics(run_dir / "metrics.csv")
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["epsilon"]) for r in rows] == pytest.approx(ledger[:4])
    assert all(float(r["aggregator/dp_query_metrics/clip"]) > 0 for r in rows)
    # the sampled clients' statistics (no DP covers them) only in not_for_release/
    unreleased = ("clients", "train_loss", "train_accuracy", "train_num_examples", "round_time_s")
    assert not set(rows[0]) & set(unreleased), rows[0]
    full = _read_metrics(run_dir / "not_for_release" / "round_metrics.csv")
    assert set(unreleased) <= set(full[-1]) and sum(int(r["clients"]) == 0 for r in full) == empty >= 1
    assert "train_loss" not in out.stdout and "clients=" not in out.stdout
    assert "--aggregator=adaptive" in (run_dir / "flags.txt").read_text()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"epsilon", "aggregator/clip", "test_accuracy"} <= tags
    assert not any(t.startswith("train_") or t in ("clients", "round_time_s") for t in tags), tags

    import tensorflow as tf

    from data.datasets import load_digits

    model = tf.keras.models.load_model(str(run_dir / "model"))
    ds = load_digits(seed=seed)
    logits = model.predict(ds.x_test, verbose=0)
    acc_reloaded = float(np.mean(np.argmax(logits, 1) == ds.y_test))
    assert acc_reloaded == pytest.approx(float(rows[-1]["test_accuracy"]), abs=1e-6)


@pytest.mark.slow
def test_resume_after_sigkill_counts_each_round_once(tmp_path, binary_env, assert_no_workers_left):
    args = BINARY + [
        f"--root_output_dir={tmp_path}",
        "--experiment_name=resume",
        "--num_clients=60",
        "--clients_per_round=6",
        "--rounds=6",
        "--checkpoint_every=2",
        "--eval_every=3",
        "--aggregator=fixed",
        "--noise_multiplier=0.8",
        "--client_epochs=1",
    ]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=binary_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    killed_after = None
    try:
        for line in proc.stdout:
            if line.startswith("[federated] round 3/6"):  # rounds 1-2 are checkpointed, 3 is not
                proc.send_signal(signal.SIGKILL)
                killed_after = 3
                break
    finally:
        proc.kill()
        proc.wait(30)
    assert killed_after == 3, "the run never reached round 3"
    assert_no_workers_left(str(tmp_path))  # even SIGKILL leaves no worker behind
    run_dir = tmp_path / "resume"
    assert [int(r["round"]) for r in _read_metrics(run_dir / "metrics.csv")] == [1, 2]

    # A file the resume rewrites that it could not replace: refused before anything is touched.
    (run_dir / "privacy.json").rename(run_dir / "privacy.json.aside")
    (run_dir / "privacy.json").mkdir()
    before_files = _snapshot(run_dir)
    refused = subprocess.run(args, cwd=tmp_path, env=binary_env, capture_output=True, text=True, timeout=600)
    assert "privacy.json is not a regular file" in _one_line_error(refused)
    assert _snapshot(run_dir) == before_files
    (run_dir / "privacy.json").rmdir()
    (run_dir / "privacy.json.aside").rename(run_dir / "privacy.json")

    # What a killed run leaves half-done: a TensorBoard event of a round after the checkpoint (another
    # noise draw), TFF's half-saved checkpoint, an atomic write's temporary: none survives the resume.
    import tensorflow as tf

    with tf.summary.create_file_writer(str(run_dir / "tensorboard")).as_default(step=3):
        tf.summary.scalar("stale_round_3", 1.0)
    (run_dir / "checkpoints" / "program_state_3_temp1234").mkdir()
    (run_dir / ".tmp-abcd_123metrics.csv").write_text("half")
    out = subprocess.run(args, cwd=tmp_path, env=binary_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_no_workers_left(str(tmp_path))
    assert not (run_dir / "checkpoints" / "program_state_3_temp1234").exists()
    assert not (run_dir / ".tmp-abcd_123metrics.csv").exists()
    events = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    scalars = {}
    for event in tf.compat.v1.train.summary_iterator(str(events[0])):
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append(event.step)
    assert "stale_round_3" not in scalars
    assert scalars["epsilon"] == [1, 2, 3, 4, 5, 6]  # the kept rounds replayed, then the new ones
    assert "resuming after round 2" in out.stdout
    assert "round 3/6" in out.stdout and "round 1/6" not in out.stdout
    rows = _read_metrics(run_dir / "metrics.csv")
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    dp = DpFedAvgConfig(60, 6, 6, noise_multiplier=0.8, aggregator="fixed")
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert privacy["steps"] == 6 and privacy["rounds"] == 6
    assert privacy["epsilon"] == pytest.approx(accounting.fedavg_epsilon(dp, 6))
    # Same clients as an uninterrupted run would have drawn.
    full = _read_metrics(run_dir / "not_for_release" / "round_metrics.csv")
    seed = noise_seed(FederatedConfig(seed=0, experiment_name="resume"))
    assert [int(r["clients"]) for r in full] == [len(sample_clients(dp, r, seed)) for r in range(6)]

    # Killed after its last checkpoint, before its model was saved: the same command finishes it.
    import shutil

    shutil.rmtree(run_dir / "model")
    again = subprocess.run(args, cwd=tmp_path, env=binary_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "model" / "saved_model.pb").exists()
    assert json.loads((run_dir / "privacy.json").read_text())["epsilon"] == privacy["epsilon"]

    # A rerun with other settings must not touch the run's files.
    before = (run_dir / "privacy.json").read_text()
    bad = subprocess.run(
        [a if a != "--noise_multiplier=0.8" else "--noise_multiplier=2" for a in args],
        cwd=tmp_path,
        env=binary_env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "different run" in bad.stderr
    assert (run_dir / "privacy.json").read_text() == before
    assert "--noise_multiplier=0.8" in (run_dir / "flags.txt").read_text()
