"""Prediction-level DP: mechanisms, the budget ledger (across processes) and the predict binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest

from pipelines import prediction as pred

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probs(n: int = 4000, k: int = 10, top: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    probs = np.full((n, k), (1 - top) / (k - 1))
    probs[np.arange(n), labels] = top
    return probs, labels


# ---------------------------------------------------------------- config and release


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(release="text"), "release"),
        (dict(release="label", mechanism="laplace"), "mechanism"),
        (dict(release="scores", mechanism="exponential"), "mechanism"),
        (dict(epsilon=0.0), "epsilon"),
        (dict(epsilon=float("inf")), "epsilon"),
        (dict(release="scores", mechanism="gaussian", delta=0.0), "delta"),
        (dict(release="label", mechanism="exponential", delta=1e-6), "pure"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pred.PredictionConfig(**kwargs)


def test_release_shapes_and_score_noise_scale():
    probs, labels = _probs(n=50_000, k=4)
    rng = np.random.default_rng(0)
    for mech in pred.LABEL_MECHANISMS:
        out = pred.release(probs, pred.PredictionConfig("label", mech, 2.0), rng)
        assert out.shape == (50_000,) and out.min() >= 0 and out.max() < 4
    noisy = pred.release(probs, pred.PredictionConfig("scores", "laplace", 0.5), rng)
    assert noisy.shape == probs.shape
    b = pred.SCORE_SENSITIVITY_L1 / 0.5  # Laplace(2/eps): L1 sensitivity of the simplex
    assert np.var(noisy - probs) == pytest.approx(2 * b * b, rel=0.02)
    gauss = pred.release(probs, pred.PredictionConfig("scores", "gaussian", 1.0, delta=1e-6), rng)
    from privacy.mechanisms import analytic_gaussian_sigma

    assert np.std(gauss - probs) == pytest.approx(analytic_gaussian_sigma(np.sqrt(2), 1.0, 1e-6), rel=0.02)


def test_report_noisy_max_accuracy_increases_with_epsilon():
    probs, labels = _probs()
    epsilons = [0.5, 2, 8, 32]
    rows = pred.accuracy_vs_epsilon(probs, labels, epsilons, repeats=3, seed=1)
    assert rows[0]["mechanism"].startswith("argmax") and rows[0]["accuracy"] == 1.0
    for mech in ("exponential", "noisy_max_laplace", "randomized_response"):
        accs = [r["accuracy"] for r in rows if r["mechanism"] == mech]
        assert len(accs) == len(epsilons)
        assert all(a < b for a, b in zip(accs, accs[1:], strict=False)), (mech, accs)
        assert accs[0] < 0.25 and accs[-1] > 0.95
    exact = [r["expected_accuracy_exact"] for r in rows if r["mechanism"] == "exponential"]
    sampled = [r["accuracy"] for r in rows if r["mechanism"] == "exponential"]
    assert np.allclose(exact, sampled, atol=0.03)
    assert "exponential" in pred.format_accuracy_table(rows)


# ---------------------------------------------------------------- the ledger


def test_ledger_path_is_next_to_the_model(tmp_path):
    assert pred.ledger_path(str(tmp_path / "run" / "model")) == str(tmp_path / "run" / pred.LEDGER_NAME)
    assert pred.ledger_path(str(tmp_path / "run" / "model") + "/") == str(tmp_path / "run" / pred.LEDGER_NAME)


def test_ledger_exact_arithmetic_and_all_or_nothing(tmp_path):
    ledger = pred.PredictionLedger(str(tmp_path / pred.LEDGER_NAME))
    config = pred.PredictionConfig("label", "exponential", 0.1)
    for _ in range(10):  # 10 x 0.1 == 1 exactly (floats would give 0.9999999999999999)
        state = ledger.spend(1, config, epsilon_budget=1.0)
    assert state.epsilon_spent == 1 and state.affordable_queries(config) == 0
    before = (tmp_path / pred.LEDGER_NAME).read_text()
    with pytest.raises(pred.BudgetExceededError, match="no query of this batch was answered"):
        ledger.spend(1, config, epsilon_budget=1.0)
    assert (tmp_path / pred.LEDGER_NAME).read_text() == before  # a refused batch costs nothing


def test_ledger_refuses_a_whole_batch_that_would_overspend(tmp_path):
    ledger = pred.PredictionLedger(str(tmp_path / pred.LEDGER_NAME))
    config = pred.PredictionConfig("label", "exponential", 0.3)
    ledger.spend(2, config, epsilon_budget=1.0)
    with pytest.raises(pred.BudgetExceededError, match="at most 1 more"):
        ledger.spend(2, config, epsilon_budget=None)  # 0.6 + 0.6 > 1; one more would fit
    assert ledger.state().epsilon_spent == Fraction(3, 5)
    assert ledger.spend(1, config, epsilon_budget=None).epsilon_spent == Fraction(9, 10)


def test_ledger_budget_is_fixed_on_creation(tmp_path):
    ledger = pred.PredictionLedger(str(tmp_path / pred.LEDGER_NAME))
    config = pred.PredictionConfig("label", "exponential", 0.5)
    with pytest.raises(ValueError, match="--prediction_budget"):
        ledger.spend(1, config, epsilon_budget=None)  # no ledger, no budget
    ledger.spend(1, config, epsilon_budget=2.0)
    with pytest.raises(ValueError, match="fixes the budget"):
        ledger.spend(1, config, epsilon_budget=20.0)  # a querier cannot raise it
    with pytest.raises(ValueError, match="delta budget"):
        ledger.spend(1, config, epsilon_budget=2.0, delta_budget=1e-3)


def test_ledger_tracks_delta_of_gaussian_scores(tmp_path):
    ledger = pred.PredictionLedger(str(tmp_path / pred.LEDGER_NAME))
    config = pred.PredictionConfig("scores", "gaussian", 0.5, delta=1e-6)
    ledger.spend(5, config, epsilon_budget=100.0, delta_budget=1e-5)
    with pytest.raises(pred.BudgetExceededError, match="delta"):
        ledger.spend(6, config, epsilon_budget=100.0)
    assert ledger.spend(5, config, epsilon_budget=None).delta_spent == Fraction(1, 100_000)


def test_unreadable_ledger_refuses_rather_than_guessing(tmp_path):
    path = tmp_path / pred.LEDGER_NAME
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        pred.PredictionLedger(str(path)).spend(1, pred.PredictionConfig(), epsilon_budget=10.0)


_SPENDER = textwrap.dedent(
    """
    import sys
    from pipelines import prediction as pred
    ledger = pred.PredictionLedger(sys.argv[1])
    config = pred.PredictionConfig("label", "exponential", 0.1)
    answered = 0
    while True:
        try:
            ledger.spend(1, config, epsilon_budget=2.5)
        except pred.BudgetExceededError:
            break
        answered += 1
    print(answered)
    """
)


def test_concurrent_processes_never_overspend(tmp_path):
    path = str(tmp_path / pred.LEDGER_NAME)
    procs = [
        subprocess.Popen([sys.executable, "-c", _SPENDER, path], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    answered = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    data = json.loads(open(path).read())
    # 2.5 / 0.1 = 25 answers in total, however the 6 processes interleave; every one recorded.
    assert sum(answered) == 25 == data["queries_answered"] == len(data["entries"])
    assert Fraction(data["epsilon_spent"]) == Fraction(5, 2)


# ---------------------------------------------------------------- the binary


def _predict(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.predict", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _fake_model_dir(tmp_path) -> str:
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"")  # never loaded: the budget check comes first
    return str(model)


def test_binary_refuses_over_budget_with_exit_3_and_one_line(tmp_path):
    model = _fake_model_dir(tmp_path)
    ledger = pred.PredictionLedger(pred.ledger_path(model))
    ledger.spend(9, pred.PredictionConfig("label", "exponential", 0.1), epsilon_budget=1.0)
    out = _predict(f"--model_dir={model}", "--dataset=digits", "--num_queries=2", "--prediction_epsilon=0.1")
    assert out.returncode == pred_exit_budget()
    assert "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and "prediction budget exceeded" in line and "at most 1 more" in line
    assert Fraction(json.loads(open(pred.ledger_path(model)).read())["epsilon_spent"]) == Fraction(9, 10)


def test_binary_bad_input_exits_2_without_traceback(tmp_path):
    model = _fake_model_dir(tmp_path)
    cases = [
        ("--model_dir=/nonexistent/model", "--dataset=digits", "--prediction_budget=1"),
        (f"--model_dir={model}", "--dataset=digits"),  # no ledger yet and no budget
        (f"--model_dir={model}", "--dataset=digits", "--prediction_budget=1", "--mechanism=gaussian"),
    ]
    for args in cases:
        out = _predict(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.startswith("predict: error:"), out.stderr


def pred_exit_budget() -> int:
    from pipelines.predict import EXIT_BUDGET_EXCEEDED

    return EXIT_BUDGET_EXCEEDED


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> str:
    """A small logistic model on digits, trained and saved as a SavedModel in a subprocess."""
    model_dir = str(tmp_path_factory.mktemp("predict") / "run" / "model")
    script = textwrap.dedent(
        f"""
        import tensorflow as tf
        from data.datasets import load_digits
        from models.builders import build_model
        d = load_digits()
        m = build_model("logistic", d.input_shape, 10)
        m.compile(optimizer=tf.keras.optimizers.Adam(0.05),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(d.x_train, d.y_train, epochs=10, verbose=0)
        m.save({model_dir!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, capture_output=True, timeout=300)
    return model_dir


@pytest.mark.slow
def test_binary_budget_holds_across_process_restarts(saved_model, tmp_path):
    model = saved_model
    common = [f"--model_dir={model}", "--prediction_epsilon=0.25", "--seed=0"]
    out1 = tmp_path / "a.csv"
    r1 = _predict(
        *common, "--dataset=digits", "--num_queries=2", "--prediction_budget=1", f"--output_file={out1}"
    )
    assert r1.returncode == 0, r1.stderr
    assert "accuracy of released labels vs true labels" in r1.stdout
    assert "spent epsilon 0.5 of 1" in r1.stdout
    assert out1.read_text().splitlines()[0] == "query,label" and len(out1.read_text().splitlines()) == 3

    # A new process: 3 more would make 1.25 > 1. Refused whole, nothing written.
    out2 = tmp_path / "b.csv"
    r2 = _predict(*common, "--dataset=digits", "--num_queries=3", f"--output_file={out2}")
    assert r2.returncode == 3 and "Traceback" not in r2.stderr and not out2.exists()

    # Exactly the rest of the budget, from a CSV with a label column, releasing noisy scores.
    from data.datasets import load_digits

    d = load_digits()
    csv = tmp_path / "queries.csv"
    header = ",".join(f"f{i}" for i in range(64)) + ",label"
    rows = [",".join(map(str, x.ravel())) + f",{y}" for x, y in zip(d.x_test[:2], d.y_test[:2], strict=True)]
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    out3 = tmp_path / "c.csv"
    r3 = _predict(
        *common, f"--input_file={csv}", "--num_queries=2", "--release=scores", f"--output_file={out3}"
    )
    assert r3.returncode == 0, r3.stderr
    assert out3.read_text().splitlines()[0].startswith("query,score_0,") and "accuracy" in r3.stdout

    r4 = _predict(*common, "--dataset=digits", "--num_queries=1")
    assert r4.returncode == 3 and "at most 0 more" in r4.stderr

    data = json.loads(open(pred.ledger_path(model)).read())
    assert Fraction(data["epsilon_spent"]) == 1 == Fraction(data["epsilon_budget"])
    assert data["queries_answered"] == 4 and len(data["entries"]) == 2


@pytest.mark.slow
def test_model_probabilities_softmax_of_logits(saved_model):
    from data.datasets import load_digits

    d = load_digits()
    probs = pred.model_probabilities(saved_model, d.x_test)
    assert probs.shape == (len(d.x_test), 10) and np.allclose(probs.sum(axis=1), 1.0)
    assert np.mean(np.argmax(probs, 1) == d.y_test) > 0.85
    with pytest.raises(ValueError, match="expects"):
        pred.model_probabilities(saved_model, np.zeros((3, 5), np.float32))
