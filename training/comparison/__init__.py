"""Centralized DP-SGD vs federated DP, side by side at the same budgets (see driver.py)."""

from training.comparison.arms import ArmOutcome, run_pipeline_arm
from training.comparison.driver import (
    ComparisonResult,
    load_datasets,
    run_comparison,
    validate,
)
from training.comparison.grid import ARMS, DEFAULT_ARMS, DP_ARMS, ArmSpec, ComparisonConfig, arm_grid

__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "DP_ARMS",
    "ArmOutcome",
    "ArmSpec",
    "ComparisonConfig",
    "ComparisonResult",
    "arm_grid",
    "load_datasets",
    "run_comparison",
    "run_pipeline_arm",
    "validate",
]
