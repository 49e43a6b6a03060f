"""Federated pipeline: config/DP checks (fast) and end-to-end TFF runs (slow)."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from pipelines import federated
from privacy import accounting, aggregators
from privacy.config import DpFedAvgConfig
from privacy.sampling import sample_clients

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = [sys.executable, "-m", "pipelines.train_federated"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _workers_in(cwd: str) -> list[psutil.Process]:
    """worker_binary processes started from `cwd` (each test runs its binary in its own tmp dir)."""
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if p.info["name"] == "worker_binary" and p.status() != psutil.STATUS_ZOMBIE and p.cwd() == cwd:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _assert_no_workers_left(cwd: str) -> None:
    deadline = time.time() + 10
    while _workers_in(cwd) and time.time() < deadline:
        time.sleep(0.2)
    assert not _workers_in(cwd), "the run left a TFF worker_binary behind"


# ---------------------------------------------------------------- fast: config and DP checks


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


def test_adaptive_noise_split_composes_to_the_accounted_noise():
    dp = DpFedAvgConfig(100, 20, 10, noise_multiplier=0.7, aggregator="adaptive")
    z_v, stddev = aggregators.adaptive_noise_split(dp)
    assert stddev == pytest.approx(1.0)  # 0.05 * 20
    assert z_v > dp.noise_multiplier
    # Two Gaussian queries (value: z_v; count: sensitivity 1/2, stddev sigma) == one with z.
    assert z_v**-2 + (2 * stddev) ** -2 == pytest.approx(dp.noise_multiplier**-2)


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
        "clip",
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
    assert "noise only" in rep["statement"]
    tree = federated.FederatedConfig(aggregator="tree", noise_multiplier=1.0, rounds=10)
    rep = federated.privacy_report(tree, federated.dp_config(tree, 300), 3)
    assert rep["sampling"] == "epoch" and "replace one user" in rep["adjacency"]
    plain = federated.FederatedConfig()
    rep = federated.privacy_report(plain, federated.dp_config(plain, 300), 3)
    assert rep["epsilon"] == math.inf and rep["dp"] is False and rep["unit"] == "user"


def test_population_builds_only_requested_clients_deterministically():
    from data.datasets import load_digits
    from data.federated import from_dataset

    pop = from_dataset(load_digits(), "dirichlet", 300, alpha=1.0, seed=0)
    assert pop.num_clients == 300 and pop.client_sizes().sum() == len(load_digits().x_train)
    dsets = pop.round_datasets([3, 7], epochs=2, batch_size=4, seed=1, round_num=5)
    assert len(dsets) == 2
    xs = np.concatenate([x for x, _ in dsets[0].as_numpy_iterator()])
    assert len(xs) == 2 * pop.client_sizes()[3]
    again = np.concatenate([x for x, _ in pop.client_dataset(3, 2, 4, 1, 5).as_numpy_iterator()])
    assert np.array_equal(xs, again)


def test_help_is_fast_and_never_imports_tensorflow():
    code = (
        "import sys; from pipelines import train_federated; "
        "print('tensorflow' in sys.modules, 'tensorflow_federated' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True)
    assert out.stdout.strip() == "False False", out.stderr
    t0 = time.time()
    out = subprocess.run(BINARY + ["--help"], cwd=REPO, env=_env(), capture_output=True, text=True)
    assert "--clients_per_round" in out.stdout and "Traceback" not in out.stderr  # absl exits 1 on --help
    assert time.time() - t0 < 15


@pytest.mark.parametrize(
    "args, message",
    [
        (["--aggregator=fixed"], "needs --noise_multiplier or --target_epsilon"),
        (["--noise_multiplier=1"], "need a DP --aggregator"),
        (["--aggregator=adaptive", "--noise_multiplier=5"], "--clients_per_round >= 51"),
        (["--clients_per_round=400"], "clients_per_round"),
        (["--aggregator=tree", "--noise_multiplier=1", "--rounds=20"], "at most once"),
        (["--dataset=emnist", "--partition=natural", "--data_dir=/nonexistent"], "emnist_all.sqlite"),
    ],
)
def test_binary_bad_settings_give_clear_errors(tmp_path, args, message):
    out = subprocess.run(
        BINARY + [f"--root_output_dir={tmp_path}", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert message in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "federated" / "flags.txt").exists()  # nothing written for a bad run


# ---------------------------------------------------------------- slow: end-to-end TFF runs


def _read_metrics(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_dp_run_end_to_end_outputs_budget_stop_and_empty_rounds(tmp_path):
    """Adaptive DP-FedAvg on digits via the binary: stops before the budget, noise-only rounds."""
    common = dict(num_clients=20, clients_per_round=1, rounds=6, noise_multiplier=0.5)
    dp = DpFedAvgConfig(**common, aggregator="adaptive", clipped_count_stddev=1.0)
    ledger = accounting.fedavg_epsilon_per_round(dp)
    target = (ledger[3] + ledger[4]) / 2  # affords exactly 4 rounds
    seed = next(s for s in range(100) if any(len(sample_clients(dp, r, s)) == 0 for r in range(4)))
    empty = sum(len(sample_clients(dp, r, seed)) == 0 for r in range(4))
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
    out = subprocess.run(BINARY + args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_no_workers_left(str(tmp_path))
    assert "stopped after 4 rounds" in out.stdout
    run_dir = tmp_path / "dp"
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert privacy["unit"] == "user" and privacy["rounds"] == 4 and privacy["steps"] == 4
    assert privacy["epsilon"] == pytest.approx(ledger[3]) and privacy["epsilon"] <= target
    assert privacy["clients_per_round"] == 1 and privacy["num_clients"] == 20
    assert privacy["empty_rounds"] == empty >= 1
    assert privacy["value_noise_multiplier"] > privacy["noise_multiplier"] == 0.5
    assert privacy["stopped_early_for_budget"] is True
    rows = _read_metrics(run_dir / "metrics.csv")
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["epsilon"]) for r in rows] == pytest.approx(ledger[:4])
    assert all(float(r["aggregator/dp_query_metrics/clip"]) > 0 for r in rows)
    assert "--aggregator=adaptive" in (run_dir / "flags.txt").read_text()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"epsilon", "aggregator/clip", "train_loss", "test_accuracy"} <= tags

    import tensorflow as tf

    from data.datasets import load_digits

    model = tf.keras.models.load_model(str(run_dir / "model"))
    ds = load_digits(seed=seed)
    logits = model.predict(ds.x_test, verbose=0)
    acc_reloaded = float(np.mean(np.argmax(logits, 1) == ds.y_test))
    assert acc_reloaded == pytest.approx(float(rows[-1]["test_accuracy"]), abs=1e-6)


@pytest.mark.slow
def test_resume_after_sigkill_counts_each_round_once(tmp_path):
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
        args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
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
    _assert_no_workers_left(str(tmp_path))  # even SIGKILL leaves no worker behind
    run_dir = tmp_path / "resume"
    assert [int(r["round"]) for r in _read_metrics(run_dir / "metrics.csv")] == [1, 2]

    out = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    _assert_no_workers_left(str(tmp_path))
    assert "resuming after round 2" in out.stdout
    assert "round 3/6" in out.stdout and "round 1/6" not in out.stdout
    rows = _read_metrics(run_dir / "metrics.csv")
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    dp = DpFedAvgConfig(60, 6, 6, noise_multiplier=0.8, aggregator="fixed")
    privacy = json.loads((run_dir / "privacy.json").read_text())
    assert privacy["steps"] == 6 and privacy["rounds"] == 6
    assert privacy["epsilon"] == pytest.approx(accounting.fedavg_epsilon(dp, 6))
    # Same clients as an uninterrupted run would have drawn.
    assert [int(r["clients"]) for r in rows] == [len(sample_clients(dp, r, 0)) for r in range(6)]

    # A rerun with other settings must not touch the run's files.
    before = (run_dir / "privacy.json").read_text()
    bad = subprocess.run(
        [a if a != "--noise_multiplier=0.8" else "--noise_multiplier=2" for a in args],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "different run" in bad.stderr
    assert (run_dir / "privacy.json").read_text() == before
    assert "--noise_multiplier=0.8" in (run_dir / "flags.txt").read_text()


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
        root_output_dir=str(tmp_path),
        experiment_name="tree",
    )
    res = federated.run(tree, ds)
    assert res.rounds_completed == 3 and np.isfinite(res.test_loss)
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
        root_output_dir=str(tmp_path),
        experiment_name="prox",
    )
    res = federated.run(prox, ds)
    assert res.test_accuracy > 0.5  # chance is 0.1
    assert all(r["clients"] == 10 for r in res.history)


@pytest.mark.slow
def test_remote_workers_match_local_execution(tmp_path):
    """--workers: two worker_binary processes on 127.0.0.1 give the local result (no noise)."""
    from data.datasets import load_digits
    from pipelines import tff_runtime

    ds = load_digits()
    common = dict(
        num_clients=40,
        clients_per_round=8,
        rounds=3,
        partition="iid",
        client_sampling="uniform",
        client_epochs=1,
        eval_every=3,
        root_output_dir=str(tmp_path),
    )
    local = federated.run(federated.FederatedConfig(**common, experiment_name="local"), ds)
    workers = tff_runtime.start_local_workers(2)
    try:
        remote = federated.run(
            federated.FederatedConfig(
                **common, experiment_name="remote", workers=tuple(a for a, _ in workers)
            ),
            ds,
        )
    finally:
        tff_runtime.stop_workers(workers)
    assert remote.test_loss == pytest.approx(local.test_loss, rel=1e-5)
    assert [r["train_loss"] for r in remote.history] == pytest.approx(
        [r["train_loss"] for r in local.history]
    )
