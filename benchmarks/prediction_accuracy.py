"""Accuracy of DP-released labels against the per-query epsilon, per mechanism.

    python -m benchmarks.prediction_accuracy                       # sklearn logistic model on digits
    python -m benchmarks.prediction_accuracy --model_dir=runs/exp/model --dataset=digits

A simulation on the test split for choosing epsilon: nothing here is released, so it
spends no prediction budget and does not touch the ledger.
"""

from __future__ import annotations

from absl import app, flags

from pipelines import _app

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Keras SavedModel; default: fit sklearn LogisticRegression."
)
_DATASET = flags.DEFINE_string("dataset", "digits", "Classification dataset (test split = the queries).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset cache folder, or the CSV file/folder.")
_EPSILONS = flags.DEFINE_list(
    "epsilons", ["0.1", "0.5", "1", "2", "5", "10", "20", "50"], "Per-query epsilons."
)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Noise draws per (mechanism, epsilon).", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split and of the simulated noise.")


def sklearn_probabilities(dataset: str, data_dir: str | None, seed: int):
    """(test-set class probabilities, labels) of a non-private sklearn logistic regression."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from data.datasets import load_dataset

    data = load_dataset(dataset, data_dir, seed=seed)
    if data.task != "classification":
        raise app.UsageError(f"{dataset} is a regression dataset")
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    clf = LogisticRegression(max_iter=2000).fit(flat(data.x_train), data.y_train)
    probs = np.zeros((len(data.x_test), data.num_classes))
    probs[:, clf.classes_] = clf.predict_proba(flat(data.x_test))
    return probs, data.y_test


def _probabilities():
    if not _MODEL_DIR.value:
        probs, labels = sklearn_probabilities(_DATASET.value, _DATA_DIR.value, _SEED.value)
        return probs, labels, "sklearn LogisticRegression (non-private)"
    from data.datasets import load_dataset
    from training import prediction

    data = load_dataset(_DATASET.value, _DATA_DIR.value, seed=_SEED.value)
    return prediction.model_probabilities(_MODEL_DIR.value, data.x_test), data.y_test, _MODEL_DIR.value


def main(argv: list[str]) -> None:
    del argv
    from privacy import prediction_release as prediction

    try:
        epsilons = [float(e) for e in _EPSILONS.value]
        probs, labels, source = _probabilities()
        rows = prediction.accuracy_vs_epsilon(
            probs, labels, epsilons, repeats=_REPEATS.value, seed=_SEED.value
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    print(f"model: {source}; dataset {_DATASET.value}, {len(labels)} test queries, {_REPEATS.value} repeats")
    print("neighbours: any two probability vectors (per-score sensitivity 1, L1 2); 'exact' = expected")
    print("accuracy of the exponential mechanism computed in closed form\n")
    print(prediction.format_accuracy_table(rows))


if __name__ == "__main__":
    _app.run(main, __name__)
