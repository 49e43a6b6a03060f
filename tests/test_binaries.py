"""Every binary answers --help quickly without importing TensorFlow Federated; budget's JSON."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = sorted(
    f"pipelines.{f[:-3]}"
    for f in os.listdir(os.path.join(REPO, "pipelines"))
    if f.endswith(".py") and "def main(argv" in open(os.path.join(REPO, "pipelines", f)).read()
)


def test_there_are_binaries():
    assert {"pipelines.train_centralized", "pipelines.budget"} <= set(BINARIES)


@pytest.mark.parametrize("module", BINARIES)
def test_help_is_fast_and_skips_tff(module):
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['{module}', '--help']\n"
        "try:\n"
        f"    runpy.run_module('{module}', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "bad = [m for m in ('tensorflow_federated', 'tensorflow') if m in sys.modules]\n"
        "print('HEAVY:' + ','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "HEAVY:" in proc.stdout, proc.stderr[-2000:]
    heavy = proc.stdout.split("HEAVY:")[1].strip()
    assert "tensorflow_federated" not in heavy, f"{module} --help imports TFF"
    assert heavy == "", f"{module} --help imports {heavy}"
    assert "--" in proc.stdout  # printed flag help


def test_budget_json():
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.budget", "--num_examples=60000", "--batch_size=256", "--epochs=60",
         "--noise_multiplier=1.1", "--delta=1e-5", "--output=json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["epsilon"] == pytest.approx(2.60, abs=0.01)
    for key in ("epsilon", "delta", "noise_multiplier", "accountant", "sampling", "steps"):
        assert key in report
    assert report["steps"] == 14100 and report["sampling"] == "poisson"


def test_budget_target_epsilon_and_errors():
    base = [
        sys.executable,
        "-m",
        "pipelines.budget",
        "--num_examples=1437",
        "--batch_size=128",
        "--epochs=20",
    ]
    proc = subprocess.run(
        [*base, "--target_epsilon=3", "--output=json"], cwd=REPO, capture_output=True, text=True
    )
    report = json.loads(proc.stdout)
    assert report["epsilon"] <= 3.0 and report["noise_multiplier"] > 0
    proc = subprocess.run([*base, "--sampling=shuffle", "--noise_multiplier=1", "--output=json"], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert json.loads(proc.stdout)["sampling"] == "shuffle"
    for bad in (["--target_epsilon=-1"], ["--noise_multiplier=1", "--target_epsilon=3"], ["--delta=2"]):
        proc = subprocess.run([*base, *bad], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_console_scripts_show_their_flags():
    script = os.path.join(os.path.dirname(sys.executable), "ppml-train-centralized")
    if not os.path.exists(script):
        pytest.skip("project not installed as a package in this environment")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert "--target_epsilon" in proc.stdout and "--local_dp_label_epsilon" in proc.stdout
