"""A table's schema: which columns are features, of which kind, and what the label's classes are.

Why a schema: the pipeline treats it as public structure (column kinds, the label's classes, and any
bounds or categories the user declares from domain knowledge), never as statistics of the rows. It is
written next to a released model (schema.json) so that `predict` reads a raw table the same way, and a
user can hand one in (`--schema`) to declare bounds and categories, or to fix a column's kind.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from data.datasets import DatasetError

KINDS = ("numeric", "categorical")
TASKS = ("classification", "regression")
MAX_CLASSES = 10_000  # checked before a model with that many outputs is ever built
_SUMMARY_WIDTH = 40  # characters of bounds/categories shown per column in `summary`


class SchemaError(DatasetError):
    """A schema is malformed or disagrees with the table it is used on; the message says where."""


def _unique_strings(values: Any, what: str) -> tuple[str, ...]:
    """`values` as a non-empty tuple of distinct strings (JSON integers and booleans become strings)."""
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise SchemaError(f"{what} must be a list of strings, got {values!r}")
    out = []
    for v in values:
        if not isinstance(v, str | int):  # bool is an int: true -> "True"
            raise SchemaError(f"{what} must be strings, got {v!r}")
        out.append(str(v))
    if not out:
        raise SchemaError(f"{what} must not be empty")
    duplicates = sorted({v for v in out if out.count(v) > 1})
    if duplicates:
        raise SchemaError(f"{what} repeat {duplicates}")
    return tuple(out)


def _bound(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SchemaError(f"{what} must be a finite number or null, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class ColumnSchema:
    """One feature column. Bounds and categories are the user's declaration (None: not declared)."""

    name: str
    kind: str  # "numeric" | "categorical"
    lower: float | None = None  # numeric only
    upper: float | None = None
    categories: tuple[str, ...] | None = None  # categorical only, as strings

    def __post_init__(self) -> None:
        where = f"column {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"a column name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise SchemaError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        lower, upper = _bound(self.lower, f"{where}: lower"), _bound(self.upper, f"{where}: upper")
        if self.kind == "categorical" and (lower is not None or upper is not None):
            raise SchemaError(f"{where}: bounds (lower/upper) apply to numeric columns only")
        if lower is not None and upper is not None and not lower < upper:
            raise SchemaError(f"{where}: lower ({lower:g}) must be below upper ({upper:g})")
        categories = self.categories
        if categories is not None:
            if self.kind == "numeric":
                raise SchemaError(f"{where}: categories apply to categorical columns only")
            categories = _unique_strings(categories, f"{where}: categories")
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "categories", categories)

    def describe(self) -> str:
        """The declared bounds or categories in a few words (for `TableSchema.summary`)."""
        if self.kind == "numeric":
            if self.lower is None and self.upper is None:
                return "bounds not declared"
            return f"[{_num(self.lower, '-inf')}, {_num(self.upper, 'inf')}]"
        if self.categories is None:
            return "categories not declared"
        return _truncate(", ".join(self.categories))


def _num(value: float | None, default: str) -> str:
    return default if value is None else f"{value:g}"


