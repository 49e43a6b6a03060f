"""The README's quick result tables are what the code prints (benchmarks/readme_tables.py --check)."""

import subprocess
import sys


def test_readme_linear_regression_and_prediction_tables_match_the_code(repo):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.readme_tables", "--tables=linear_regression,prediction_accuracy",
         "--check"],
        cwd=repo, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
