"""Every binary answers --help with its own and its shared flags, without importing TensorFlow."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Every module directly in pipelines/ is a binary, except the underscore ones (tested in test_layout).
BINARIES = sorted(
    f[:-3] for f in os.listdir(os.path.join(REPO, "pipelines")) if f.endswith(".py") and not f.startswith("_")
)
# A flag of each binary's own, and shared ones it must show too (defined in pipelines/_flags.py).
HELP_FLAGS = {
    "audit": ["--model_dir", "--dataset", "--seed"],
    "budget": ["--num_examples", "--noise_multiplier", "--target_epsilon", "--delta", "--accountant"],
    "compare": [
        "--arms",
        "--dataset",
        "--model",
        "--delta",
        "--root_output_dir",
        "--experiment_name",
        "--metric",
        "--audit_canaries",
    ],
    "linear_regression_example": ["--epsilons"],
    "predict": ["--prediction_budget"],
    "tff_worker": ["--port"],
    "train_centralized": ["--engine", "--dataset", "--target_epsilon", "--local_dp_label_epsilon", "--seed"],
    "tune": [
        "--num_runs_distribution",
        "--mean_runs",
        "--learning_rates",
        "--pipeline",
        "--round_counts",
        "--seed",
    ],
    "train_federated": ["--clients_per_round", "--dataset", "--target_epsilon", "--local_dp_label_epsilon"],
}


def test_every_binary_is_listed():
    assert BINARIES == sorted(HELP_FLAGS)


@pytest.mark.parametrize("name", BINARIES)
def test_help_lists_the_flags_and_skips_tensorflow(name):
    module = f"pipelines.{name}"
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
    assert heavy == "", f"{module} --help imports {heavy}"
    for flag in HELP_FLAGS[name]:
        assert f"  {flag}" in proc.stdout, f"{module} --help does not list {flag}"


def test_console_scripts_show_their_flags():
    script = os.path.join(os.path.dirname(sys.executable), "ppml-train-centralized")
    if not os.path.exists(script):
        pytest.skip("project not installed as a package in this environment")
    proc = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert "--target_epsilon" in proc.stdout and "--local_dp_label_epsilon" in proc.stdout
