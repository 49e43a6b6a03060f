"""The layout stays one room per concern: checked on the source tree, not promised in the README."""

from __future__ import annotations

import ast
import os
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pipelines", "training", "privacy", "data", "models", "benchmarks")
MAX_MODULE_LINES = 500
MAX_BINARY_LINES = 160
MAX_FUNCTION_LINES = 80


def _modules(package: str) -> list[str]:
    out = []
    for folder, _, files in os.walk(os.path.join(REPO, package)):
        out += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    return sorted(out)


def _imports(path: str) -> set[str]:
    tree = ast.parse(open(path).read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_two_modules_share_a_file_name():
    names = Counter(os.path.basename(p) for pkg in PACKAGES for p in _modules(pkg))
    names.pop("__init__.py", None)
    assert [n for n, c in names.items() if c > 1] == []


def test_pipelines_holds_binaries_only():
    for path in _modules("pipelines"):
        name = os.path.basename(path)
        if name.startswith("_"):
            assert "def main(" not in open(path).read(), f"{name} is marked as a helper but defines main()"
            continue
        text = open(path).read()
        assert "_app.run(main, __name__" in text and 'if __name__ == "__main__":' in text, name
        assert len(text.splitlines()) <= MAX_BINARY_LINES, f"{name} is not a thin binary"


def test_privacy_depends_on_nothing_above_it():
    above = ("data", "models", "training", "pipelines", "benchmarks")
    for path in _modules("privacy"):
        bad = sorted(m for m in _imports(path) if m.split(".")[0] in above)
        assert bad == [], f"{os.path.relpath(path, REPO)} imports {bad}"


def test_libraries_never_read_flags():
    for pkg in ("training", "privacy", "data", "models"):
        for path in _modules(pkg):
            assert "absl.flags" not in _imports(path) and "FLAGS." not in open(path).read(), path


def test_modules_and_functions_stay_small():
    for pkg in PACKAGES:
        for path in _modules(pkg):
            text = open(path).read()
            rel = os.path.relpath(path, REPO)
            assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{rel} has {len(text.splitlines())} lines"
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    where = f"{rel}:{node.lineno} {node.name}()"
                    assert length <= MAX_FUNCTION_LINES, f"{where} has {length} lines"
