"""Scoring a saved model for prediction release (softmax of its logits, shape checks), and the order
of charge and release: the ledger spend is committed before any answer exists outside memory."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from privacy import prediction_ledger as led
from privacy import prediction_release as rel
from training import prediction

_CONFIG = rel.PredictionConfig("label", "exponential", 0.5)


@pytest.mark.slow
def test_model_probabilities_softmax_of_logits(saved_digits_model):
    saved_model = saved_digits_model
    from data.datasets import load_digits

    d = load_digits()
    probs = prediction.model_probabilities(saved_model, d.x_test)
    assert probs.shape == (len(d.x_test), 10) and np.allclose(probs.sum(axis=1), 1.0)
    assert np.mean(np.argmax(probs, 1) == d.y_test) > 0.85
    with pytest.raises(ValueError, match="expects"):
        prediction.model_probabilities(saved_model, np.zeros((3, 5), np.float32))


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> str:
    """A model folder whose class probabilities come without TensorFlow: only the order is under test."""
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"")

    def probabilities(model_dir: str, x: np.ndarray) -> np.ndarray:
        p = np.full((len(x), 3), 0.1)
        p[:, 0] = 0.8
        return p

    monkeypatch.setattr(prediction, "model_probabilities", probabilities)
    return str(model)


def _look_at_the_charge(monkeypatch, look) -> list:
    """Runs `look()` when the ledger is asked to spend (before the real spend); returns what it saw."""
    seen: list = []
    real_spend = led.PredictionLedger.spend

    def spend(self, *args, **kwargs):
        seen.append(look())
        return real_spend(self, *args, **kwargs)

    monkeypatch.setattr(led.PredictionLedger, "spend", spend)
    return seen


def _answer(model: str, n: int, delivery: prediction.Delivery) -> prediction.PredictResult:
    x = np.zeros((n, 4), np.float32)
    return prediction.answer_queries(
        model, x, None, _CONFIG, 100.0, rng=np.random.default_rng(0), delivery=delivery
    )


def test_no_answer_file_exists_when_the_charge_is_made(fake_model, tmp_path, monkeypatch):
    # A process killed (or held on the ledger's lock) at the spend must leave no answer on disk:
    # not the final file, and not a staged temporary one beside it.
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seen = _look_at_the_charge(monkeypatch, lambda: sorted(os.listdir(out_dir)))
    result = _answer(fake_model, 20, prediction.Delivery(str(out_dir / "answers.csv")))
    assert seen == [[]], f"answer files existed before the spend: {seen}"
    assert os.listdir(out_dir) == ["answers.csv"]
    assert len((out_dir / "answers.csv").read_text().splitlines()) == 21
    assert result.ledger.queries_answered == 20


def test_no_answer_reaches_stdout_before_the_charge(fake_model, monkeypatch, capsys):
    seen = _look_at_the_charge(monkeypatch, lambda: capsys.readouterr().out)
    _answer(fake_model, 5, prediction.Delivery(None))
    assert seen == [""]
    assert capsys.readouterr().out.splitlines()[0] == "query,label"


def test_a_write_that_fails_after_the_charge_keeps_the_charge_and_says_so(fake_model, tmp_path, monkeypatch):
    # The folder disappears between the charge and the write: the budget stays spent (refunding
    # answers that may be on disk would understate what was released), and one line says so.
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _look_at_the_charge(monkeypatch, lambda: shutil.rmtree(out_dir))
    with pytest.raises(prediction.NotDeliveredError) as raised:
        _answer(fake_model, 7, prediction.Delivery(str(out_dir / "answers.csv")))
    message = str(raised.value)
    assert "\n" not in message and "charged" in message and "not delivered" in message, message
    data = json.loads(open(led.ledger_path(fake_model)).read())
    assert data["queries_answered"] == 7 and [e["num_queries"] for e in data["entries"]] == [7]
