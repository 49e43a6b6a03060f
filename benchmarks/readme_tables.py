"""The result tables of README.md and docs/*.md, produced by one script, so that a fresh clone prints them.

  python -m benchmarks.readme_tables                          # print every table (about 12 minutes)
  python -m benchmarks.readme_tables --tables=linear_regression,prediction_accuracy --check
  python -m benchmarks.readme_tables --write                  # rewrite the tables in place

Each table sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->` in exactly one of README.md
and docs/*.md (the script finds which; none or several is an error), and `--check` / `--write` work on
that file. Every number in them is a function of the seeds (no timings: those are in the other
benchmarks), so `--check` (exit 1 on a difference) can hold the documents to what the code produces.
Tables (and where they are now):

  comparison           the demo (`./ppml.sh demo` = `python -m pipelines.compare`), without wall times
                       (README.md; `--write` also refreshes docs/comparison_results.md and the plot)
  centralized_seeds    train_centralized on digits, non-private and DP at epsilon 3, seeds 0/1/2
                       (docs/centralized.md)
  federated_noise      train_federated on digits, non-private and adaptive DP-FedAvg at z = 0.5/1/2
                       (docs/federated.md)
  linear_regression    the seed's linear regression done right, seed 0 (docs/noise-levels.md)
  prediction_accuracy  released-label accuracy against the per-query epsilon (docs/noise-levels.md)
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable

from absl import flags

from pipelines import _app

TABLES = ("comparison", "centralized_seeds", "federated_noise", "linear_regression", "prediction_accuracy")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")

_TABLES = flags.DEFINE_list("tables", list(TABLES), f"Tables to produce, from {','.join(TABLES)}.")
_CHECK = flags.DEFINE_bool(
    "check", False, "Compare with the file holding each table; exit 1 when a table differs."
)
_WRITE = flags.DEFINE_bool("write", False, "Rewrite the tables in the files holding them.")
flags.register_validator("tables", lambda v: bool(v) and set(v) <= set(TABLES), f"choose from {TABLES}")


def comparison(out: str) -> str:
    from training.comparison import ComparisonConfig, run_comparison
    from training.comparison.tables import results_table

    result = run_comparison(ComparisonConfig(root_output_dir=out), log=lambda line: None)
    if _WRITE.value:  # the full table and the plot the README shows, from the same run
        shutil.copy(
            os.path.join(result.output_dir, "results.md"), os.path.join(DOCS, "comparison_results.md")
        )
        shutil.copy(
            os.path.join(result.output_dir, "privacy_utility.png"), os.path.join(DOCS, "privacy_utility.png")
        )
    return "\n".join(results_table(result.rows, timing=False))


def centralized_seeds(out: str) -> str:
    from training import centralized

    cells: dict[str, list[str]] = {"non-private MLP": [], "DP-SGD": []}
    eps, noise = [], []
    for seed in (0, 1, 2):
        for name, kw in (("non-private MLP", {}), ("DP-SGD", dict(dp=True, target_epsilon=3.0))):
            cfg = centralized.CentralizedConfig(
                seed=seed, root_output_dir=out, experiment_name=f"{name}{seed}", **kw
            )
            res = centralized.run(cfg, verbose=False)
            cells[name].append(f"{100 * res.test_accuracy:.1f}%")
            if kw:
                eps.append(res.privacy["epsilon"])
                noise.append(res.privacy["noise_multiplier"])
    low, high = f"{min(noise):.3g}", f"{max(noise):.3g}"
    noises = low if low == high else f"{low}-{high}"
    dp_name = f"DP-SGD, epsilon <= {max(eps):.3f} (delta 1e-5, Poisson, RDP; noise {noises})"
    return "\n".join(
        [
            "| run | test accuracy, seeds 0 / 1 / 2 |",
            "|---|---|",
            f"| non-private MLP | {' / '.join(cells['non-private MLP'])} |",
            f"| {dp_name} | {' / '.join(cells['DP-SGD'])} |",
        ]
    )


def federated_noise(out: str) -> str:
    from training import federated

    lines = [
        "| run | user-level epsilon (delta 1e-5, RDP, Poisson) | test accuracy |",
        "|---|---|---|",
    ]
    for z in (None, 0.5, 1.0, 2.0):
        kw = {} if z is None else dict(aggregator="adaptive", noise_multiplier=z)
        cfg = federated.FederatedConfig(root_output_dir=out, experiment_name=f"z{z}", **kw)
        res = federated.run(cfg, verbose=False)
        eps = res.privacy["epsilon"]
        name = "non-private FedAvg" if z is None else f"adaptive clipping, z = {z:g}"
        lines.append(
            f"| {name} | {'inf' if eps is None else f'{eps:.3g}'} | {100 * res.test_accuracy:.1f}% |"
        )
    return "\n".join(lines)


def linear_regression(out: str) -> str:
    del out
    from training import linear_regression as lr

    lines = ["| method | epsilon | z | slope | intercept | test MSE |", "|---|---|---|---|---|---|"]
    for r in lr.run_example(lr.ExampleConfig(), seed=0):
        if r.guarantee == lr.SEED_LOOP_GUARANTEE:
            method, eps, z = "the seed's loop (gradient + N(0, 0.1^2), no clipping)", "**no guarantee**", "-"
        elif math.isinf(r.epsilon):
            method, eps, z = "SGD, non-private", "inf", "0"
        else:
            method, eps, z = "DP-SGD", f"{r.epsilon:.3f}", f"{r.noise_multiplier:.3f}"
        lines.append(f"| {method} | {eps} | {z} | {r.slope:.4f} | {r.intercept:.4f} | {r.test_mse:.4f} |")
    return "\n".join(lines)


def prediction_accuracy(out: str) -> str:
    del out
    from benchmarks.prediction_accuracy import sklearn_probabilities
    from privacy import prediction_release

    probs, labels = sklearn_probabilities("digits", None, seed=0)
    epsilons = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
    rows = prediction_release.accuracy_vs_epsilon(probs, labels, epsilons, repeats=5, seed=0)
    by = {(r["mechanism"], r["epsilon"]): r["accuracy"] for r in rows}
    mechanisms = ("exponential", "noisy_max_laplace", "randomized_response", "laplace")
    lines = [
        "| EPS / query | exponential | noisy-max Laplace | randomized response "
        "| noisy scores (Laplace) -> argmax |",
        "|---|---|---|---|---|",
    ]
    for eps in epsilons:
        lines.append(f"| {eps:g} | " + " | ".join(f"{by[(m, eps)]:.3f}" for m in mechanisms) + " |")
    return "\n".join(lines)


PRODUCERS: dict[str, Callable[[str], str]] = {
    "comparison": comparison,
    "centralized_seeds": centralized_seeds,
    "federated_noise": federated_noise,
    "linear_regression": linear_regression,
    "prediction_accuracy": prediction_accuracy,
}


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{name} -->\n)(.*?)(\n<!-- /table:{name} -->)", re.S)


def documents() -> list[str]:
    """The files that may hold a table: README.md, then docs/*.md in name order."""
    names = sorted(f for f in os.listdir(DOCS) if f.endswith(".md")) if os.path.isdir(DOCS) else []
    return [README] + [os.path.join(DOCS, f) for f in names]


def find_table(name: str, texts: dict[str, str]) -> str:
    """The one file (a key of `texts`) whose text holds the block of table `name`; exit if none or several."""
    holders = [path for path, text in texts.items() for _ in _block(name).finditer(text)]
    where = "README.md or docs/*.md"
    if not holders:
        sys.exit(f"no <!-- table:{name} --> ... <!-- /table:{name} --> block in {where}")
    if len(holders) > 1:
        found = ", ".join(os.path.relpath(p, ROOT) for p in holders)
        sys.exit(f"<!-- table:{name} --> block found {len(holders)} times ({found}); keep one in {where}")
    return holders[0]


def main(argv: list[str]) -> None:
    del argv
    from pipelines._app import import_tensorflow

    texts = {path: open(path, encoding="utf-8").read() for path in documents()}
    homes = {name: find_table(name, texts) for name in _TABLES.value}  # fail before the minutes of work
    import_tensorflow()
    differ: dict[str, list[str]] = {}  # file -> tables that differ there
    with tempfile.TemporaryDirectory() as out:
        for name in _TABLES.value:
            table = PRODUCERS[name](out)
            print(f"<!-- table:{name} -->\n{table}\n<!-- /table:{name} -->\n", flush=True)
            path = homes[name]
            match = _block(name).search(texts[path])
            if match.group(2) != table:
                differ.setdefault(path, []).append(name)
                texts[path] = texts[path][: match.start(2)] + table + texts[path][match.end(2) :]
    changed = ", ".join(f"{os.path.relpath(p, ROOT)} ({', '.join(n)})" for p, n in differ.items())
    if _WRITE.value:
        for path in differ:
            with open(path, "w", encoding="utf-8") as f:
                f.write(texts[path])
        print(f"rewrote {sum(map(len, differ.values()))} table(s): {changed or 'none differed'}")
    elif _CHECK.value and differ:
        sys.exit(f"differs from what the code produces: {changed}")


if __name__ == "__main__":
    _app.run(main, __name__)
