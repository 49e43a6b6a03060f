"""The comparison: validation before any run, tables/plot, resumability (cheap fake arms), and
one slow end-to-end run through the real pipelines."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data.datasets import Dataset
from pipelines import comparison
from pipelines.comparison import ArmOutcome, ArmSpec, ComparisonConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dataset(n_train: int = 400, n_test: int = 100) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(
        "fake",
        rng.normal(size=(n_train, 4)).astype(np.float32),
        rng.integers(0, 3, n_train).astype(np.int32),
        rng.normal(size=(n_test, 4)).astype(np.float32),
        rng.integers(0, 3, n_test).astype(np.int32),
        num_classes=3,
    )


class FakeArms:
    """Cheap, deterministic stand-ins for the pipelines and the auditor; records calls."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[str] = []
        self.fail_on = fail_on

    def run(self, spec: ArmSpec, config: ComparisonConfig, dataset: Dataset, arms_root: str) -> ArmOutcome:
        if spec.arm_id == self.fail_on:
            raise RuntimeError("simulated crash")
        self.calls.append(spec.arm_id)
        out = os.path.join(arms_root, spec.arm_id)
        os.makedirs(out, exist_ok=True)
        eps = spec.target_epsilon
        acc = 0.95 if eps is None else 0.95 - 0.3 / (1 + eps) + 0.01 * spec.seed
        return ArmOutcome(
            output_dir=out,
            test_accuracy=acc,
            test_loss=1 - acc,
            privacy={
                "epsilon": float("inf") if eps is None else eps * 0.98,
                "noise_multiplier": 1.0,
                "clip": 1.0,
            },
            wall_time_s=1.0,
            history=[{"epoch": 1, "test_accuracy": acc - 0.1}, {"epoch": 2, "test_accuracy": acc}],
            model_dir=os.path.join(out, "model"),
            clients_per_round=None if spec.pipeline == "centralized" else 10,
            num_clients=None if spec.pipeline == "centralized" else 50,
        )

    def audit(self, model_dir: str, dataset: Dataset, seed: int, config: ComparisonConfig) -> dict:
        private = "_nodp_" not in model_dir
        auc = 0.52 if private else 0.6
        return {
            "attacks": {
                "loss_threshold": {"auc": auc, "tpr_at_fpr": 0.01},
                "lira_offline": {"auc": auc + 0.01},
            },
            "member_accuracy": 1.0,
            "nonmember_accuracy": 0.9,
        }


def _config(tmp_path, **kw) -> ComparisonConfig:
    base = dict(
        target_epsilons=(1.0, 3.0),
        root_output_dir=str(tmp_path / "runs"),
        experiment_name="cmp",
        fed_num_clients=50,
        fed_clients_per_round=10,
        audit_reference_models=0,
    )
    base.update(kw)
    return ComparisonConfig(**base)


def _run(config, fake, dataset=None):
    return comparison.run_comparison(
        config, dataset=dataset or _dataset(), run_arm=fake.run, auditor=fake.audit, log=lambda s: None
    )


# ---------------------------------------------------------------- grid and validation


def test_grid_states_units_and_ids():
    grid = comparison.arm_grid(ComparisonConfig(target_epsilons=(1.0, 3.0), seeds=(0, 1)))
    assert len(grid) == 2 * (2 + 3 * 2)
    ids = [s.arm_id for s in grid]
    assert len(set(ids)) == len(ids) and "central_dp_eps3_seed1" in ids and "fed_nondp_nodp_seed0" in ids
    units = {s.arm: s.unit for s in grid}
    assert units["central_dp"] == "example" and units["fed_dp"] == "user"
    assert units["fed_dp_example"].startswith("example")


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(target_epsilons=()), "empty"),
        (dict(target_epsilons=(3.0, -1.0)), "> 0"),
        (dict(target_epsilons=(float("inf"),)), "finite"),
        (dict(arms=("central_dp", "quantum_dp")), "unknown arm"),
        (dict(arms=()), "no arms"),
        (dict(seeds=()), "seed"),
        (dict(delta=1.5), "delta"),
        (dict(fed_aggregator="tree"), "fed_aggregator"),
        (dict(experiment_name="a/b"), "plain folder"),
    ],
)
def test_config_rejects_bad_input(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **kw)


def test_nondp_only_needs_no_epsilons(tmp_path):
    assert _config(tmp_path, arms=("central_nondp",), target_epsilons=()).arms == ("central_nondp",)


