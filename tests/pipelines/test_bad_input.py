"""Every bad input a new user tried (issue 11's table), through the real binaries.

Each must end with exit code 2 (bad input), exactly one line on stderr, no traceback, and leave an
earlier run's files byte-identical (and no new half-folder).
"""

from __future__ import annotations

import json
import os

import pytest


def _snapshot(root) -> dict[str, bytes]:
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def _one_line_error(proc, code: int = 2) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.fixture
def earlier_run(tmp_path):
    """An earlier experiment folder whose files must survive a failed run byte for byte."""
    run = tmp_path / "runs" / "exp"
    (run / "checkpoints").mkdir(parents=True)
    (run / "flags.txt").write_text("--epochs=3\n")
    (run / "privacy.json").write_text('{"epsilon": 1.0}\n')
    (run / "metrics.csv").write_text("epoch,test_accuracy\n1,0.5\n")
    return tmp_path / "runs"


@pytest.mark.parametrize(
    "binary, args, message",
    [
        ("train_centralized", ["--batch_size=100000"], "exceeds the 1437 training examples"),
        (
            "train_centralized",
            ["--model=cnn", "--dp", "--noise_multiplier=1", "--engine=fast"],
            "engine 'fast'",
        ),
        ("train_centralized", ["--noise_multiplier=1"], "only apply with --dp"),
        ("train_centralized", ["--target_epsilon=3"], "only apply with --dp"),
        ("train_centralized", ["--dp", "--target_epsilon=1", "--delta=0.01"], "must be < 1/N"),
        ("train_centralized", ["--delta=2"], "--delta must be in (0, 1)"),
        ("train_centralized", ["--epochs=0"], "--epochs"),
        ("train_centralized", ["an_argument"], "unexpected arguments"),
        ("train_federated", ["--workers=127.0.0.1:1"], "refused the connection"),
        ("train_federated", ["--noise_multiplier=1"], "need a DP aggregator"),
        ("train_federated", ["--aggregator=fixed", "--noise_multiplier=1", "--delta=0.01"], "1/N"),
        ("train_federated", ["--audit_canaries=-1"], "--audit_canaries must be >= 0"),
        (
            "train_federated",
            ["--aggregator=tree", "--noise_multiplier=1", "--rounds=2", "--audit_canaries=400"],
            "exceeds the 300 clients",
        ),
        ("train_centralized", ["--audit_example_canaries=-5"], "--audit_example_canaries must be >= 0"),
        ("train_federated", ["--dataset=synthetic_emnist"], "partitioned by writer: use --partition=natural"),
    ],
)
def test_bad_input_to_a_trainer_keeps_the_earlier_run(run_binary, earlier_run, binary, args, message):
    before = _snapshot(earlier_run)
    proc = run_binary(binary, f"--root_output_dir={earlier_run}", "--experiment_name=exp", *args, timeout=120)
    assert message in _one_line_error(proc)
    assert _snapshot(earlier_run) == before
    assert os.listdir(earlier_run) == ["exp"]  # and no new half-folder


@pytest.mark.parametrize("binary", ["train_centralized", "train_federated"])
def test_a_new_experiment_that_fails_creates_no_folder(run_binary, tmp_path, binary):
    proc = run_binary(binary, f"--root_output_dir={tmp_path}/runs", "--delta=0.5", "--noise_multiplier=1")
    _one_line_error(proc)
    assert not (tmp_path / "runs").exists()


_ROWS = "".join(f"{i},{i % 3},{'Yes' if i % 2 else 'No'}\n" for i in range(30))


@pytest.mark.parametrize(
    "table, extra, message",
    [
        ("a,b,label\n" + "".join(f"{i},{i % 3},No\n" for i in range(30)), [], "one class"),
        ("a,b,label\n" + "".join(f"{i},,{'Yes' if i % 2 else 'No'}\n" for i in range(30)), [], "all missing"),
        ("a,b,label\n" + _ROWS, ["--schema=SCHEMA"], "the schema does not list"),
        (
            "a,b,label\n" + _ROWS,
            ["--dp", "--target_epsilon=1", "--preprocessing=schema"],
            "must declare bounds",
        ),
        ("a,b,label\n", [], "no rows"),
    ],
    ids=["one-class", "all-missing", "schema-disagrees", "schema-without-bounds", "no-rows"],
)
def test_a_bad_table_is_refused_in_one_line_before_anything_is_written(
    run_binary, tmp_path, table, extra, message
):
    csv = tmp_path / "data.csv"
    csv.write_text(table)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"label": "label", "task": "classification", "classes": ["No", "Yes"],
                                  "columns": [{"name": "a", "kind": "numeric"}]}))  # fmt: skip
    args = [a.replace("SCHEMA", str(schema)) for a in extra]
    out = f"--root_output_dir={tmp_path}/runs"
    proc = run_binary("train_centralized", "--dataset=csv", f"--data_dir={csv}", out, *args)
    assert message in _one_line_error(proc)
    assert not (tmp_path / "runs").exists()


def test_compare_into_an_uncreatable_folder(run_binary):
    line = _one_line_error(run_binary("compare", "--root_output_dir=/proc/forbidden"))
    assert "cannot create output folder /proc/forbidden" in line


def test_compare_with_more_canaries_than_the_model_has_coordinates(run_binary, tmp_path):
    """Logistic regression on digits has 650 parameters: 700 white-box canaries are refused before any
    arm runs (the first federated arm used to fail after the centralized ones had written files)."""
    proc = run_binary("compare", "--model=logistic", "--audit_canaries=700", f"--root_output_dir={tmp_path}")
    line = _one_line_error(proc)
    assert "--audit_canaries=700" in line and "650" in line
    assert not os.path.exists(tmp_path / "comparison")


def test_predict_cannot_write_its_answers_and_charges_nothing(run_binary, saved_digits_model, tmp_path):
    from privacy.prediction_ledger import ledger_path

    ledger = ledger_path(saved_digits_model)
    before = open(ledger).read() if os.path.exists(ledger) else None
    proc = run_binary(
        "predict",
        f"--model_dir={saved_digits_model}",
        "--dataset=digits",
        "--num_queries=5",
        "--prediction_budget=1000",
        "--output_file=/proc/forbidden/a.csv",
    )
    assert "--output_file=/proc/forbidden/a.csv" in _one_line_error(proc)
    assert (open(ledger).read() if os.path.exists(ledger) else None) == before  # nothing charged


def test_predict_flag_errors_exit_2_as_its_help_says(run_binary, saved_digits_model):
    assert "--num_queries" in _one_line_error(run_binary("predict", "--model_dir=x", "--num_queries=0"))
    help_text = run_binary("predict", "--help").stdout
    assert "2 bad input" in help_text and "130 / 143" in help_text


def test_budget_refuses_a_delta_above_one_over_n(run_binary):
    proc = run_binary("budget", "--num_examples=60000", "--batch_size=256", "--epochs=60",
                      "--noise_multiplier=1.1", "--delta=0.001")  # fmt: skip
    assert "must be < 1/N" in _one_line_error(proc)


def test_budget_json_is_strict_json_even_for_infinite_epsilon(run_binary):
    proc = run_binary("budget", "--num_examples=60000", "--batch_size=256", "--epochs=60",
                      "--noise_multiplier=0", "--output=json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert report["epsilon"] is None and report["epsilon_is_infinite"] is True
