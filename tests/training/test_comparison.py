"""The comparison: validation before any run, tables/plot, resumability (cheap fake arms), and
one slow end-to-end run through the real pipelines."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

from training import comparison
from training.comparison import ComparisonConfig, arms, driver, grid, records


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
def test_config_rejects_bad_input(tmp_path, kw, message, comparison_config):
    with pytest.raises(ValueError, match=message):
        comparison_config(**kw)


def test_nondp_only_needs_no_epsilons(tmp_path, comparison_config):
    assert comparison_config(arms=("central_nondp",), target_epsilons=()).arms == ("central_nondp",)


def test_delta_must_be_below_one_over_units(tmp_path, comparison_config, fake_dataset):
    ds = fake_dataset(n_train=400)
    # example level: N = 400 -> 1/N = 0.0025
    with pytest.raises(ValueError, match="central_dp"):
        grid.check_dataset(comparison_config(arms=("central_dp",), delta=0.003), ds)
    # user level: 50 clients -> 1/50 = 0.02 (0.003 is fine for users, too big for examples)
    grid.check_dataset(comparison_config(arms=("fed_dp",), delta=0.003), ds)
    with pytest.raises(ValueError, match="fed_dp .*50 clients"):
        grid.check_dataset(comparison_config(arms=("fed_dp",), delta=0.02), ds)
    with pytest.raises(ValueError, match="fed_dp_example"):
        grid.check_dataset(comparison_config(arms=("fed_dp_example",), delta=0.003), ds)
    grid.check_dataset(comparison_config(arms=("central_nondp",), delta=0.5), ds)  # no DP: no delta


def test_bad_input_leaves_earlier_results_untouched(tmp_path, comparison_config, fake_arms, run_fake):
    fake = fake_arms()
    cfg = comparison_config(arms=("central_nondp", "central_dp"))
    run_fake(cfg, fake)
    out = cfg.output_dir
    before = {f: open(os.path.join(out, f), "rb").read() for f in ("results.csv", "results.md")}
    fake2 = fake_arms()
    with pytest.raises(ValueError, match="delta"):  # N = 400: delta 0.01 >= 1/N
        run_fake(
            comparison_config(arms=("central_nondp", "central_dp"), delta=0.01, target_epsilons=(8.0,)), fake2
        )
    with pytest.raises(ValueError, match="different settings"):  # same folder, other settings
        run_fake(comparison_config(arms=("central_nondp", "central_dp"), central_epochs=3), fake2)
    assert fake2.calls == []
    after = {f: open(os.path.join(out, f), "rb").read() for f in before}
    assert after == before


def test_unwritable_output_dir_fails_before_any_run(tmp_path, comparison_config, fake_arms, run_fake):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    fake = fake_arms()
    with pytest.raises(ValueError, match="not a folder"):
        run_fake(comparison_config(root_output_dir=str(blocker)), fake)
    assert fake.calls == []
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="not writable"):
                run_fake(comparison_config(root_output_dir=str(ro / "x")), fake)
        finally:
            ro.chmod(0o700)


def test_tables_plot_and_tensorboard_runs(tmp_path, comparison_config, fake_arms, run_fake):
    fake = fake_arms(refuted="central_dp_eps1_seed1")
    cfg = comparison_config(seeds=(0, 1))
    res = run_fake(cfg, fake)
    grid = comparison.arm_grid(cfg)
    assert len(res.ran) == len(grid) == len(res.rows) and res.skipped == []
    out = cfg.output_dir
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(grid)
    assert {"arm", "unit", "seed", "target_epsilon", "epsilon", "test_accuracy", "attack_auc"} <= set(rows[0])
    assert {"epsilon_lower_bound", "audit_mode", "audit_exceeds_claim", "canary_auc"} <= set(rows[0])
    by_id = {r["arm_id"]: r for r in rows}
    assert float(by_id["central_dp_eps3_seed0"]["epsilon_lower_bound"]) == pytest.approx(1.2)
    assert by_id["central_dp_eps1_seed1"]["audit_exceeds_claim"] == "True"
    md = open(os.path.join(out, "results.md")).read()
    # the lower bound beside the proven epsilon, and the refuted row marked
    assert "| central_dp | example | 1 | 0.98 ± 0.00 | 4.70 ± 6.08 ⚠ EXCEEDS ε |" in md
    assert "| central_dp | example | 3 | 2.94 ± 0.00 | 1.20 ± 0.00 |" in md
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
    record = json.load(open(records.arm_result_path(out, grid[0])))
    assert record["row"]["unit"] == grid[0].unit and record["history"]


def test_rerun_skips_complete_arms_and_finishes_the_rest(tmp_path, comparison_config, fake_arms, run_fake):
    cfg = comparison_config()
    grid_ids = [s.arm_id for s in comparison.arm_grid(cfg)]
    crash_at = grid_ids[3]
    fake = fake_arms(fail_on=crash_at)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_fake(cfg, fake)
    assert fake.calls == grid_ids[:3]
    out = cfg.output_dir
    assert not os.path.exists(os.path.join(out, "arms", crash_at, records.RESULT_FILE))
    with open(os.path.join(out, "results.csv")) as f:  # partial table of what finished
        assert len(list(csv.DictReader(f))) == 3

    fake2 = fake_arms()
    res = run_fake(cfg, fake2)
    assert fake2.calls == grid_ids[3:] and res.skipped == grid_ids[:3]
    fake3 = fake_arms()
    res3 = run_fake(cfg, fake3)
    assert fake3.calls == [] and len(res3.rows) == len(grid_ids)
    # Adding an epsilon to the same comparison runs only the new arms.
    fake4 = fake_arms()
    run_fake(comparison_config(target_epsilons=(1.0, 3.0, 8.0)), fake4)
    assert fake4.calls == ["central_dp_eps8_seed0", "fed_dp_eps8_seed0", "fed_dp_example_eps8_seed0"]


def test_lost_tensorboard_run_is_rebuilt(tmp_path, comparison_config, fake_arms, run_fake):
    import shutil

    cfg = comparison_config(arms=("central_nondp",))
    run_fake(cfg, fake_arms())
    tb_run = os.path.join(cfg.output_dir, "tensorboard", "central_nondp_nodp_seed0")
    shutil.rmtree(tb_run)
    run_fake(cfg, fake_arms())
    assert os.path.isdir(tb_run)


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
    central = arms.centralized_config(spec, cfg, str(tmp_path / "arms"))
    assert not central.dp and central.target_epsilon is None  # no DP-SGD: the noise is in the labels
    assert central.local_dp.label_epsilon == 2.0
    outcome = comparison.run_pipeline_arm(spec, cfg, load_digits(), str(tmp_path / "arms"))
    record = records.make_arm_record(spec, cfg, outcome, {})
    assert record["row"]["epsilon"] == 2.0 and record["row"]["delta"] == 0.0
    assert record["row"]["unit"].startswith("example label")


def test_tuned_arm_states_the_epsilon_of_its_whole_search(tmp_path):
    from data.datasets import load_digits

    cfg = ComparisonConfig(arms=("central_dp_tuned",), target_epsilons=(3.0,), root_output_dir=str(tmp_path))
    spec = comparison.arm_grid(cfg)[0]
    outcome = comparison.run_pipeline_arm(spec, cfg, load_digits(), str(tmp_path / "arms"))
    record = records.make_arm_record(spec, cfg, outcome, {})
    assert record["row"]["epsilon"] <= 3.0 and record["row"]["unit"].startswith("example")
    tuning = record["privacy"]["tuning"]
    assert tuning["distribution"] == "truncated_negative_binomial"  # RepeatAndSelect: the search, not one run
    # K is secret: neither the record nor its row holds it, nor the wall time, which grows with it
    assert "runs_made" not in tuning and not record["history"]
    assert not any(k.endswith("_time_s") for k in record["row"])  # no timings in a record at all
    timings = records.arm_timings(spec, outcome, 1.0)
    assert math.isnan(timings["train_time_s"]) and math.isnan(timings["wall_time_s"])
    assert 0.5 < record["row"]["test_accuracy"] <= 1 and os.path.isdir(outcome.model_dir)


def _binary_dataset(n_train: int = 400, n_test: int = 100):
    import numpy as np

    from data.datasets import Dataset

    rng = np.random.default_rng(1)
    x = rng.normal(size=(n_train + n_test, 4)).astype(np.float32)
    y = (rng.random(n_train + n_test) < 0.1).astype(np.int32)  # 10% positives
    return Dataset("fake_binary", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=2)


class _FakeArmsWithAuc:
    """The fake arms, each also reporting AUC and average precision (as the pipelines do)."""

    def __init__(self, fake):
        self.fake, self.audit = fake, fake.audit

    def run(self, spec, config, dataset, arms_root):
        import dataclasses

        outcome = self.fake.run(spec, config, dataset, arms_root)
        auc = 0.9 if spec.target_epsilon is None else 0.9 - 0.2 / spec.target_epsilon
        extra = {"test_loss": outcome.test_loss, "test_accuracy": outcome.test_accuracy,
                 "test_auc": auc, "test_average_precision": auc - 0.3}  # fmt: skip
        return dataclasses.replace(outcome, test_metrics=extra)


def test_headline_metric_leads_the_table_and_rows_carry_every_test_metric(
    tmp_path, comparison_config, fake_arms, run_fake
):
    arms_ = ("central_nondp", "central_dp")
    cfg = comparison_config(arms=arms_, target_epsilons=(1.0, 4.0), metric="test_auc")
    fake = _FakeArmsWithAuc(fake_arms())
    res = run_fake(cfg, fake, _binary_dataset())
    assert res.metric == "test_auc"
    with open(os.path.join(cfg.output_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    by_id = {r["arm_id"]: r for r in rows}
    assert float(by_id["central_dp_eps4_seed0"]["test_auc"]) == pytest.approx(0.85)
    assert float(by_id["central_dp_eps4_seed0"]["test_average_precision"]) == pytest.approx(0.55)
    assert {"test_accuracy", "test_loss", "attack_auc", "epsilon_lower_bound"} <= set(rows[0])
    md = open(os.path.join(cfg.output_dir, "results.md")).read()
    assert "| noise | AUC | accuracy | loss-attack AUC |" in md  # the headline first, accuracy kept
    assert "Headline metric: AUC (test_auc; higher is better), chosen by --metric" in md
    assert "| central_dp | example | 4 | 3.92 | 1.60 | 1 | 0.850 | 0.890 |" in md
    # another headline is a view of the same arms: nothing reruns, the tables are rebuilt
    again = run_fake(comparison_config(arms=arms_, target_epsilons=(1.0, 4.0)), fake, _binary_dataset())
    assert again.ran == [] and again.metric == "test_accuracy"  # auto with no DP estimate: accuracy
    md = open(os.path.join(cfg.output_dir, "results.md")).read()
    assert "| noise | accuracy | loss-attack AUC |" in md and "--metric=auto" in md


def test_auto_metric_needs_a_stated_positive_fraction(comparison_config, fake_dataset):
    from training.comparison.grid import headline_metric

    assert headline_metric(comparison_config(), 2) == "test_accuracy"  # no DP/public estimate
    assert headline_metric(comparison_config(positive_fraction=0.05), 2) == "test_auc"
    assert headline_metric(comparison_config(positive_fraction=0.05), 3) == "test_accuracy"
    assert headline_metric(comparison_config(metric="test_recall_1"), 3) == "test_recall_1"
    with pytest.raises(ValueError, match="metric"):
        comparison_config(metric="auc")
    with pytest.raises(ValueError, match="positive_fraction"):
        comparison_config(positive_fraction=1.5)
    with pytest.raises(ValueError, match="test_auc is not measured on 3-class labels"):
        grid.check_dataset(comparison_config(metric="test_auc"), fake_dataset())
    assert "metric" not in comparison_config(metric="test_loss").settings()  # a view, not an arm setting


def test_an_arm_outcome_carries_the_pipeline_results_test_metrics(tmp_path, monkeypatch, comparison_config):
    import types

    from training import centralized

    reported = {"test_loss": 0.3, "test_accuracy": 0.9, "test_auc": 0.8, "test_average_precision": 0.5}
    result = types.SimpleNamespace(
        output_dir=str(tmp_path / "arm"), test_accuracy=0.9, test_loss=0.3, privacy={}, wall_time_s=1.0,
        history=[], audit=None, test_metrics=reported,
    )  # fmt: skip
    monkeypatch.setattr(centralized, "run", lambda *args, **kwargs: result)
    cfg = comparison_config(arms=("central_nondp",))
    spec = comparison.arm_grid(cfg)[0]
    outcome = comparison.run_pipeline_arm(spec, cfg, _binary_dataset(), str(tmp_path / "arms"))
    assert outcome.test_metrics == reported
    row = records.make_arm_record(spec, cfg, outcome, {})["row"]
    assert row["test_auc"] == 0.8 and row["test_average_precision"] == 0.5 and row["test_accuracy"] == 0.9


def test_auto_metric_of_a_table_takes_the_positive_fraction_a_dp_arm_released(
    tmp_path, comparison_config, fake_arms, run_fake
):
    arms_ = ("central_nondp", "central_dp")
    cfg = comparison_config(arms=arms_, target_epsilons=(1.0, 4.0))
    fake = _FakeArmsWithAuc(fake_arms())
    assert run_fake(cfg, fake, _binary_dataset()).metric == "test_accuracy"  # no arm released one
    arms_root = os.path.join(cfg.output_dir, "arms")

    def released(arm_id, fraction):
        os.makedirs(os.path.join(arms_root, arm_id), exist_ok=True)
        with open(os.path.join(arms_root, arm_id, "preprocessing.json"), "w") as f:
            json.dump({"mode": "private", "positive_fraction": fraction}, f)

    # a non-DP arm's plain label share is never used when the grid has DP arms (it is not covered)
    released("central_nondp_nodp_seed0", 0.05)
    assert run_fake(cfg, fake, _binary_dataset()).metric == "test_accuracy"
    released("central_dp_eps1_seed0", 0.5)
    released("central_dp_eps4_seed0", 0.05)  # the least noisy estimate wins
    again = run_fake(cfg, fake, _binary_dataset())
    assert again.ran == [] and again.metric == "test_auc"
    assert "| noise | AUC | accuracy |" in open(os.path.join(cfg.output_dir, "results.md")).read()
    grid_ = grid.arm_grid(cfg)
    assert driver.released_positive_fraction(arms_root, grid_) == 0.05
    nondp_only = [s for s in grid_ if not s.is_dp]
    assert driver.released_positive_fraction(arms_root, nondp_only) == 0.05