def test_delta_must_be_below_one_over_units(tmp_path):
    ds = _dataset(n_train=400)
    # example level: N = 400 -> 1/N = 0.0025
    with pytest.raises(ValueError, match="central_dp"):
        comparison.check_dataset(_config(tmp_path, arms=("central_dp",), delta=0.003), ds)
    # user level: 50 clients -> 1/50 = 0.02 (0.003 is fine for users, too big for examples)
    comparison.check_dataset(_config(tmp_path, arms=("fed_dp",), delta=0.003), ds)
    with pytest.raises(ValueError, match="fed_dp .*50 clients"):
        comparison.check_dataset(_config(tmp_path, arms=("fed_dp",), delta=0.02), ds)
    with pytest.raises(ValueError, match="fed_dp_example"):
        comparison.check_dataset(_config(tmp_path, arms=("fed_dp_example",), delta=0.003), ds)
    comparison.check_dataset(_config(tmp_path, arms=("central_nondp",), delta=0.5), ds)  # no DP: no delta


def test_bad_input_leaves_earlier_results_untouched(tmp_path):
    fake = FakeArms()
    cfg = _config(tmp_path, arms=("central_nondp", "central_dp"))
    _run(cfg, fake)
    out = cfg.output_dir
    before = {f: open(os.path.join(out, f), "rb").read() for f in ("results.csv", "results.md")}
    fake2 = FakeArms()
    with pytest.raises(ValueError, match="delta"):  # N = 400: delta 0.01 >= 1/N
        _run(
            _config(tmp_path, arms=("central_nondp", "central_dp"), delta=0.01, target_epsilons=(8.0,)), fake2
        )
    with pytest.raises(ValueError, match="different settings"):  # same folder, other settings
        _run(_config(tmp_path, arms=("central_nondp", "central_dp"), central_epochs=3), fake2)
    assert fake2.calls == []
    after = {f: open(os.path.join(out, f), "rb").read() for f in before}
    assert after == before


def test_unwritable_output_dir_fails_before_any_run(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    fake = FakeArms()
    with pytest.raises(ValueError, match="not a folder"):
        _run(_config(tmp_path, root_output_dir=str(blocker)), fake)
    assert fake.calls == []
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="not writable"):
                _run(_config(tmp_path, root_output_dir=str(ro / "x")), fake)
        finally:
            ro.chmod(0o700)


# ---------------------------------------------------------------- outputs


