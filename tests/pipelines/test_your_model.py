"""--model=PATH.py:FUNCTION / PATH.keras through the real binaries: a bad model is one line on stderr,
exit 2 and nothing written, in every binary; the shipped example trains on the ghost engine."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from tests.pipelines.test_bad_input import _one_line_error, _snapshot

EXAMPLE = "examples/my_model.py:build"
HEADER = "import tensorflow as tf\nL = tf.keras.layers\n"
BAD_MODELS = {  # file name -> (source, what the error line says)
    "three_units.py": (
        "def build(s, n):\n    return tf.keras.Sequential([L.InputLayer(s), L.Flatten(), L.Dense(3)])\n",
        "outputs shape (None, 3), but the labels need (None, 10): its last layer must output 10 logits",
    ),
    "no_flatten.py": (
        "def build(s, n):\n    return tf.keras.Sequential([L.InputLayer(s), L.Dense(n)])\n",
        "outputs shape (None, 8, 8, 10), but the labels need (None, 10)",
    ),
    "raises.py": (
        "import torch_that_is_not_installed\n",
        "raises.py raised ModuleNotFoundError: No module named",
    ),
    "other_name.py": ("def make(s, n):\n    pass\n", "has no function 'build' (it defines make)"),
}


@pytest.fixture
def bad_models(tmp_path) -> str:
    folder = tmp_path / "models"
    folder.mkdir()
    for name, (source, _) in BAD_MODELS.items():
        (folder / name).write_text(HEADER + textwrap.dedent(source))
    return str(folder)


@pytest.fixture
def earlier(tmp_path):
    """An earlier experiment folder whose files must survive a failed run byte for byte."""
    run = tmp_path / "runs" / "exp"
    run.mkdir(parents=True)
    (run / "flags.txt").write_text("--epochs=3\n")
    (run / "privacy.json").write_text('{"epsilon": 1.0}\n')
    return tmp_path / "runs"


def _refused(run_binary, root, binary: str, model: str, *args: str) -> str:
    before = _snapshot(root)
    proc = run_binary(binary, f"--root_output_dir={root}", "--experiment_name=exp", f"--model={model}", *args)
    line = _one_line_error(proc)
    assert _snapshot(root) == before and os.listdir(root) == ["exp"]  # nothing written, no new folder
    return line


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_a_bad_py_model_is_one_line_and_writes_nothing(run_binary, bad_models, earlier, name):
    line = _refused(run_binary, earlier, "train_centralized", f"{bad_models}/{name}:build", "--dp",
                    "--target_epsilon=3")  # fmt: skip
    assert line.startswith("train_centralized: error: ") and BAD_MODELS[name][1] in line


def test_a_missing_keras_file_is_one_line_and_writes_nothing(run_binary, earlier, tmp_path):
    line = _refused(run_binary, earlier, "train_centralized", str(tmp_path / "public.keras"))
    assert "public.keras does not exist" in line and "model.save" in line


@pytest.mark.parametrize(
    "model, args, message",
    [
        ("resnet", [], "unknown model 'resnet'; expected a built-in model"),
        ("my_model.py", [], "names a file but no function"),
        ("object:0123456789abcdef", [], "in-memory model of the Python API"),
        (
            "mlp",
            ["--init=pretrained"],
            "--init=pretrained starts from the saved weights of --model=PATH.keras",
        ),
    ],
)
def test_the_model_flag_form_is_checked_at_parse_time(run_binary, earlier, model, args, message):
    assert message in _refused(run_binary, earlier, "train_centralized", model, *args)


@pytest.mark.parametrize(
    "binary, args",
    [
        ("train_federated", ["--rounds=2"]),
        ("compare", ["--arms=central_dp,fed_dp", "--target_epsilons=3"]),
        ("tune", ["--target_epsilon=3"]),
    ],
)
def test_every_binary_refuses_a_bad_model_before_writing(run_binary, bad_models, earlier, binary, args):
    line = _refused(run_binary, earlier, binary, f"{bad_models}/three_units.py:build", *args)
    assert line.startswith(f"{binary}: error: ") and BAD_MODELS["three_units.py"][1] in line


def test_a_subclassed_model_says_which_engine_and_why(run_binary, tmp_path):
    (tmp_path / "sub.py").write_text(HEADER + textwrap.dedent("""
        class Net(tf.keras.Model):
            def __init__(self, n):
                super().__init__()
                self.flat, self.out = L.Flatten(), L.Dense(n)

            def call(self, x, training=None):
                return self.out(self.flat(x))

        def build(s, n):
            return Net(n)
    """))  # fmt: skip
    proc = run_binary("train_centralized", f"--model={tmp_path}/sub.py:build", "--dp", "--noise_multiplier=1",
                      "--epochs=1", f"--root_output_dir={tmp_path}/runs")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "engine: vectorized (ghost: engine 'ghost' walks the model's layer graph" in proc.stdout
    privacy = json.loads((tmp_path / "runs" / "centralized" / "privacy.json").read_text())
    assert privacy["engine"] == "vectorized" and "subclassed" in privacy["engine_reason"]


def test_the_example_model_trains_with_dp_on_the_ghost_engine(run_binary, tmp_path):
    """The floor: the shipped two-branch example at epsilon 3 on digits, on the fastest engine."""
    proc = run_binary("train_centralized", f"--model={EXAMPLE}", "--dp", "--target_epsilon=3",
                      f"--root_output_dir={tmp_path}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "engine:" not in proc.stdout  # auto picked ghost: nothing to explain
    privacy = json.loads((tmp_path / "centralized" / "privacy.json").read_text())
    assert privacy["engine"] == "ghost" and privacy["engine_reason"] is None
    assert privacy["epsilon"] <= 3.0
    accuracy = float(proc.stdout.split("test accuracy ")[1].split(";")[0])
    assert accuracy >= 0.90, proc.stdout  # measured 0.939 (seed 0)


@pytest.mark.slow
def test_the_example_model_runs_federated_and_in_the_comparison(run_binary, tmp_path):
    fed = run_binary("train_federated", f"--model={EXAMPLE}", "--rounds=3", "--num_clients=30",
                     "--clients_per_round=5", "--aggregator=fixed", "--noise_multiplier=0.5",
                     f"--root_output_dir={tmp_path}")  # fmt: skip
    assert fed.returncode == 0, fed.stderr[-2000:]
    assert os.path.isdir(tmp_path / "federated" / "model")
    compare = run_binary("compare", f"--model={EXAMPLE}", "--arms=central_dp,fed_dp", "--target_epsilons=3",
                         "--central_epochs=5", "--fed_rounds=3", "--fed_num_clients=20",
                         "--fed_clients_per_round=5", "--audit_reference_models=1", "--audit_canaries=50",
                         "--audit_example_canaries=10", "--audit_canary_clients=4",
                         f"--root_output_dir={tmp_path}")  # fmt: skip
    assert compare.returncode == 0, compare.stderr[-2000:]
    results = (tmp_path / "comparison" / "results.csv").read_text()
    assert "central_dp_eps3_seed0" in results and "fed_dp_eps3_seed0" in results
