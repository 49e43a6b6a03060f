"""Centralized DP-SGD vs federated DP, side by side, at the same privacy budget.

The comparison calls the two pipelines' library functions (never their binaries) on the same
train/test split, audits every trained model with a membership-inference attack, and writes
one table, one plot and one TensorBoard logdir.

Arms (each states its privacy unit; an epsilon is only comparable within a unit):

* ``central_nondp``  centralized SGD, no DP. Unit: example (no guarantee, epsilon = inf).
* ``central_dp``     centralized DP-SGD calibrated to each target epsilon. Unit: example.
* ``fed_nondp``      FedAvg over ``fed_num_clients`` IID clients, no DP. Unit: user.
* ``fed_dp``         DP-FedAvg (fixed or adaptive clipping) over the same clients, calibrated to
                     each target epsilon. Unit: user (a user's whole local dataset).
* ``fed_dp_example`` DP-FedAvg with exactly one training example per client (num_clients = N,
                     IID). A user is then one example, so its user-level epsilon is an
                     example-level epsilon: the apples-to-apples counterpart of ``central_dp``.

Layout under ``<root_output_dir>/<experiment_name>/``::

    comparison.json              the settings (a rerun with other settings is refused)
    arms/<arm_id>/...            each pipeline's own run folder (model/, privacy.json, ...)
    arms/<arm_id>/arm_result.json  written atomically LAST: the arm's completion marker
    results.csv results.md privacy_utility.png
    tensorboard/                 hparams experiment at the root, one run per arm below it
    not_for_release/timings.csv  every arm's train/audit/wall time (a DP arm's depend on its
                                 private data, which no guarantee covers): for the data holder only

Resumability: an arm whose ``arm_result.json`` exists is skipped; the tables, plot and
TensorBoard runs are rebuilt from all completed arms at the end of every invocation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data.datasets import Dataset, load_dataset
from training.atomic_files import atomic_write_json, atomic_write_text, jsonable, write_csv
from training.comparison.arms import ArmRunner, Auditor, pipeline_config, run_pipeline_arm
from training.comparison.grid import ArmSpec, ComparisonConfig, arm_grid, check_dataset, headline_metric
from training.comparison.hparams import write_tensorboard_arm, write_tensorboard_experiment
from training.comparison.records import (
    arm_result_path,
    arm_timings,
    load_arm_result,
    make_arm_record,
    write_arm_timings,
)
from training.comparison.tables import metric_label, results_markdown, write_plot
from training.progress import Progress
from training.run_folder import RunFolder, check_output_dir
from training.table_preprocessing import FITTED_FILE


@dataclasses.dataclass
class ComparisonResult:
    output_dir: str
    rows: list[dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    wall_time_s: float  # covers the DP arms: not for release (nothing prints or writes it)
    metric: str = "test_accuracy"  # the table's headline column (grid.headline_metric)


def load_datasets(config: ComparisonConfig, dataset: Dataset | None) -> dict[int, Dataset]:
    """One dataset per seed: load_dataset(seed=s) is the split the pipelines use for seed s."""
    if dataset is not None:
        return {s: dataset for s in config.seeds}
    images = {"image_size": config.image_size, "color_mode": config.color_mode}
    return {s: load_dataset(config.dataset, config.data_dir, seed=s, **images) for s in config.seeds}


def membership_auditor(config: ComparisonConfig) -> Auditor:
    """The secondary audit: LiRA reference models trained once per seed, loss and LiRA AUCs per arm.

    (The primary one, the canary lower bound, is each training run's own: `ArmOutcome.audit`.)
    """
    from training.membership_audit import MembershipAuditor

    audit = MembershipAuditor(config.model, config.audit_reference_models, config.audit_max_per_side)
    return lambda model_dir, dataset, seed, _config: audit(model_dir, dataset, seed)


def validate(config: ComparisonConfig, datasets: Mapping[int, Dataset], check_pipelines: bool = True) -> None:
    """Every check that can fail, done before the first arm starts or any file is written."""
    check_output_dir(config.output_dir)
    for ds in datasets.values():
        check_dataset(config, ds)
        if check_pipelines:  # a user's model is built and checked against the data, before any arm runs
            from models.specs import check_compatible

            check_compatible(config.model, ds.input_shape, ds.num_classes, config.model_init)
        if check_pipelines and config.audit_canaries:
            _check_canary_capacity(config, ds)
    out_dir = config.output_dir
    comparison_json = os.path.join(out_dir, "comparison.json")
    if os.path.exists(comparison_json):
        try:
            with open(comparison_json) as f:
                previous = json.load(f).get("settings")
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {comparison_json}: {e}") from e
        if previous != jsonable(config.settings()):
            raise ValueError(
                f"{out_dir} holds a comparison made with different settings; use a new "
                "--experiment_name (or delete that folder) instead of mixing results"
            )
    for spec in arm_grid(config):
        load_arm_result(out_dir, spec, config.settings())  # raises on a mismatch
        if check_pipelines:
            cfg = pipeline_config(spec, config, datasets[spec.seed].num_train, os.path.join(out_dir, "arms"))
            if spec.arm == "central_dp_tuned":  # its batch sizes fit, its target is reachable
                from training.tuning import check_settings

                check_settings(cfg, datasets[spec.seed].num_train)


def _check_canary_capacity(config: ComparisonConfig, dataset: Dataset) -> None:
    """White-box canaries need one disjoint coordinate (centrally) or direction (federated) each,
    plus one for the other users: refuse a grid whose model is too small before any arm runs."""
    from models.specs import build_model

    model = build_model(config.model, dataset.input_shape, dataset.num_classes, init=config.model_init)
    parameters = sum(v.shape.num_elements() for v in model.trainable_variables)
    if config.audit_canaries >= parameters:
        raise ValueError(
            f"--audit_canaries={config.audit_canaries} needs that many distinct parameter coordinates, "
            f"and the {config.model} model has {parameters} (one is kept for the other users' updates); "
            f"use --audit_canaries<={parameters - 1}"
        )


def collect_rows(config: ComparisonConfig) -> list[dict[str, Any]]:
    rows = []
    for spec in arm_grid(config):
        record = load_arm_result(config.output_dir, spec, config.settings())
        if record is not None:
            rows.append(record["row"])
    return rows


def write_reports(
    config: ComparisonConfig, rows: Sequence[Mapping[str, Any]], metric: str = "test_accuracy"
) -> None:
    """results.csv (every column, every test metric), results.md and the plot (led by `metric`)."""
    out = config.output_dir
    if not rows:
        return
    write_csv(os.path.join(out, "results.csv"), rows)
    atomic_write_text(os.path.join(out, "results.md"), results_markdown(rows, config, metric))
    write_plot(rows, os.path.join(out, "privacy_utility.png"), metric)


def _bound_text(row: Mapping[str, Any]) -> str:
    bound = row.get("epsilon_lower_bound")
    if bound is None:
        return "not audited"
    return f"epsilon lower bound {bound:.2f}" + (" EXCEEDS THE CLAIM" if row["audit_exceeds_claim"] else "")


def _utility_text(row: Mapping[str, Any], metric: str) -> str:
    """The headline metric of an arm's row, then its accuracy ("n/a" where it is not finite)."""
    parts = []
    for m in dict.fromkeys((metric, "test_accuracy")):
        value = row.get(m)
        shown = f"{value:.4f}" if value is not None and math.isfinite(value) else "n/a"
        parts.append(f"{metric_label(m)} {shown}")
    return ", ".join(parts)


def released_positive_fraction(arms_root: str, grid: list[ArmSpec]) -> float | None:
    """A table's share of positive labels as an arm already released it (its preprocessing.json: the
    noisy label histogram of the arm's private preprocessing, so reading it is post-processing): the
    DP arm of the highest target epsilon (the least noise), lowest seed first. Only when the grid has
    no DP arm a non-DP arm's (then nothing in the table is covered anyway). None: no arm released one."""
    candidates = [s for s in grid if s.is_dp] or list(grid)
    for spec in sorted(candidates, key=lambda s: (-(s.target_epsilon or 0.0), s.seed)):
        path = os.path.join(arms_root, spec.arm_id, FITTED_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                fitted = json.load(f)
            fraction = fitted.get("positive_fraction")
            if fraction is not None and (fitted.get("mode") == "private" or not spec.is_dp):
                return float(fraction)
    return None


def _headline(config: ComparisonConfig, num_classes: int, arms_root: str, grid: list[ArmSpec]) -> str:
    """`headline_metric`, for --metric=auto with the positive fraction a table arm released."""
    if config.metric == "auto" and config.positive_fraction is None:
        fraction = released_positive_fraction(arms_root, grid)
        config = dataclasses.replace(config, positive_fraction=fraction)
    return headline_metric(config, num_classes)


def run_comparison(
    config: ComparisonConfig,
    dataset: Dataset | None = None,
    run_arm: ArmRunner | None = None,
    auditor: Auditor | None = None,
    log: Callable[[str], None] = print,
) -> ComparisonResult:
    """Runs the missing arms of the grid, then rebuilds the table, plot and TensorBoard logdir."""
    start = time.time()
    real_pipelines = run_arm is None
    run_arm = run_arm or run_pipeline_arm
    datasets = load_datasets(config, dataset)
    auditor = auditor or membership_auditor(config)
    validate(config, datasets, check_pipelines=real_pipelines)
    num_classes = next(iter(datasets.values())).num_classes  # one label set per seed

    out = RunFolder(config.root_output_dir, config.experiment_name).create().path
    arms_root = os.path.join(out, "arms")
    grid = arm_grid(config)
    metric = _headline(config, num_classes, arms_root, grid)
    os.makedirs(arms_root, exist_ok=True)
    atomic_write_json(
        os.path.join(out, "comparison.json"),
        {"settings": config.settings(), "arms": config.arms, "target_epsilons": config.target_epsilons},
    )
    tb_root = os.path.join(out, "tensorboard")
    ran: list[str] = []
    todo = [spec for spec in grid if load_arm_result(out, spec, config.settings()) is None]
    skipped = [spec.arm_id for spec in grid if spec not in todo]
    if skipped:
        log(f"[compare] {len(skipped)} of {len(grid)} arms already complete: skipped")
    # the elapsed time and ETA of DP arms are timings of their private data: untimed lines then
    timed = not any(spec.is_dp for spec in todo)
    progress = Progress("compare", len(todo), timed=timed, max_lines=max(1, len(todo)), printer=log)
    for i, spec in enumerate(todo, 1):
        outcome = run_arm(spec, config, datasets[spec.seed], arms_root)
        t0 = time.time()
        audit = auditor(outcome.model_dir, datasets[spec.seed], spec.seed, config)
        write_arm_timings(out, arm_timings(spec, outcome, time.time() - t0))  # before the marker
        record = make_arm_record(spec, config, outcome, audit)
        result_path = arm_result_path(out, spec)
        os.makedirs(os.path.dirname(result_path), exist_ok=True)
        atomic_write_json(result_path, record)  # the completion marker, written last
        write_tensorboard_arm(tb_root, record, config)
        ran.append(spec.arm_id)
        r = record["row"]
        progress.step(
            i,
            f"{i}/{len(todo)} {spec.arm_id} ({spec.unit}): {_utility_text(r, metric)}, "
            f"epsilon {r['epsilon']:.3g}, {_bound_text(r)}",
        )
        metric = _headline(config, num_classes, arms_root, grid)  # a table arm may have released it now
        write_reports(config, collect_rows(config), metric)  # partial tables after every arm

    rows = collect_rows(config)
    write_reports(config, rows, metric)
    write_tensorboard_experiment(tb_root, config, metric)
    for spec in grid:  # runs lost between the result and its TensorBoard write are rebuilt
        if not os.path.isdir(os.path.join(tb_root, spec.arm_id)):
            record = load_arm_result(out, spec, config.settings())
            if record is not None:
                write_tensorboard_arm(tb_root, record, config)
    return ComparisonResult(out, rows, ran, skipped, time.time() - start, metric)
