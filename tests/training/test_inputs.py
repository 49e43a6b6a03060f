"""The data a run trains on: local DP applied to a Dataset keeps its test split and client ids."""

import dataclasses

import numpy as np

from data.datasets import synthetic_classification
from privacy.local_dp import LocalDpConfig
from training.inputs import load_training_data, with_local_dp


def test_local_dp_keeps_client_ids_and_test_split():
    clf = synthetic_classification(num_examples=2000, seed=1)
    with_ids = dataclasses.replace(clf, client_ids=np.arange(clf.num_train) % 7)
    config = LocalDpConfig(label_epsilon=0.5, feature_epsilon=1.0, feature_clip=2.0)
    out, report = with_local_dp(with_ids, config, seed=5)
    assert out.client_ids is with_ids.client_ids
    assert out.x_test is clf.x_test and out.y_test is clf.y_test
    assert not np.array_equal(out.x_train, clf.x_train) and report["per_record_epsilon"] == 1.5


def test_no_local_dp_is_the_dataset_itself():
    clf = synthetic_classification(num_examples=500, seed=1)
    assert with_local_dp(clf, None, seed=0) == (clf, None)
    assert with_local_dp(clf, LocalDpConfig(), seed=0) == (clf, None)
    loaded, report = load_training_data("digits", None, seed=0, local_dp=LocalDpConfig(label_epsilon=1.0))
    assert report["labels"]["num_classes"] == 10 and loaded.num_train == 1437
