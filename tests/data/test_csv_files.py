"""CSV datasets: features, labels, client ids, test files, and a clear error for each bad input."""

from __future__ import annotations

import numpy as np
import pytest

from data.csv_files import load_csv
from data.datasets import DatasetError, load_dataset

CSV = "f1,f2,label,user\n" + "".join(
    f"{i * 0.5},{i % 3},{i % 4},{['bob', 'alice', 'carol'][i % 3]}\n" for i in range(20)
)


def test_csv_file_with_split(tmp_path, formats):
    path = formats.write_csv(
        tmp_path / "d.csv", "\n".join(",".join(r.split(",")[:3]) for r in CSV.splitlines())
    )
    ds = load_dataset("csv", path, seed=0)
    assert ds.num_train == 16 and len(ds.x_test) == 4 and ds.input_shape == (2,)
    assert ds.num_classes == 4 and ds.client_ids is None
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    # Features and labels stay aligned through the split: label == (2*f1) % 4.
    np.testing.assert_array_equal(ds.y_train, (2 * ds.x_train[:, 0]).astype(int) % 4)
    again, other = load_dataset("csv", path, seed=0), load_dataset("csv", path, seed=1)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    assert not np.array_equal(ds.x_test, other.x_test)


def test_csv_folder_with_train_and_test(tmp_path, formats):
    formats.write_csv(tmp_path / "train.csv", "a,label,b\n1,0,2\n3,1,4\n5,2,6\n")
    formats.write_csv(tmp_path / "test.csv", "b,a,label\n20,10,4\n")  # columns in another order
    ds = load_dataset("csv", str(tmp_path))
    np.testing.assert_array_equal(ds.x_train, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(ds.x_test, [[10, 20]])  # matched by name, not position
    assert ds.num_classes == 5  # the largest label anywhere, here in the test file


def test_csv_folder_without_test_csv_splits(tmp_path, formats):
    formats.write_csv(tmp_path / "train.csv", "a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    ds = load_dataset("csv", str(tmp_path))
    assert ds.num_train == 8 and len(ds.x_test) == 2


def test_csv_client_ids_are_dense(tmp_path, formats):
    rows = "x,label,uid\n" + "".join(f"{i},{i % 2},{uid}\n" for i, uid in enumerate([70, 5, 70, 900, 5, 70]))
    formats.write_csv(tmp_path / "train.csv", rows)
    formats.write_csv(tmp_path / "test.csv", "x,label\n1,0\n")  # test file needs no client ids
    ds = load_dataset("csv", str(tmp_path), client_id_column="uid")
    np.testing.assert_array_equal(ds.client_ids, [1, 0, 1, 2, 0, 1])  # 5->0, 70->1, 900->2
    assert ds.input_shape == (1,)  # the id column is not a feature
    np.testing.assert_array_equal(ds.x_train[:, 0], np.arange(6))


def test_csv_client_ids_after_split_and_string_ids(tmp_path, formats):
    path = formats.write_csv(tmp_path / "d.csv", CSV)
    ds = load_csv(path, client_id_column="user", seed=0)
    assert ds.input_shape == (2,) and len(ds.client_ids) == ds.num_train
    k = len(np.unique(ds.client_ids))
    assert k == 3 and set(ds.client_ids) == set(range(k))
    # Every row's client is the one the file gave it: user index == f2 == i % 3.
    names = np.array(["alice", "bob", "carol"])  # sorted, so dense id = position
    np.testing.assert_array_equal(
        names[ds.client_ids], np.array(["bob", "alice", "carol"])[ds.x_train[:, 1].astype(int)]
    )


def test_csv_test_file_with_client_column_is_accepted(tmp_path, formats):
    formats.write_csv(tmp_path / "train.csv", "x,label,uid\n1,0,a\n2,1,b\n")
    formats.write_csv(tmp_path / "test.csv", "x,label,uid\n3,1,c\n")
    ds = load_dataset("csv", str(tmp_path), client_id_column="uid")
    assert ds.x_test.shape == (1, 1) and list(ds.client_ids) == [0, 1]


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("a,b\n1,2\n", {}, r"has no label column 'label'; columns are \['a', 'b'\]"),
        ("a,label\n1,0\n2,1\n", {"client_id_column": "uid"}, "has no client-id column 'uid'"),
        ("a,label\n1,0\nx,1\n", {}, r"non-numeric values in columns \['a'\]"),
        ("a,label\n1,0\n2,cat\n", {}, r"non-numeric values in columns \['label'\]"),
        ("a,label\n1,0\n,1\n", {}, r"missing values \(NaN\) in columns \['a'\]"),
        ("a,label\n1,0\n2,\n", {}, r"missing values \(NaN\) in columns \['label'\]"),
        ("a,label\n1,0\n2,1.5\n", {}, "labels in 'label' must be integers"),
        ("a,label\n1,0\n2,-1\n", {}, "must be non-negative"),
        ("a,label\n1,0\ninf,1\n", {}, r"infinite values in columns \['a'\]"),
        ("label\n1\n0\n", {}, "has no feature columns"),
        ("a,label\n", {}, "has a header but no rows"),
        ("", {}, "cannot parse"),
        ("a,label\n1,0\n", {}, "needs at least 2"),
        ("a,label\n1,0\n2,1\n", {"client_id_column": "label"}, "both 'label'"),
    ],
)
def test_csv_bad_inputs(tmp_path, text, kwargs, message, formats):
    path = formats.write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset("csv", path, **kwargs)
    if "column" in message or "values" in message:
        assert "bad.csv" in str(info.value)  # the message names the file


def test_csv_label_column_option(tmp_path, formats):
    path = formats.write_csv(tmp_path / "d.csv", "target,a\n1,5\n0,6\n1,7\n0,8\n2,9\n")
    ds = load_dataset("csv", path, label_column="target")
    assert ds.input_shape == (1,) and ds.num_classes == 3


def test_csv_train_and_test_features_must_match(tmp_path, formats):
    formats.write_csv(tmp_path / "train.csv", "a,b,label\n1,2,0\n")
    formats.write_csv(tmp_path / "test.csv", "a,c,label\n1,2,0\n")
    with pytest.raises(
        DatasetError, match=r"test.csv has different feature columns.*missing \['b'\], extra \['c'\]"
    ):
        load_dataset("csv", str(tmp_path))


def test_csv_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="CSV file not found"):
        load_dataset("csv", str(tmp_path / "nope.csv"))
    with pytest.raises(DatasetError, match="has no train.csv"):
        load_dataset("csv", str(tmp_path))
