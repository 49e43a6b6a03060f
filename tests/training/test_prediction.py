"""Scoring a saved model for prediction release: softmax of its logits, shape checks."""

from __future__ import annotations

import numpy as np
import pytest

from training import prediction


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