def test_tables_plot_and_tensorboard_runs(tmp_path):
    fake = FakeArms()
    cfg = _config(tmp_path, seeds=(0, 1))
    res = _run(cfg, fake)
    grid = comparison.arm_grid(cfg)
    assert len(res.ran) == len(grid) == len(res.rows) and res.skipped == []
    out = cfg.output_dir
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(grid)
    assert {"arm", "unit", "seed", "target_epsilon", "epsilon", "test_accuracy", "attack_auc"} <= set(rows[0])
    md = open(os.path.join(out, "results.md")).read()
    assert "| central_dp | example | 3 |" in md and "| fed_dp | user | 1 |" in md
    assert "±" in md  # two seeds: mean ± std
    assert "∞ (non-private)" in md
    # mean over seeds 0 and 1 of central_dp at eps=3: 0.95 - 0.075 + {0, 0.01}
    assert "0.880 ± 0.007" in md
    png = open(os.path.join(out, "privacy_utility.png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    tb = os.path.join(out, "tensorboard")
    assert sorted(d for d in os.listdir(tb) if not d.startswith("events")) == sorted(s.arm_id for s in grid)
    assert sum(f.startswith("events.out.tfevents") for f in os.listdir(tb)) == 1
    record = json.load(open(comparison.arm_result_path(out, grid[0])))
    assert record["row"]["unit"] == grid[0].unit and record["history"]


def test_rerun_skips_complete_arms_and_finishes_the_rest(tmp_path):
    cfg = _config(tmp_path)
    grid_ids = [s.arm_id for s in comparison.arm_grid(cfg)]
    crash_at = grid_ids[3]
    fake = FakeArms(fail_on=crash_at)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(cfg, fake)
    assert fake.calls == grid_ids[:3]
    out = cfg.output_dir
    assert not os.path.exists(os.path.join(out, "arms", crash_at, comparison.RESULT_FILE))
    with open(os.path.join(out, "results.csv")) as f:  # partial table of what finished
        assert len(list(csv.DictReader(f))) == 3

    fake2 = FakeArms()
    res = _run(cfg, fake2)
    assert fake2.calls == grid_ids[3:] and res.skipped == grid_ids[:3]
    fake3 = FakeArms()
    res3 = _run(cfg, fake3)
    assert fake3.calls == [] and len(res3.rows) == len(grid_ids)
    # Adding an epsilon to the same comparison runs only the new arms.
    fake4 = FakeArms()
    _run(_config(tmp_path, target_epsilons=(1.0, 3.0, 8.0)), fake4)
    assert fake4.calls == ["central_dp_eps8_seed0", "fed_dp_eps8_seed0", "fed_dp_example_eps8_seed0"]


def test_lost_tensorboard_run_is_rebuilt(tmp_path):
    import shutil

    cfg = _config(tmp_path, arms=("central_nondp",))
    _run(cfg, FakeArms())
    tb_run = os.path.join(cfg.output_dir, "tensorboard", "central_nondp_nodp_seed0")
    shutil.rmtree(tb_run)
    _run(cfg, FakeArms())
    assert os.path.isdir(tb_run)


# ---------------------------------------------------------------- the binary


def _compare(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "pipelines.compare", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target_epsilons="], "target_epsilons"),
        (["--target_epsilons=1,-3"], "target_epsilons"),
        (["--arms=central_dp,foo"], "--arms"),
        (["--delta=0.01"], "delta=0.01 must be < 1/"),  # digits: 1437 training examples
    ],
)
def test_binary_rejects_bad_flags_cleanly(tmp_path, args, message):
    p = _compare(f"--root_output_dir={tmp_path}", *args)
    assert p.returncode != 0
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(tmp_path / "comparison")


def test_binary_help_is_fast_and_lists_arms():
    import time

    t0 = time.time()
    p = _compare("--help")  # absl exits 1 after printing help
    assert "fed_dp_example" in p.stdout and "Traceback" not in p.stderr
    assert time.time() - t0 < 5, "--help must not import TensorFlow"


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_end_to_end_tiny_comparison_on_digits(tmp_path):
    cfg = ComparisonConfig(
        target_epsilons=(3.0,),
        root_output_dir=str(tmp_path),
        experiment_name="e2e",
        central_epochs=3,
        fed_num_clients=50,
        fed_clients_per_round=10,
        fed_rounds=3,
        fed_example_clients_per_round=20,
        fed_example_rounds=3,
        audit_reference_models=1,
        audit_max_per_side=100,
    )
    res = comparison.run_comparison(cfg)
    assert len(res.rows) == 5
    by_arm = {r["arm"]: r for r in res.rows}
    for arm in ("central_dp", "fed_dp", "fed_dp_example"):
        assert 0 < by_arm[arm]["epsilon"] <= 3.0 + 1e-6, by_arm[arm]
    for r in res.rows:
        assert 0.0 <= r["test_accuracy"] <= 1.0 and 0.0 <= r["attack_auc"] <= 1.0
    assert by_arm["central_nondp"]["test_accuracy"] > 0.5
    for f in ("results.csv", "results.md", "privacy_utility.png"):
        assert os.path.getsize(os.path.join(res.output_dir, f)) > 0
    again = comparison.run_comparison(cfg)
    assert again.ran == [] and len(again.skipped) == 5


def test_local_label_dp_arm_trains_on_randomized_labels_and_reports_local_epsilon(tmp_path):
    from data.datasets import load_digits

    cfg = ComparisonConfig(
        arms=("central_label_ldp",), target_epsilons=(2.0,), root_output_dir=str(tmp_path),
        experiment_name="ldp", central_epochs=2,
    )  # fmt: skip
    spec = comparison.arm_grid(cfg)[0]
    central = comparison.centralized_config(spec, cfg, str(tmp_path / "arms"))
    assert not central.dp and central.target_epsilon is None  # no DP-SGD: the noise is in the labels
    assert central.local_dp.label_epsilon == 2.0
    outcome = comparison.run_pipeline_arm(spec, cfg, load_digits(), str(tmp_path / "arms"))
    record = comparison.make_arm_record(spec, cfg, outcome, {}, 0.0)
    assert record["row"]["epsilon"] == 2.0 and record["row"]["delta"] == 0.0
    assert record["row"]["unit"].startswith("example label")
