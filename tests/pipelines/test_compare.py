"""The compare binary: bad flags are one clear line and write nothing; --help is fast."""

from __future__ import annotations

import functools
import os
import time

import pytest


@pytest.fixture
def compare(run_binary):
    return functools.partial(run_binary, "compare", timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target_epsilons="], "target_epsilons"),
        (["--target_epsilons=1,-3"], "target_epsilons"),
        (["--arms=central_dp,foo"], "--arms"),
        (["--delta=0.01"], "delta=0.01 must be < 1/"),  # digits: 1437 training examples
        (["--metric=auc"], "--metric must be auto or one of"),
        (["--metric=test_auc"], "test_auc is not measured on 10-class labels"),  # digits: 10 classes
    ],
)
def test_binary_rejects_bad_flags_cleanly(tmp_path, args, message, compare):
    p = compare(f"--root_output_dir={tmp_path}", *args)
    assert p.returncode != 0
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(tmp_path / "comparison")


def test_binary_help_is_fast_and_lists_arms(compare):
    t0 = time.time()
    p = compare("--help")  # absl exits 1 after printing help
    assert "fed_dp_example" in p.stdout and "Traceback" not in p.stderr
    assert time.time() - t0 < 5, "--help must not import TensorFlow"
