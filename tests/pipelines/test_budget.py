"""The budget binary: pinned epsilon as JSON, calibration to a target, clear errors."""

import json
import subprocess
import sys

import pytest


def test_budget_json(repo):
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.budget", "--num_examples=60000", "--batch_size=256", "--epochs=60",
         "--noise_multiplier=1.1", "--delta=1e-5", "--output=json"],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["epsilon"] == pytest.approx(2.60, abs=0.01)
    for key in ("epsilon", "delta", "noise_multiplier", "accountant", "sampling", "steps"):
        assert key in report
    assert report["steps"] == 14100 and report["sampling"] == "poisson"


def test_budget_target_epsilon_and_errors(repo):
    base = [
        sys.executable,
        "-m",
        "pipelines.budget",
        "--num_examples=1437",
        "--batch_size=128",
        "--epochs=20",
    ]
    proc = subprocess.run(
        [*base, "--target_epsilon=3", "--output=json"], cwd=repo, capture_output=True, text=True
    )
    report = json.loads(proc.stdout)
    assert report["epsilon"] <= 3.0 and report["noise_multiplier"] > 0
    proc = subprocess.run([*base, "--sampling=shuffle", "--noise_multiplier=1", "--output=json"], cwd=repo,
                          capture_output=True, text=True)  # fmt: skip
    assert json.loads(proc.stdout)["sampling"] == "shuffle"
    for bad in (["--target_epsilon=-1"], ["--noise_multiplier=1", "--target_epsilon=3"], ["--delta=2"]):
        proc = subprocess.run([*base, *bad], cwd=repo, capture_output=True, text=True)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
