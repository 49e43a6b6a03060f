"""Built-in datasets and the dispatcher: shapes, splits per seed, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from data.datasets import DATASETS, DatasetError, load_dataset


def test_digits_shapes_range_and_count():
    ds = load_dataset("digits")
    assert ds.num_train + len(ds.x_test) == 1797
    assert ds.input_shape == (8, 8, 1) and ds.x_test.shape[1:] == (8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0 and ds.x_train.max() == 1.0
    assert ds.num_classes == 10 and ds.task == "classification"
    assert set(np.unique(ds.y_train)) == set(range(10)) and ds.client_ids is None


def test_digits_split_is_stratified_and_deterministic_per_seed():
    a, b, c = load_dataset("digits", seed=3), load_dataset("digits", seed=3), load_dataset("digits", seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    train_share = np.bincount(a.y_train, minlength=10) / a.num_train
    test_share = np.bincount(a.y_test, minlength=10) / len(a.y_test)
    assert np.abs(train_share - test_share).max() < 0.01  # stratified: same class mix


def test_synthetic_regression_has_slope_three():
    ds = load_dataset("synthetic_regression", seed=1)
    assert ds.task == "regression" and ds.num_classes == 0 and ds.input_shape == (1,)
    design = np.c_[ds.x_train[:, 0], np.ones(ds.num_train)]
    slope, intercept = np.linalg.lstsq(design, ds.y_train, rcond=None)[0]
    assert slope == pytest.approx(3.0, abs=0.05) and intercept == pytest.approx(0.0, abs=0.05)
    residual = ds.y_test - 3.0 * ds.x_test[:, 0]
    assert residual.std() == pytest.approx(0.5, abs=0.05)


def test_synthetic_classification():
    ds = load_dataset("synthetic_classification", seed=2)
    assert ds.input_shape == (20,) and ds.num_classes == 4 and ds.num_train == 4000
    assert set(np.unique(ds.y_test)) == set(range(4))


def test_unknown_dataset_name():
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'.*digits"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "csv"])
def test_file_datasets_need_data_dir(name):
    with pytest.raises(DatasetError, match="needs --data_dir"):
        load_dataset(name)


def test_client_id_column_only_for_csv():
    with pytest.raises(DatasetError, match="only applies to --dataset=csv"):
        load_dataset("digits", client_id_column="uid")


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)  # binaries report ValueErrors as usage errors
    assert set(DATASETS) >= {"digits", "mnist", "fashion_mnist", "cifar10", "csv", "synthetic_regression"}
