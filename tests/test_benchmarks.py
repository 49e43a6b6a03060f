"""The benchmarks' machine-readable output has the fields the README and the issues quote."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_federated_vs_centralized_json(repo):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.federated_vs_centralized", "--output=json", "--rounds=1",
         "--clients_per_round=5", "--novariants"],
        cwd=repo, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "ratio",
        "round_s",
        "fixed_cost_per_client_s",
        "peak_memory_gb",
        "clients_per_round",
        "variants",
    ):
        assert key in result, key
    assert result["ratio"] > 0 and result["clients_per_round"] == 5 and result["client_loop"] == "iterator"
    assert 0 < result["fixed_cost_per_client_s"] < 1 and len(result["variants"]) == 1
