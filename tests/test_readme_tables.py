"""The documents' result tables are what the code prints (benchmarks/readme_tables.py --check).

Each table's block lives in exactly one of README.md and docs/*.md; the script finds it there.
"""

import json
import subprocess
import sys


def _python(repo, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)


def test_every_table_has_exactly_one_home_in_readme_or_docs(repo):
    proc = _python(repo, (
        "import json, os\n"
        "from benchmarks import readme_tables as r\n"
        "texts = {p: open(p, encoding='utf-8').read() for p in r.documents()}\n"
        "print(json.dumps({n: os.path.relpath(r.find_table(n, texts), r.ROOT) for n in r.TABLES}))\n"
    ))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    homes = json.loads(proc.stdout)
    assert set(homes) == {"comparison", "centralized_seeds", "federated_noise", "linear_regression",
                          "prediction_accuracy"}  # fmt: skip
    assert all(path == "README.md" or path.startswith("docs" + "/") for path in homes.values()), homes


def test_a_table_in_no_file_or_in_several_is_an_error(repo):
    block = "<!-- table:linear_regression -->\n| a |\n<!-- /table:linear_regression -->\n"
    for texts, expected in (({"a.md": "none here"}, "no <!-- table:linear_regression -->"),
                            ({"a.md": block, "b.md": block}, "found 2 times")):  # fmt: skip
        proc = _python(repo, (
            "from benchmarks import readme_tables as r\n"
            f"r.find_table('linear_regression', {texts!r})\n"
        ))  # fmt: skip
        assert proc.returncode == 1 and expected in proc.stderr, proc.stderr[-2000:]


def test_readme_linear_regression_and_prediction_tables_match_the_code(repo):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.readme_tables", "--tables=linear_regression,prediction_accuracy",
         "--check"],
        cwd=repo, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
