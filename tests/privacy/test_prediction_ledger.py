"""The prediction budget ledger: exact arithmetic, all-or-nothing batches, concurrent processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from fractions import Fraction

import pytest

from privacy import prediction_ledger as led
from privacy import prediction_release as rel


def test_ledger_path_is_next_to_the_model(tmp_path):
    assert led.ledger_path(str(tmp_path / "run" / "model")) == str(tmp_path / "run" / led.LEDGER_NAME)
    assert led.ledger_path(str(tmp_path / "run" / "model") + "/") == str(tmp_path / "run" / led.LEDGER_NAME)


def test_ledger_exact_arithmetic_and_all_or_nothing(tmp_path):
    ledger = led.PredictionLedger(str(tmp_path / led.LEDGER_NAME))
    config = rel.PredictionConfig("label", "exponential", 0.1)
    for _ in range(10):  # 10 x 0.1 == 1 exactly (floats would give 0.9999999999999999)
        state = ledger.spend(1, config, epsilon_budget=1.0)
    assert state.epsilon_spent == 1 and state.affordable_queries(config) == 0
    before = (tmp_path / led.LEDGER_NAME).read_text()
    with pytest.raises(led.BudgetExceededError, match="no query of this batch was answered"):
        ledger.spend(1, config, epsilon_budget=1.0)
    assert (tmp_path / led.LEDGER_NAME).read_text() == before  # a refused batch costs nothing


def test_ledger_refuses_a_whole_batch_that_would_overspend(tmp_path):
    ledger = led.PredictionLedger(str(tmp_path / led.LEDGER_NAME))
    config = rel.PredictionConfig("label", "exponential", 0.3)
    ledger.spend(2, config, epsilon_budget=1.0)
    with pytest.raises(led.BudgetExceededError, match="at most 1 more"):
        ledger.spend(2, config, epsilon_budget=None)  # 0.6 + 0.6 > 1; one more would fit
    assert ledger.state().epsilon_spent == Fraction(3, 5)
    assert ledger.spend(1, config, epsilon_budget=None).epsilon_spent == Fraction(9, 10)


def test_ledger_budget_is_fixed_on_creation(tmp_path):
    ledger = led.PredictionLedger(str(tmp_path / led.LEDGER_NAME))
    config = rel.PredictionConfig("label", "exponential", 0.5)
    with pytest.raises(ValueError, match="--prediction_budget"):
        ledger.spend(1, config, epsilon_budget=None)  # no ledger, no budget
    ledger.spend(1, config, epsilon_budget=2.0)
    with pytest.raises(ValueError, match="fixes the budget"):
        ledger.spend(1, config, epsilon_budget=20.0)  # a querier cannot raise it
    with pytest.raises(ValueError, match="delta budget"):
        ledger.spend(1, config, epsilon_budget=2.0, delta_budget=1e-3)


def test_ledger_tracks_delta_of_gaussian_scores(tmp_path):
    ledger = led.PredictionLedger(str(tmp_path / led.LEDGER_NAME))
    config = rel.PredictionConfig("scores", "gaussian", 0.5, delta=1e-6)
    ledger.spend(5, config, epsilon_budget=100.0, delta_budget=1e-5)
    with pytest.raises(led.BudgetExceededError, match="delta"):
        ledger.spend(6, config, epsilon_budget=100.0)
    assert ledger.spend(5, config, epsilon_budget=None).delta_spent == Fraction(1, 100_000)


def test_unreadable_ledger_refuses_rather_than_guessing(tmp_path):
    path = tmp_path / led.LEDGER_NAME
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        led.PredictionLedger(str(path)).spend(1, rel.PredictionConfig(), epsilon_budget=10.0)


_SPENDER = textwrap.dedent(
    """
    import sys
    from privacy import prediction_ledger as led
    from privacy import prediction_release as rel
    ledger = led.PredictionLedger(sys.argv[1])
    config = rel.PredictionConfig("label", "exponential", 0.1)
    answered = 0
    while True:
        try:
            ledger.spend(1, config, epsilon_budget=2.5)
        except led.BudgetExceededError:
            break
        answered += 1
    print(answered)
    """
)


def test_concurrent_processes_never_overspend(tmp_path, repo):
    path = str(tmp_path / led.LEDGER_NAME)
    procs = [
        subprocess.Popen([sys.executable, "-c", _SPENDER, path], cwd=repo, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    answered = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    data = json.loads(open(path).read())
    # 2.5 / 0.1 = 25 answers in total, however the 6 processes interleave; every one recorded.
    assert sum(answered) == 25 == data["queries_answered"] == len(data["entries"])
    assert Fraction(data["epsilon_spent"]) == Fraction(5, 2)
