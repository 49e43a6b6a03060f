"""The comparison in TensorBoard: one run per arm, and the HParams experiment over all of them."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

from privacy.randomness import SEED_MAX
from training.comparison.grid import ARMS, UNITS, ComparisonConfig

HPARAM_METRICS = {
    "comparison/test_accuracy": "test accuracy",
    "comparison/epsilon": "achieved epsilon (inf is not logged)",
    "comparison/attack_auc": "loss-threshold attack AUC",
    "comparison/lira_auc": "offline LiRA attack AUC",
    "comparison/epsilon_lower_bound": "empirical epsilon lower bound (one-run canary audit)",
}  # no wall time: a DP arm's is not covered (not_for_release/timings.csv)


def _hparam_metrics(metric: str) -> dict[str, str]:
    tag = f"comparison/{metric}"
    return HPARAM_METRICS if tag in HPARAM_METRICS else {tag: metric.replace("_", " "), **HPARAM_METRICS}


def _hparams_domain(config: ComparisonConfig):
    from tensorboard.plugins.hparams import api as hp

    return {
        "arm": hp.HParam("arm", hp.Discrete(list(ARMS))),
        "unit": hp.HParam("unit", hp.Discrete(sorted(set(UNITS.values())))),
        "pipeline": hp.HParam("pipeline", hp.Discrete(["centralized", "federated"])),
        "target_epsilon": hp.HParam("target_epsilon", hp.RealInterval(0.0, 1e6)),
        "noise_multiplier": hp.HParam("noise_multiplier", hp.RealInterval(0.0, 1e6)),
        "l2_norm_clip": hp.HParam("l2_norm_clip", hp.RealInterval(0.0, 1e6)),
        "clients_per_round": hp.HParam("clients_per_round", hp.IntInterval(0, 10**9)),
        "seed": hp.HParam("seed", hp.IntInterval(0, SEED_MAX)),
    }


def write_tensorboard_experiment(
    logdir: str, config: ComparisonConfig, metric: str = "test_accuracy"
) -> None:
    """The hparams experiment (columns and metrics) at the logdir root, replacing an older one.

    `metric`, the table's headline test metric, is a column too when it is not accuracy."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    os.makedirs(logdir, exist_ok=True)
    old = [f for f in os.listdir(logdir) if f.startswith("events.out.tfevents")]
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp.hparams_config(
            hparams=list(_hparams_domain(config).values()),
            metrics=[hp.Metric(tag, display_name=name) for tag, name in _hparam_metrics(metric).items()],
        )
    writer.close()
    for f in old:  # one experiment definition only
        os.unlink(os.path.join(logdir, f))


def write_tensorboard_arm(logdir: str, record: Mapping[str, Any], config: ComparisonConfig) -> None:
    """One TensorBoard run per arm: its hparams, final metrics, and its training history.

    Written into a temporary folder and renamed, so a run is either complete or absent.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    row = record["row"]
    domain = _hparams_domain(config)
    values = {
        domain["arm"]: row["arm"],
        domain["unit"]: row["unit"],
        domain["pipeline"]: row["pipeline"],
        domain["seed"]: int(row["seed"]),
    }
    if row["target_epsilon"] is not None:
        values[domain["target_epsilon"]] = float(row["target_epsilon"])
    for key in ("noise_multiplier", "l2_norm_clip"):
        if row.get(key) is not None and math.isfinite(float(row[key])):
            values[domain[key]] = float(row[key])
    if row.get("clients_per_round") is not None:
        values[domain["clients_per_round"]] = int(row["clients_per_round"])

    final = os.path.join(logdir, row["arm_id"])
    tmp = os.path.join(logdir, ".tmp-" + row["arm_id"])
    shutil.rmtree(tmp, ignore_errors=True)
    writer = tf.summary.create_file_writer(tmp)
    with writer.as_default():
        hp.hparams(values, trial_id=row["arm_id"])
        metric_values = {
            **{f"comparison/{k}": v for k, v in row.items() if k.startswith("test_")},  # AUC, recall, ...
            "comparison/test_accuracy": row.get("test_accuracy"),
            "comparison/epsilon": row.get("epsilon"),
            "comparison/attack_auc": row.get("attack_auc"),
            "comparison/lira_auc": row.get("lira_auc"),
            "comparison/epsilon_lower_bound": row.get("epsilon_lower_bound"),
        }
        for tag, value in metric_values.items():
            if value is not None and math.isfinite(float(value)):
                tf.summary.scalar(tag, float(value), step=0)
        for i, h in enumerate(record.get("history", [])):
            step = int(h.get("epoch", h.get("round", i + 1)))
            for key, value in h.items():
                if key in ("epoch", "round") or not isinstance(value, int | float):
                    continue
                if math.isfinite(float(value)):
                    tf.summary.scalar(f"history/{key}", float(value), step=step)
    writer.close()
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