def _truncate(text: str, width: int = _SUMMARY_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


_COLUMN_KEYS = {"name", "kind", "lower", "upper", "categories"}
_TABLE_KEYS = {"label", "task", "classes", "client_id", "dropped", "columns"}


@dataclasses.dataclass(frozen=True)
class TableSchema:
    """The label and feature columns of a table (feature columns in file order)."""

    label: str
    task: str  # "classification" | "regression"
    classes: tuple[str, ...] | None  # classification: class index i is classes[i]
    columns: tuple[ColumnSchema, ...]  # label, client id and dropped columns excluded
    client_id: str | None = None
    dropped: tuple[str, ...] = ()  # identifier-like columns dropped at inference

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label:
            raise SchemaError(f"the label must be a column name, got {self.label!r}")
        if self.task not in TASKS:
            raise SchemaError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "regression" and self.classes is not None:
            raise SchemaError("a regression label has no classes: set classes to null")
        if self.task == "classification":
            if self.classes is None:
                raise SchemaError(f"a classification label {self.label!r} needs its classes")
            classes = _unique_strings(self.classes, f"classes of {self.label!r}")
            if len(classes) < 2:
                raise SchemaError(f"label {self.label!r} has one class {list(classes)}; it needs at least 2")
            if len(classes) > MAX_CLASSES:
                raise SchemaError(f"label {self.label!r} has {len(classes)} classes; at most {MAX_CLASSES}")
            object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "dropped", tuple(self.dropped))
        self._check_names()

    def _check_names(self) -> None:
        if not self.columns:
            raise SchemaError("the schema has no feature columns")
        names = [c.name for c in self.columns]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise SchemaError(f"the schema lists columns {repeated} more than once")
        for role, name in (("label", self.label), ("client id", self.client_id)):
            if name in names or name in self.dropped:
                raise SchemaError(f"column {name!r} is the {role}; it cannot also be a feature or dropped")
        clash = sorted(set(names) & set(self.dropped))
        if clash:
            raise SchemaError(f"columns {clash} are both features and dropped")

    def column(self, name: str) -> ColumnSchema:
        for c in self.columns:
            if c.name == name:
                return c
        raise SchemaError(f"the schema has no feature column {name!r}")

    def numeric(self) -> tuple[ColumnSchema, ...]:
        return tuple(c for c in self.columns if c.kind == "numeric")

    def categorical(self) -> tuple[ColumnSchema, ...]:
        return tuple(c for c in self.columns if c.kind == "categorical")

    def to_json(self) -> dict:
        """A plain JSON-able dict (the schema.json format)."""
        return {
            "label": self.label,
            "task": self.task,
            "classes": None if self.classes is None else list(self.classes),
            "client_id": self.client_id,
            "dropped": list(self.dropped),
            "columns": [
                {
                    "name": c.name,
                    "kind": c.kind,
                    "lower": c.lower,
                    "upper": c.upper,
                    "categories": None if c.categories is None else list(c.categories),
                }
                for c in self.columns
            ],
        }

    @classmethod
    def from_json(cls, d: dict) -> TableSchema:
        """The schema of a `to_json` dict, validated (unknown keys refused: a typo must not pass)."""
        if not isinstance(d, dict):
            raise SchemaError(f"a schema must be a JSON object, got {type(d).__name__}")
        _known_keys(d, _TABLE_KEYS, "the schema")
        for key in ("label", "task", "columns"):
            if key not in d:
                raise SchemaError(f"the schema has no {key!r}")
        if not isinstance(d["columns"], list):
            raise SchemaError("the schema's 'columns' must be a list of column objects")
        columns = []
        for i, c in enumerate(d["columns"]):
            if not isinstance(c, dict) or "name" not in c or "kind" not in c:
                raise SchemaError(f"column #{i} of the schema must be an object with a name and a kind")
            _known_keys(c, _COLUMN_KEYS, f"column {c['name']!r}")
            categories = c.get("categories")
            if categories is not None:
                categories = _unique_strings(categories, f"column {c['name']!r}: categories")
            columns.append(ColumnSchema(c["name"], c["kind"], c.get("lower"), c.get("upper"), categories))
        classes = d.get("classes")
        if classes is not None:
            classes = _unique_strings(classes, f"classes of {d['label']!r}")
        dropped = d.get("dropped") or ()
        if not isinstance(dropped, list | tuple) or not all(isinstance(n, str) for n in dropped):
            raise SchemaError(f"the schema's 'dropped' must be a list of column names, got {dropped!r}")
        return cls(d["label"], d["task"], classes, tuple(columns), d.get("client_id"), tuple(dropped))

    @classmethod
    def load(cls, path: str) -> TableSchema:
        """The schema in JSON file `path`; every problem is a SchemaError naming the file."""
        from data.file_checks import regular_file

        regular_file(path, "schema file", SchemaError)  # a FIFO would block open() forever
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise SchemaError(f"schema file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SchemaError(f"cannot read schema {path}: {e}") from None
        try:
            return cls.from_json(d)
        except SchemaError as e:
            raise SchemaError(f"{path}: {e}") from None

    def summary(self) -> str:
        """A short fixed-width table of the columns, the label and the dropped columns (for logs)."""
        width = max([len("column"), *(len(c.name) for c in self.columns)])
        lines = [f"{'column':<{width}}  {'kind':<11}  bounds / categories"]
        lines += [f"{c.name:<{width}}  {c.kind:<11}  {c.describe()}" for c in self.columns]
        if self.task == "classification":
            classes = _truncate(", ".join(f"{i}={c}" for i, c in enumerate(self.classes)))
            lines.append(f"label {self.label!r}: classification, {len(self.classes)} classes ({classes})")
        else:
            lines.append(f"label {self.label!r}: regression")
        if self.client_id is not None:
            lines.append(f"client id: {self.client_id!r}")
        if self.dropped:
            lines.append(f"dropped (identifier-like): {_truncate(', '.join(self.dropped))}")
        return "\n".join(lines)


def _known_keys(d: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise SchemaError(f"{where} has unknown keys {unknown}; expected some of {sorted(known)}")
