"""A real TensorBoard server over the comparison's logdir: runs, scalars and hparams read back
through its HTTP API, as the dashboard would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from training import comparison

# TensorBoard 2.14 imports pkg_resources, which setuptools >= 81 no longer ships. When it is
# missing, the same server is started through this shim (entry points via importlib.metadata).
_PKG_RESOURCES_SHIM = """
import importlib.metadata, sys, types
shim = types.ModuleType("pkg_resources")
class _EntryPoint:
    def __init__(self, ep): self._ep = ep
    def resolve(self): return self._ep.load()
shim.iter_entry_points = lambda group: [_EntryPoint(e) for e in importlib.metadata.entry_points(group=group)]
from packaging.version import parse as _parse
shim.parse_version = _parse
sys.modules["pkg_resources"] = shim
from tensorboard.main import run_main
sys.argv[0] = "tensorboard"
run_main()
"""


def _tensorboard_command() -> list[str]:
    tb = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    probe = subprocess.run([sys.executable, "-c", "import pkg_resources"], capture_output=True)
    if probe.returncode == 0 and os.path.exists(tb):
        return [tb]
    return [sys.executable, "-c", _PKG_RESOURCES_SHIM]


def _get(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def _post(base: str, path: str, body: dict):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def comparison_logdir(comparison_config, fake_arms, fake_dataset):
    fake = fake_arms()
    cfg = comparison_config(target_epsilons=(3.0,))
    res = comparison.run_comparison(
        cfg, dataset=fake_dataset(), run_arm=fake.run, auditor=fake.audit, log=lambda s: None
    )
    return os.path.join(res.output_dir, "tensorboard"), [s.arm_id for s in comparison.arm_grid(cfg)]


@pytest.fixture
def tensorboard_server(comparison_logdir, repo):
    logdir, arm_ids = comparison_logdir
    log_path = os.path.join(os.path.dirname(logdir), "tensorboard_server.log")
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        _tensorboard_command()
        + [f"--logdir={logdir}", "--host=127.0.0.1", "--port=0", "--load_fast=false", "--reload_interval=1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=repo,
    )
    try:
        base = None
        deadline = time.time() + 90
        while time.time() < deadline and base is None:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"tensorboard exited with {proc.returncode}:\n{log.read()[-3000:]}")
            log.seek(0)
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", log.read())
            base = f"http://127.0.0.1:{m.group(1)}" if m else None
            time.sleep(0.3)
        assert base, "tensorboard did not report its address"
        while time.time() < deadline:  # wait until every run has been loaded
            try:
                if set(arm_ids) <= set(_get(base, "/data/runs")):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        yield base, arm_ids
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
        assert proc.poll() is not None  # no orphan


@pytest.mark.slow
def test_tensorboard_serves_runs_scalars_and_hparams(tensorboard_server):
    base, arm_ids = tensorboard_server
    runs = _get(base, "/data/runs")
    assert set(arm_ids) <= set(runs), runs

    tags = _get(base, "/data/plugin/scalars/tags")
    run = "central_dp_eps3_seed0"
    assert {"comparison/test_accuracy", "comparison/attack_auc", "history/test_accuracy"} <= set(tags[run])
    points = _get(base, f"/data/plugin/scalars/scalars?run={run}&tag=comparison/attack_auc")
    assert len(points) == 1 and points[0][2] == pytest.approx(0.52)
    history = _get(base, f"/data/plugin/scalars/scalars?run={run}&tag=history/test_accuracy")
    assert [p[1] for p in history] == [1, 2]
    # non-DP runs have an infinite epsilon, which is not logged as a scalar
    assert "comparison/epsilon" not in tags["central_nondp_nodp_seed0"]

    experiment = _post(base, "/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {
        "arm",
        "unit",
        "target_epsilon",
        "noise_multiplier",
        "l2_norm_clip",
        "clients_per_round",
    } <= hparams
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"comparison/test_accuracy", "comparison/attack_auc", "comparison/epsilon"} <= metrics

    groups = _post(
        base,
        "/data/plugin/hparams/session_groups",
        {
            "experimentName": "",
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
            "colParams": [{"hparam": "arm"}],
            "startIndex": 0,
            "sliceSize": 100,
        },
    )
    sessions = {g["name"]: g for g in groups["sessionGroups"]}
    assert len(sessions) == len(arm_ids)
    by_arm = {}
    for g in groups["sessionGroups"]:
        by_arm.setdefault(g["hparams"]["arm"], []).append(g)
    fed = by_arm["fed_dp"][0]
    assert fed["hparams"]["unit"] == "user" and fed["hparams"]["clients_per_round"] == 10
    assert fed["hparams"]["target_epsilon"] == 3
    acc = {m["name"]["tag"]: m["value"] for m in fed["metricValues"]}
    assert acc["comparison/test_accuracy"] == pytest.approx(0.95 - 0.3 / 4)
