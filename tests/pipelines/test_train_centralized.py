"""The train_centralized binary: bad input is one clear line and keeps earlier results; flagfile reruns."""

import functools
import json

import pytest


@pytest.fixture
def train(run_binary):
    return functools.partial(run_binary, "train_centralized")


def test_binary_bad_input_is_a_clear_error_and_keeps_earlier_results(tmp_path, train):
    run_dir = tmp_path / "keep"
    run_dir.mkdir()
    (run_dir / "privacy.json").write_text('{"epsilon": 1.0}')
    proc = train("--dp", "--target_epsilon=1", "--delta=0.01", f"--root_output_dir={tmp_path}",
                       "--experiment_name=keep")  # fmt: skip
    assert proc.returncode != 0
    assert "1/N" in proc.stderr and "Traceback" not in proc.stderr
    assert (run_dir / "privacy.json").read_text() == '{"epsilon": 1.0}'
    proc = train("--dataset=mnist")
    assert proc.returncode != 0 and "--data_dir" in proc.stderr
    proc = train("--dataset=mnist", f"--data_dir={tmp_path}")
    assert proc.returncode != 0 and "not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_binary_end_to_end_with_flagfile(tmp_path, train):
    proc = train("--dp", "--target_epsilon=3", "--epochs=2", f"--root_output_dir={tmp_path}",
                 "--experiment_name=e2e", "--audit_canaries=200", "--audit_example_canaries=20")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    flagfile = tmp_path / "e2e" / "flags.txt"
    assert "--target_epsilon=3.0" in flagfile.read_text() and "--audit_canaries=200" in flagfile.read_text()
    first = json.loads((tmp_path / "e2e" / "privacy.json").read_text())
    audit = json.loads((tmp_path / "e2e" / "audit.json").read_text())
    assert audit["num_canaries"] == 200 and set(audit["kinds"]) == {"white_box", "black_box"}
    assert "canary audit (white-box, 200 canaries" in proc.stdout and "epsilon lower bound" in proc.stdout
    assert first["audit"]["epsilon_lower_bound"] == audit["epsilon_lower_bound"] <= first["epsilon"]
    proc = train(f"--flagfile={flagfile}", "--experiment_name=e2e_again")
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((tmp_path / "e2e_again" / "privacy.json").read_text())
    assert again["epsilon"] == first["epsilon"] and again["noise_multiplier"] == first["noise_multiplier"]
