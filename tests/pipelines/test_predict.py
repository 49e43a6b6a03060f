"""The predict binary: over budget exits 3 with one line, bad input exits 2, budgets hold across runs."""

from __future__ import annotations

import functools
import json
from fractions import Fraction

import pytest

from privacy import prediction_ledger as led
from privacy import prediction_release as rel


@pytest.fixture
def predict(run_binary):
    return functools.partial(run_binary, "predict", timeout=300)


def _fake_model_dir(tmp_path) -> str:
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"")  # never loaded: the budget check comes first
    return str(model)


def test_binary_refuses_over_budget_with_exit_3_and_one_line(tmp_path, predict):
    model = _fake_model_dir(tmp_path)
    ledger = led.PredictionLedger(led.ledger_path(model))
    ledger.spend(9, rel.PredictionConfig("label", "exponential", 0.1), epsilon_budget=1.0)
    out = predict(f"--model_dir={model}", "--dataset=digits", "--num_queries=2", "--prediction_epsilon=0.1")
    assert out.returncode == pred_exit_budget()
    assert "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and "prediction budget exceeded" in line and "at most 1 more" in line
    assert Fraction(json.loads(open(led.ledger_path(model)).read())["epsilon_spent"]) == Fraction(9, 10)


def test_binary_bad_input_exits_2_without_traceback(tmp_path, predict):
    model = _fake_model_dir(tmp_path)
    cases = [
        ("--model_dir=/nonexistent/model", "--dataset=digits", "--prediction_budget=1"),
        (f"--model_dir={model}", "--dataset=digits"),  # no ledger yet and no budget
        (f"--model_dir={model}", "--dataset=digits", "--prediction_budget=1", "--mechanism=gaussian"),
    ]
    for args in cases:
        out = predict(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.startswith("predict: error:"), out.stderr


def pred_exit_budget() -> int:
    from pipelines.predict import EXIT_BUDGET_EXCEEDED

    return EXIT_BUDGET_EXCEEDED


@pytest.mark.slow
def test_binary_budget_holds_across_process_restarts(saved_digits_model, tmp_path, predict):
    saved_model = saved_digits_model
    model = saved_model
    common = [f"--model_dir={model}", "--prediction_epsilon=0.25", "--seed=0"]
    out1 = tmp_path / "a.csv"
    r1 = predict(
        *common, "--dataset=digits", "--num_queries=2", "--prediction_budget=1", f"--output_file={out1}"
    )
    assert r1.returncode == 0, r1.stderr
    assert "accuracy of released labels vs true labels" in r1.stdout
    assert "spent epsilon 0.5 of 1" in r1.stdout
    assert out1.read_text().splitlines()[0] == "query,label" and len(out1.read_text().splitlines()) == 3

    # A new process: 3 more would make 1.25 > 1. Refused whole, nothing written.
    out2 = tmp_path / "b.csv"
    r2 = predict(*common, "--dataset=digits", "--num_queries=3", f"--output_file={out2}")
    assert r2.returncode == 3 and "Traceback" not in r2.stderr and not out2.exists()

    # Exactly the rest of the budget, from a CSV with a label column, releasing noisy scores.
    from data.datasets import load_digits

    d = load_digits()
    csv = tmp_path / "queries.csv"
    header = ",".join(f"f{i}" for i in range(64)) + ",label"
    rows = [",".join(map(str, x.ravel())) + f",{y}" for x, y in zip(d.x_test[:2], d.y_test[:2], strict=True)]
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    out3 = tmp_path / "c.csv"
    r3 = predict(
        *common, f"--input_file={csv}", "--num_queries=2", "--release=scores", f"--output_file={out3}"
    )
    assert r3.returncode == 0, r3.stderr
    assert out3.read_text().splitlines()[0].startswith("query,score_0,") and "accuracy" in r3.stdout

    r4 = predict(*common, "--dataset=digits", "--num_queries=1")
    assert r4.returncode == 3 and "at most 0 more" in r4.stderr

    data = json.loads(open(led.ledger_path(model)).read())
    assert Fraction(data["epsilon_spent"]) == 1 == Fraction(data["epsilon_budget"])
    assert data["queries_answered"] == 4 and len(data["entries"]) == 2
