"""The linear regression example binary: the seed loop gets no guarantee; bad flags are one line."""

from __future__ import annotations


def test_binary_runs_and_reports_no_guarantee_for_the_seed_loop(run_binary):
    out = run_binary(
        "linear_regression_example", "--epsilons=1", "--seeds=0", "--num_examples=4000", timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "no guarantee" in out.stdout and "DP-SGD eps=1" in out.stdout
    bad = run_binary("linear_regression_example", "--epsilons=-1", timeout=60)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
