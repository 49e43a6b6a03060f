"""Federated EMNIST through TFF's loader, on a tiny file the test writes in TFF's sqlite format."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from data.datasets import DatasetError
from data.emnist import EMNIST_FILE, load_emnist

TRAIN_SIZES = {"f0000_00": 3, "f0001_01": 5, "f0002_02": 2, "f0003_03": 4}
TEST_SIZE = 2


def _writer_data(cid: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int64)
    pixels = np.ones((n, 28, 28), np.float32)  # TFF's EMNIST: background = 1, ink = 0
    for i, label in enumerate(labels):
        pixels[i, 2 * label : 2 * label + 4, 4:24] = 0.0  # a label-dependent bar
    return collections.OrderedDict(label=labels, pixels=pixels)


@pytest.fixture(scope="module")
def emnist_dir(tmp_path_factory):
    import tensorflow as tf
    import tensorflow_federated as tff

    folder = tmp_path_factory.mktemp("emnist")
    data, splits = {}, {}
    for k, (cid, n) in enumerate(TRAIN_SIZES.items()):
        data[cid] = _writer_data(cid, n, k)
        splits[cid] = "digits_only_train"
        data[cid + "_test"] = _writer_data(cid, TEST_SIZE, 100 + k)
        splits[cid + "_test"] = "digits_only_test"
    tff.simulation.datasets.save_to_sql_client_data(
        list(data),
        lambda cid: tf.data.Dataset.from_tensor_slices(data[cid]),
        str(folder / EMNIST_FILE),
        split_names_by_client_id=splits,
    )
    return folder


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="emnist_all.sqlite"):
        load_emnist(str(tmp_path))
    with pytest.raises(DatasetError, match="--data_dir"):
        load_emnist(None)


@pytest.mark.slow
def test_loads_writers_lazily_offline(emnist_dir):
    pop = load_emnist(str(emnist_dir))
    assert pop.num_clients == len(TRAIN_SIZES)
    assert sorted(pop.client_ids) == sorted(TRAIN_SIZES)
    for i, cid in enumerate(pop.client_ids):
        x, y = pop.client_examples(i)
        assert x.shape == (TRAIN_SIZES[cid], 28, 28, 1) and y.dtype == np.int32
        assert set(np.unique(x)) <= {0.0, 1.0} and x.mean() < 0.5  # inverted: ink = 1
    assert len(pop.x_test) == TEST_SIZE * len(TRAIN_SIZES)
    ds = pop.client_dataset(1, epochs=2, batch_size=3, seed=0, round_num=1)
    n = sum(len(b[0]) for b in ds.as_numpy_iterator())
    assert n == 2 * TRAIN_SIZES[pop.client_ids[1]]
    sub = load_emnist(str(emnist_dir), num_clients=2, seed=0)
    assert sub.num_clients == 2 and set(sub.client_ids) <= set(TRAIN_SIZES)
    with pytest.raises(ValueError, match="--num_clients=0"):
        load_emnist(str(emnist_dir), num_clients=5)


@pytest.mark.slow
def test_federated_run_on_emnist(emnist_dir, tmp_path):
    from training import federated

    config = federated.FederatedConfig(
        dataset="emnist",
        data_dir=str(emnist_dir),
        partition="natural",
        num_clients=0,
        clients_per_round=2,
        client_sampling="uniform",
        model="logistic",
        rounds=2,
        client_epochs=1,
        eval_every=1,
        root_output_dir=str(tmp_path),
        experiment_name="emnist",
    )
    result = federated.run(config)
    assert result.rounds_completed == 2
    assert result.privacy["num_clients"] == len(TRAIN_SIZES)
    assert all(r["clients"] == 2 for r in result.history)
    assert 0.0 <= result.test_accuracy <= 1.0 and np.isfinite(result.test_loss)
