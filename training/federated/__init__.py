"""Federated learning on TFF: experiment settings, TFF process, round loop, checkpoints, workers."""

from training.federated.experiment import FederatedConfig, dp_config, load_population, prepare, privacy_report
from training.federated.round_loop import FederatedResult, Plan, launch, plan_run, run

__all__ = [
    "FederatedConfig",
    "FederatedResult",
    "Plan",
    "dp_config",
    "launch",
    "load_population",
    "plan_run",
    "prepare",
    "privacy_report",
    "run",
]
