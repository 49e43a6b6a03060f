"""Arm results on disk: one record per completed arm, written last, so reruns skip finished arms.

No record holds a timing: a DP arm's train time grows with the batches (clients) its sampling drew,
a statistic of the private data that no guarantee covers. Every arm's timings go to
not_for_release/timings.csv of the comparison folder, for the data holder.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from typing import Any

from privacy.report import reported_epsilon
from training.atomic_files import jsonable, write_csv
from training.comparison.arms import ArmOutcome
from training.comparison.grid import ArmSpec, ComparisonConfig
from training.run_folder import RunFolder

RESULT_FILE = "arm_result.json"
# bump when the audit or the record changes: old records are refused. 6: no timings (version 5 rows
# and histories held them, and a rerun would copy them into results.csv again). Not bumped for the
# rows' extra test metrics (test_auc, test_balanced_accuracy, ...): an older row simply lacks them.
ARM_RESULT_VERSION = 6
TIMINGS_FILE = os.path.join(RunFolder.NOT_FOR_RELEASE, "timings.csv")
TIMING_SUFFIX = "_time_s"  # epoch_time_s, round_time_s: the history's timings


def arm_result_path(out_dir: str, spec: ArmSpec) -> str:
    return os.path.join(out_dir, "arms", spec.arm_id, RESULT_FILE)


def load_arm_result(out_dir: str, spec: ArmSpec, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The completed arm's record, None if not complete; an error if made with other settings."""
    path = arm_result_path(out_dir, spec)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read completed arm {path}: {e}; delete it to rerun the arm") from e
    if record.get("version") != ARM_RESULT_VERSION:
        raise ValueError(
            f"arm {spec.arm_id} in {out_dir} was recorded by another version of the comparison "
            f"(record version {record.get('version')}, expected {ARM_RESULT_VERSION}); use a new "
            "--experiment_name (or delete that folder)"
        )
    if record.get("settings") != jsonable(dict(settings)):
        raise ValueError(
            f"arm {spec.arm_id} in {out_dir} was completed with different settings; "
            "use a new --experiment_name (or delete that folder) instead of mixing results"
        )
    return record


def _achieved_epsilon(spec: ArmSpec, p: Mapping[str, Any]) -> float:
    if spec.arm == "central_label_ldp":  # the local (per-label) epsilon, as released
        return float(p["local_dp"]["labels"]["epsilon"])
    return reported_epsilon(p)


def _audit_columns(audit: Mapping[str, Any] | None) -> dict[str, Any]:
    """The canary audit's columns: the primary (white-box) bound, the black-box one, the verdict."""
    if not audit:
        return {
            "epsilon_lower_bound": None,
            "epsilon_audit_ceiling": None,
            "audit_mode": None,
            "audit_exceeds_claim": None,
            "black_box_epsilon_lower_bound": None,
            "canary_auc": None,
        }
    kinds = audit["kinds"]
    black = kinds.get("black_box", {})
    return {
        "epsilon_lower_bound": audit["epsilon_lower_bound"],
        "epsilon_audit_ceiling": audit.get("epsilon_ceiling"),
        "audit_mode": "white-box" if "white_box" in kinds else "black-box",
        "audit_exceeds_claim": audit["exceeds_claim"],
        "black_box_epsilon_lower_bound": black.get("epsilon_lower_bound"),
        "canary_auc": black.get("auc"),
    }


def arm_timings(spec: ArmSpec, outcome: ArmOutcome, audit_time_s: float) -> dict[str, Any]:
    """The arm's row of not_for_release/timings.csv (the tuned arm's train time is NaN: it grows with K)."""
    return {
        "arm_id": spec.arm_id,
        "train_time_s": outcome.wall_time_s,
        "audit_time_s": audit_time_s,
        "wall_time_s": outcome.wall_time_s + audit_time_s,
    }


def write_arm_timings(out_dir: str, timings: Mapping[str, Any]) -> None:
    """Adds (or replaces, for a rerun arm) one arm's row of <out_dir>/not_for_release/timings.csv."""
    path = os.path.join(out_dir, TIMINGS_FILE)
    rows: list[Mapping[str, Any]] = []
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("arm_id") != timings["arm_id"]]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_csv(path, [*rows, timings])


def make_arm_record(
    spec: ArmSpec, config: ComparisonConfig, outcome: ArmOutcome, audit: dict
) -> dict[str, Any]:
    """The arm's completion record: its results.csv row, privacy report, audits and history (untimed)."""
    p = outcome.privacy
    attacks = audit.get("attacks", {})
    row = {
        "arm": spec.arm,
        "arm_id": spec.arm_id,
        "pipeline": spec.pipeline,
        "unit": spec.unit,
        "seed": spec.seed,
        "target_epsilon": spec.target_epsilon,
        "epsilon": _achieved_epsilon(spec, p),
        "delta": (0.0 if spec.arm == "central_label_ldp" else config.delta) if spec.is_dp else None,
        "accountant": p.get("accountant"),
        "noise_multiplier": p.get("noise_multiplier", 0.0 if not spec.is_dp else None),
        "l2_norm_clip": p.get("l2_norm_clip"),
        "num_clients": outcome.num_clients,
        "clients_per_round": outcome.clients_per_round,
        "test_accuracy": outcome.test_accuracy,
        "test_loss": outcome.test_loss,
        **{k: v for k, v in outcome.test_metrics.items() if k not in ("test_accuracy", "test_loss")},
        "attack_auc": attacks.get("loss_threshold", {}).get("auc"),
        "attack_tpr_at_1pct_fpr": attacks.get("loss_threshold", {}).get("tpr_at_fpr"),
        "lira_auc": attacks.get("lira_offline", {}).get("auc"),
        "lira_tpr_at_1pct_fpr": attacks.get("lira_offline", {}).get("tpr_at_fpr"),
        **_audit_columns(outcome.audit),
        "null_loss_auc": audit.get("null_loss_auc"),
        "member_accuracy": audit.get("member_accuracy"),
        "nonmember_accuracy": audit.get("nonmember_accuracy"),
        "run_dir": outcome.output_dir,
    }
    return {
        "version": ARM_RESULT_VERSION,
        "settings": config.settings(),
        "row": row,
        "privacy": p,
        "audit": audit,
        "canary_audit": outcome.audit,
        "history": [{k: v for k, v in h.items() if not k.endswith(TIMING_SUFFIX)} for h in outcome.history],
    }
