"""Tables under a schema: inference, declared schemas, the seeded split, files, and each bad table's error."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from data.datasets import DatasetError, load_dataset
from data.schema import ColumnSchema, SchemaError, TableSchema
from data.table_files import (
    MISSING,
    infer_schema,
    load_table,
    load_table_frame,
    read_frame,
    table_columns,
    table_dataset,
    table_labels,
)


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _mixed_frame(n: int = 12) -> pd.DataFrame:
    """Row i: label Yes iff i is even; colour missing every 4th row; a bool; a number with NaNs."""
    return pd.DataFrame(
        {
            "i": np.arange(n, dtype=np.int64),
            "colour": [
                None if i % 4 == 0 else ("" if i % 4 == 1 else ["red", "blue"][i % 2]) for i in range(n)
            ],
            "flag": [i % 3 == 0 for i in range(n)],
            "size": [np.nan if i % 5 == 0 else i * 1.5 for i in range(n)],
            "label": ["Yes" if i % 2 == 0 else "No" for i in range(n)],
        }
    )


def test_inference_on_a_mixed_frame():
    df = _mixed_frame()
    raw = load_table_frame(df, seed=3)
    schema = raw.schema
    assert schema.task == "classification" and schema.classes == ("No", "Yes")
    assert [(c.name, c.kind) for c in schema.columns] == [
        ("i", "numeric"),
        ("colour", "categorical"),
        ("flag", "categorical"),
        ("size", "numeric"),
    ]
    assert schema.column("flag").categories == ("False", "True")  # a boolean's domain is known
    assert all(c.lower is None and c.upper is None for c in schema.numeric())  # bounds never inferred
    assert schema.column("colour").categories is None  # categories never inferred
    assert raw.num_train + len(raw.y_test) == len(df) and raw.y_train.dtype == np.int32
    for part, y in ((raw.train, raw.y_train), (raw.test, raw.y_test)):
        i = part["i"].astype(int)  # rows stay aligned through the split
        np.testing.assert_array_equal(y, (i % 2 == 0).astype(int))  # "Yes" is class 1
        np.testing.assert_array_equal(part["colour"] == MISSING, i % 4 <= 1)  # None and "" are missing
        assert part["colour"].dtype == object and all(isinstance(v, str) for v in part["colour"])
        np.testing.assert_array_equal(part["flag"], np.where(i % 3 == 0, "True", "False"))
        assert part["size"].dtype == np.float64
        np.testing.assert_array_equal(np.isnan(part["size"]), i % 5 == 0)  # NaN kept, not refused


def test_regression_label_and_dataset():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0], "label": [0.5, 1.0, 2.25, 3.0, 4.0]})
    raw = load_table_frame(df)
    assert raw.schema.task == "regression" and raw.schema.classes is None
    assert raw.y_train.dtype == np.float32
    ds = table_dataset(raw, "csv")
    assert ds.num_classes == 0 and ds.task == "regression" and ds.x_train.shape == (raw.num_train, 0)


def test_classes_order_numeric_and_declared():
    df = pd.DataFrame({"x": range(6), "label": [10, 2, 1, 2, 10, 1]})
    schema = infer_schema(df, "label")
    assert schema.classes == ("1", "2", "10")  # sorted as numbers, not as strings
    np.testing.assert_array_equal(table_labels(df, schema, "t"), [2, 1, 0, 1, 2, 0])
    text = pd.DataFrame({"x": range(4), "label": ["Yes", "No", "No", "Yes"]})
    declared = TableSchema("label", "classification", ("Yes", "No"), (ColumnSchema("x", "numeric"),))
    assert infer_schema(text, "label", declared=declared).classes == ("Yes", "No")  # the declared order wins
    np.testing.assert_array_equal(table_labels(text, declared, "t"), [0, 1, 1, 0])


def test_identifier_column_dropped_with_a_warning():
    n = 25
    df = pd.DataFrame({"uid": [f"u{i}" for i in range(n)], "x": range(n), "label": [i % 2 for i in range(n)]})
    with pytest.warns(UserWarning, match=r"'uid' looks like an identifier") as record:
        schema = infer_schema(df, "label", source="t.csv")
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert schema.dropped == ("uid",) and [c.name for c in schema.columns] == ["x"]
    assert "dropped (identifier-like): uid" in schema.summary()
    assert table_columns(df, schema, "t").keys() == {"x"}
    declared = TableSchema("label", "classification", ("0", "1"), tuple(
        ColumnSchema(c, k) for c, k in (("uid", "categorical"), ("x", "numeric"))
    ))  # fmt: skip
    assert infer_schema(df, "label", declared=declared).dropped == ()  # a declared column is kept
    small = df.iloc[:20]  # 20 distinct values are not enough to call it an identifier
    assert infer_schema(small, "label").column("uid").kind == "categorical"


_HUNDRED = "".join(f"{i},{i % 2}\n" for i in range(100))


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("a,b\n1,2\n", {}, r"bad.csv has no label column 'label'; columns are \['a', 'b'\]"),
        ("a,label\n1,0\n2,1\n", {"client_id_column": "uid"}, "has no client-id column 'uid'"),
        ("a,label\n1,0\n2,1\n", {"client_id_column": "label"}, "both 'label'"),
        ("a,label\n1,0\n2,\n3,\n4,1\n", {}, r"2 of 4 row\(s\) have no label in 'label'"),
        ("a,label\n1,0\n2,0\n", {}, r"label 'label' has one class \('0'\)"),
        ("a,b,label\n1,,0\n2,,1\n", {}, r"column\(s\) \['b'\] have no values \(all missing\)"),
        ("a,label\n", {}, "bad.csv has a header but no rows"),
        ("label\n1\n0\n", {}, r"has no feature columns besides \['label'\]"),
        ("a,label\n1,0\ninf,1\n", {}, "infinite values in column 'a'"),
        ("a,label\n1,inf\n2,0.5\n", {}, "infinite values in label 'label'"),
        ("a,label\n" + "".join(f"{i},{i}\n" for i in range(10_001)), {}, "more than 10000 classes"),
        ("", {}, "cannot parse .*bad.csv"),
        ('a,label\n1,0\n"2,1\n', {}, "cannot parse .*bad.csv"),
        ("a,label\n1,0\n2,1,3\n", {}, "cannot parse .*bad.csv: Error tokenizing"),
        ("a,label\n1,0.5\n", {}, r"has 1 row\(s\); a train/test split needs at least 2"),
        ("a,label,uid\n1,0,\n2,1,b\n3,0,c\n", {"client_id_column": "uid"}, "have no client id in 'uid'"),
        ("a,label\n" + _HUNDRED, {"test_fraction": 1.5}, "test_fraction must be in"),
    ],
)
def test_bad_tables(tmp_path, text, kwargs, message):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DatasetError, match=message) as info:
        load_table(path, **kwargs)
    assert "\n" not in str(info.value)  # one line


def test_client_ids_are_dense_and_test_file_needs_none(tmp_path):
    rows = "x,label,uid\n" + "".join(f"{i},{i % 2},{u}\n" for i, u in enumerate([70, 5, 70, 900, 5, 70]))
    _write(tmp_path / "train.csv", rows)
    _write(tmp_path / "test.csv", "x,label\n1,0\n")
    raw = load_table(str(tmp_path), client_id_column="uid")
    np.testing.assert_array_equal(raw.client_ids, [1, 0, 1, 2, 0, 1])  # 5->0, 70->1, 900->2
    assert raw.schema.client_id == "uid" and [c.name for c in raw.schema.columns] == ["x"]
    np.testing.assert_array_equal(raw.train["x"], np.arange(6))
    names = ["bob", "alice", "carol"]
    text = "f,label,user\n" + "".join(f"{i % 3},{i % 2},{names[i % 3]}\n" for i in range(30))
    split = load_table(_write(tmp_path / "d.csv", text), client_id_column="user", seed=0)
    assert len(split.client_ids) == split.num_train
    sorted_names = np.array(sorted(names))  # dense id = position among the sorted names
    np.testing.assert_array_equal(
        sorted_names[split.client_ids], np.array(names)[split.train["f"].astype(int)]
    )


def test_schema_json_round_trip_and_load(tmp_path):
    schema = TableSchema(
        "y",
        "classification",
        ("neg", "pos"),
        (
            ColumnSchema("age", "numeric", 0, 120),
            ColumnSchema("income", "numeric", None, 1e6),
            ColumnSchema("city", "categorical", categories=("Paris", "Rome")),
            ColumnSchema("code", "categorical"),
        ),
        client_id="user",
        dropped=("row_id",),
    )
    d = schema.to_json()
    assert d["columns"][0] == {
        "name": "age",
        "kind": "numeric",
        "lower": 0.0,
        "upper": 120.0,
        "categories": None,
    }
    assert d["classes"] == ["neg", "pos"] and d["dropped"] == ["row_id"] and d["client_id"] == "user"
    again = TableSchema.from_json(json.loads(json.dumps(d)))
    assert (
        again == schema
        and isinstance(again.classes, tuple)
        and isinstance(again.columns[2].categories, tuple)
    )
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(d))
    assert TableSchema.load(str(path)) == schema
    assert [c.name for c in schema.numeric()] == ["age", "income"]
    assert [c.name for c in schema.categorical()] == ["city", "code"]
    with pytest.raises(SchemaError, match="schema file not found"):
        TableSchema.load(str(tmp_path / "nope.json"))
    path.write_text("{not json")
    with pytest.raises(SchemaError, match=r"cannot read schema .*schema.json"):
        TableSchema.load(str(path))
    path.write_text(json.dumps({**d, "colums": []}))
    with pytest.raises(SchemaError, match=r"schema.json: the schema has unknown keys \['colums'\]"):
        TableSchema.load(str(path))


def test_summary_is_a_short_table():
    long = tuple(f"category-{i}" for i in range(20))
    schema = TableSchema(
        "y",
        "classification",
        ("No", "Yes"),
        (ColumnSchema("age", "numeric", 0, 120), ColumnSchema("city", "categorical", categories=long)),
    )
    lines = schema.summary().splitlines()
    assert lines[0].split() == ["column", "kind", "bounds", "/", "categories"]
    assert lines[1].split() == ["age", "numeric", "[0,", "120]"]
    assert lines[2].startswith("city") and lines[2].endswith("...") and len(lines[2]) < 70
    assert "classification, 2 classes (0=No, 1=Yes)" in lines[3]


def _json(columns: list[dict], **top) -> dict:
    return {"label": "y", "task": "classification", "classes": ["a", "b"], "columns": columns, **top}


@pytest.mark.parametrize(
    "d, message",
    [
        (_json([{"name": "c", "kind": "text"}]), r"column 'c': kind must be one of"),
        (
            _json([{"name": "c", "kind": "numeric", "lower": 5, "upper": 5}]),
            r"column 'c': lower \(5\) must be below",
        ),
        (
            _json([{"name": "c", "kind": "numeric", "lower": "0"}]),
            "column 'c': lower must be a finite number",
        ),
        (
            _json([{"name": "c", "kind": "categorical", "upper": 1}]),
            "column 'c': bounds .* numeric columns only",
        ),
        (
            _json([{"name": "c", "kind": "numeric", "categories": ["x"]}]),
            "column 'c': categories apply to categ",
        ),
        (
            _json([{"name": "c", "kind": "categorical", "categories": []}]),
            "column 'c': categories must not be empty",
        ),
        (
            _json([{"name": "c", "kind": "categorical", "categories": ["x", "x"]}]),
            r"'c': categories repeat \['x'\]",
        ),
        (_json([{"name": "c", "kind": "categorical", "categories": [1.5]}]), "categories must be strings"),
        (
            _json([{"name": "c", "kind": "numeric", "bounds": [0, 1]}]),
            r"column 'c' has unknown keys \['bounds'\]",
        ),
        (_json([{"name": "c", "kind": "numeric"}], classes=["a", "a"]), r"classes of 'y' repeat \['a'\]"),
        (_json([{"name": "c", "kind": "numeric"}], classes=["a"]), "has one class"),
        (_json([{"name": "c", "kind": "numeric"}], classes=None), "needs its classes"),
        (_json([{"name": "c", "kind": "numeric"}], task="regression"), "a regression label has no classes"),
        (_json([{"name": "c", "kind": "numeric"}], task="ranking"), "task must be one of"),
        (_json([]), "the schema has no feature columns"),
        (
            _json([{"name": "c", "kind": "numeric"}, {"name": "c", "kind": "numeric"}]),
            r"\['c'\] more than once",
        ),
        (_json([{"name": "y", "kind": "numeric"}]), "column 'y' is the label"),
        ({"label": "y", "columns": []}, "the schema has no 'task'"),
    ],
)
def test_schema_validation(d, message):
    with pytest.raises(SchemaError, match=message) as info:
        TableSchema.from_json(d)
    assert "\n" not in str(info.value)


def _declared(tmp_path, columns: list[dict], **top) -> str:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"label": "label", "task": "classification", "classes": ["0", "1"],
                                "columns": columns, **top}))  # fmt: skip
    return str(path)


@pytest.mark.parametrize(
    "columns, text, message",
    [
        ([{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}], "a,label\n1,0\n2,1\n",
         r"has no column\(s\) \['b'\], which the schema declares"),
        ([{"name": "a", "kind": "numeric"}], "a,z,label\n1,2,0\n2,3,1\n",
         r"\['z'\] that the schema does not list: add them to the schema, or drop them from the file"),
        ([{"name": "a", "kind": "numeric"}], "a,label\n1,0\nabc,1\n",
         r"'a' is numeric in the schema but holds non-numeric values such as \['abc'\]"),
        ([{"name": "a", "kind": "numeric"}], "a,label\n1,0\n2,2\n", r"label value\(s\) \['2'\] .* not among"),
    ],
)  # fmt: skip
def test_declared_schema_that_disagrees_with_the_file(tmp_path, columns, text, message):
    with pytest.raises(SchemaError, match=message) as info:
        load_table(_write(tmp_path / "d.csv", text), schema_file=_declared(tmp_path, columns))
    assert "\n" not in str(info.value) and "d.csv" in str(info.value)


def test_declared_schema_label_must_match(tmp_path):
    schema_file = _declared(tmp_path, [{"name": "a", "kind": "numeric"}])
    with pytest.raises(SchemaError, match="the schema's label is 'label' but the label column is 'target'"):
        load_table(_write(tmp_path / "d.csv", "a,target\n1,0\n2,1\n"), "target", schema_file=schema_file)


def test_declared_integer_coded_categorical_reads_as_integers(tmp_path):
    columns = [
        {"name": "code", "kind": "categorical", "categories": ["3", "4", "7"]},
        {"name": "x", "kind": "numeric"},
    ]
    text = "code,x,label\n3,0,0\n,1,1\n4,2,0\n7,3,1\n3,4,0\n"  # the empty cell makes pandas read floats
    assert read_frame(_write(tmp_path / "d.csv", text))["code"].dtype == np.float64
    raw = load_table(str(tmp_path / "d.csv"), schema_file=_declared(tmp_path, columns), seed=0)
    assert raw.schema.column("code").categories == ("3", "4", "7")  # the declaration, as is
    codes = dict(zip(raw.train["x"].tolist() + raw.test["x"].tolist(),
                     raw.train["code"].tolist() + raw.test["code"].tolist()))  # fmt: skip
    assert codes == {0.0: "3", 1.0: MISSING, 2.0: "4", 3.0: "7", 4.0: "3"}


@pytest.mark.parametrize("n, seed", [(2, 0), (7, 1), (20, 0), (33, 5), (100, 42)])
def test_split_is_the_old_seeded_permutation(tmp_path, n, seed):
    path = _write(tmp_path / "d.csv", "row,label\n" + "".join(f"{i},{i % 2}\n" for i in range(n)))
    raw = load_table(path, seed=seed)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, round(0.2 * n)))
    np.testing.assert_array_equal(raw.test["row"], perm[:n_test])
    np.testing.assert_array_equal(raw.train["row"], perm[n_test:])
    np.testing.assert_array_equal(raw.y_train, perm[n_test:] % 2)
    again = load_table(path, seed=seed)
    np.testing.assert_array_equal(again.test["row"], raw.test["row"])  # reproducible


def test_folder_with_train_and_test(tmp_path):
    _write(tmp_path / "train.csv", "a,label,b\n1,x,2\n3,y,4\n5,x,6\n")
    _write(tmp_path / "test.csv", "b,a,label,extra\n20,10,y,0\n")  # another column order, an extra column
    raw = load_table(str(tmp_path))
    np.testing.assert_array_equal(raw.train["a"], [1, 3, 5])
    np.testing.assert_array_equal(raw.test["a"], [10])  # matched by name, not by position
    np.testing.assert_array_equal(raw.test["b"], [20])
    assert list(raw.y_test) == [1] and raw.source == str(tmp_path)
    ds = load_dataset("csv", str(tmp_path))
    assert ds.x_train.shape == (3, 0) and ds.x_test.shape == (1, 0) and ds.table is not None
    assert ds.num_classes == 2 and ds.class_names == ("x", "y") and ds.client_ids is None


def test_folder_without_test_file_splits(tmp_path):
    _write(tmp_path / "train.csv", "a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    raw = load_table(str(tmp_path))
    assert raw.num_train == 8 and len(raw.y_test) == 2


@pytest.mark.parametrize(
    "test_text, message",
    [
        (
            "a,c,label\n1,2,0\n",
            r"test.csv has different feature columns: missing \['b'\]; it has columns \['c'\]",
        ),
        ("a,b,label\n1,2,7\n", r"test.csv: label value\(s\) \['7'\] in 'label' are not among the classes"),
        ("a,b\n1,2\n", "test.csv has no label column 'label'"),
        ("a,b,label\n", "test.csv has a header but no rows"),
    ],
)
def test_test_file_must_match_the_training_file(tmp_path, test_text, message):
    _write(tmp_path / "train.csv", "a,b,label\n1,2,0\n3,4,1\n")
    _write(tmp_path / "test.csv", test_text)
    with pytest.raises(DatasetError, match=message):
        load_table(str(tmp_path))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="table file not found"):
        load_dataset("csv", str(tmp_path / "nope.csv"))
    with pytest.raises(DatasetError, match=r"has no train.csv \(or train.parquet\)"):
        load_dataset("csv", str(tmp_path))
    with pytest.raises(DatasetError, match="a schema file only applies to --dataset=csv"):
        load_dataset("digits", schema_file="schema.json")


def test_breast_cancer_csv(tmp_path):
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    path = tmp_path / "cancer.csv"
    bunch.frame.rename(columns={"target": "label"}).to_csv(path, index=False)
    schema_file = tmp_path / "schema.json"
    raw = load_table(str(path))
    assert len(raw.schema.columns) == 30 and len(raw.schema.numeric()) == 30 and raw.schema.dropped == ()
    assert raw.schema.classes == ("0", "1") and raw.num_train == 455 and len(raw.y_test) == 114
    schema_file.write_text(json.dumps(raw.schema.to_json()))
    ds = load_dataset("csv", str(path), schema_file=str(schema_file))
    assert ds.table.schema == raw.schema and ds.num_classes == 2 and ds.x_train.shape == (455, 0)
    np.testing.assert_array_equal(ds.y_test, raw.y_test)


def test_table_columns_of_a_frame_to_predict():
    schema = infer_schema(_mixed_frame(), "label")
    to_predict = pd.DataFrame({"size": [1.0, None], "flag": [True, False], "colour": ["red", None],
                               "i": [5, 6], "unused": ["a", "b"]})  # fmt: skip
    columns = table_columns(to_predict, schema, "predict.csv")
    assert list(columns) == ["i", "colour", "flag", "size"]  # schema order, extra column ignored
    assert columns["colour"].tolist() == ["red", MISSING] and columns["flag"].tolist() == ["True", "False"]
    assert np.isnan(columns["size"][1])
    with pytest.raises(
        DatasetError, match=r"predict.csv has different .* missing \['size'\]; .* \['unused'\]"
    ):
        table_columns(to_predict.drop(columns=["size"]), schema, "predict.csv")
    with pytest.raises(SchemaError, match=r"'i' is numeric in the schema .* \['six'\]"):
        table_columns(to_predict.assign(i=["5", "six"]), schema, "predict.csv")


def test_a_dataframe_through_the_api_is_the_same_table():
    from ppml.user_data import as_dataset

    name, ds = as_dataset(_mixed_frame(), seed=3)
    raw = load_table_frame(_mixed_frame(), seed=3)
    assert name == "csv" and ds.table.schema == raw.schema and ds.class_names == ("No", "Yes")
    np.testing.assert_array_equal(ds.table.train["i"], raw.train["i"])
    assert ds.x_train.shape == (raw.num_train, 0)


def test_parquet_needs_pyarrow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with pytest.raises(DatasetError, match="needs pyarrow: pip install pyarrow"):
        read_frame(str(tmp_path / "d.parquet"))


def test_parquet_file_and_folder(tmp_path):
    pytest.importorskip("pyarrow")
    df = _mixed_frame(30)
    df.to_parquet(tmp_path / "train.parquet")
    raw = load_table(str(tmp_path), seed=1)
    expected = load_table_frame(df, seed=1)
    assert raw.schema == expected.schema
    np.testing.assert_array_equal(raw.train["i"], expected.train["i"])
    assert load_table(str(tmp_path / "train.parquet")).num_train == 24
