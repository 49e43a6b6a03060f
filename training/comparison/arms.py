"""Running one arm of the comparison through the pipelines' library functions (never their binaries)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

from data.datasets import Dataset
from training.comparison.grid import ArmSpec, ComparisonConfig


def centralized_config(spec: ArmSpec, config: ComparisonConfig, arms_root: str):
    from privacy.local_dp import LocalDpConfig
    from training.centralized import CentralizedConfig

    local = spec.arm == "central_label_ldp"
    tuned = {
        "epochs": config.central_epochs,
        "batch_size": config.central_batch_size,
        "learning_rate": config.central_learning_rate,
    }
    return CentralizedConfig(
        **{k: v for k, v in tuned.items() if v is not None},
        dataset=config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        color_mode=config.color_mode,
        model=config.model,
        model_init=config.model_init,
        dp=spec.is_dp and not local,
        l2_norm_clip=config.central_clip,
        target_epsilon=None if local else spec.target_epsilon,
        local_dp=LocalDpConfig(label_epsilon=spec.target_epsilon) if local else None,
        delta=config.delta,
        accountant=config.accountant,
        sampling="poisson",
        seed=spec.seed,
        secure_noise=config.secure_noise,
        run_id=spec.arm_id,  # its own noise and sampling stream among the arms
        # label-level local DP makes no example-level claim for the canary audit to test
        audit_canaries=0 if local else config.audit_canaries,
        audit_example_canaries=0 if local else config.audit_example_canaries,
        root_output_dir=arms_root,
        experiment_name=spec.arm_id,
    )


def federated_config(spec: ArmSpec, config: ComparisonConfig, num_train: int, arms_root: str):
    from training.federated import FederatedConfig

    one_per_client = spec.arm == "fed_dp_example"
    return FederatedConfig(
        dataset=config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        color_mode=config.color_mode,
        model=config.model,
        model_init=config.model_init,
        num_clients=num_train if one_per_client else config.fed_num_clients,
        clients_per_round=config.fed_example_clients_per_round
        if one_per_client
        else config.fed_clients_per_round,
        rounds=config.fed_example_rounds if one_per_client else config.fed_rounds,
        partition="iid",
        client_epochs=config.fed_client_epochs,
        client_batch_size=1 if one_per_client else config.fed_client_batch_size,
        client_learning_rate=(
            config.fed_example_client_learning_rate if one_per_client else config.fed_client_learning_rate
        ),
        server_optimizer=config.fed_server_optimizer,
        server_learning_rate=config.fed_server_learning_rate,
        eval_every=max(1, (config.fed_example_rounds if one_per_client else config.fed_rounds) // 10),
        checkpoint_every=10,
        aggregator=config.fed_aggregator if spec.is_dp else "none",
        clip_norm=config.fed_clip,
        target_epsilon=spec.target_epsilon,
        delta=config.delta,
        accountant=config.accountant,
        seed=spec.seed,
        secure_noise=config.secure_noise,
        run_id=spec.arm_id,  # its own noise and sampling stream among the arms
        audit_canaries=config.audit_canaries,
        # a canary client is a user: one example where every client holds one
        audit_canary_clients=config.audit_example_canaries if one_per_client else config.audit_canary_clients,
        root_output_dir=arms_root,
        experiment_name=spec.arm_id,
    )


def tuning_config(spec: ArmSpec, config: ComparisonConfig, arms_root: str):
    """central_dp_tuned: the private search with its default space and K distribution, its epsilon
    (for the whole search) at the arm's target."""
    from privacy.private_selection import RunsDistribution
    from training.tuning import DEFAULT_RUNS, SearchSpace, TuningConfig

    return TuningConfig(
        target_epsilon=spec.target_epsilon,
        runs=RunsDistribution(*DEFAULT_RUNS),
        space=SearchSpace() if config.model == "mlp" else SearchSpace(width=()),
        dataset=config.dataset,
        data_dir=config.data_dir,
        image_size=config.image_size,
        color_mode=config.color_mode,
        model=config.model,
        model_init=config.model_init,
        delta=config.delta,
        seed=spec.seed,
        secure_noise=config.secure_noise,
        run_id=spec.arm_id,  # its own noise and sampling stream among the arms
        root_output_dir=arms_root,
        experiment_name=spec.arm_id,
    )


def pipeline_config(spec: ArmSpec, config: ComparisonConfig, num_train: int, arms_root: str):
    """The arm's pipeline config; building it runs the pipeline's own validation."""
    if spec.arm == "central_dp_tuned":
        return tuning_config(spec, config, arms_root)
    if spec.pipeline == "centralized":
        return centralized_config(spec, config, arms_root)
    return federated_config(spec, config, num_train, arms_root)


@dataclasses.dataclass(frozen=True)
class ArmOutcome:
    """What a pipeline run returns, reduced to what the comparison needs."""

    output_dir: str
    test_accuracy: float
    test_loss: float
    privacy: dict[str, Any]
    wall_time_s: float  # not for release: only in the comparison's not_for_release/timings.csv
    history: list[dict[str, Any]]  # the run's released rows (a DP run's: no timings)
    model_dir: str
    num_clients: int | None = None
    clients_per_round: int | None = None
    audit: dict[str, Any] | None = None  # the run's audit.json (one-run canary lower bounds)
    # every test-set metric the run reported (training.metrics keys: test_loss, test_accuracy,
    # test_auc, test_balanced_accuracy, test_recall_<i>, ...), measured on the held-out split
    test_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


ArmRunner = Callable[[ArmSpec, ComparisonConfig, Dataset, str], ArmOutcome]
Auditor = Callable[[str, Dataset, int, ComparisonConfig], dict[str, Any]]


_DIVERGED_HINT = {
    "centralized": "lower --central_learning_rate or --central_clip",
    "federated": "lower --fed_client_learning_rate (--fed_example_client_learning_rate) or "
    "--fed_server_learning_rate",
}


def run_pipeline_arm(spec: ArmSpec, config: ComparisonConfig, dataset: Dataset, arms_root: str) -> ArmOutcome:
    """Runs the arm through training.centralized.run or training.federated.run."""
    from training.progress import Diverged

    cfg = pipeline_config(spec, config, dataset.num_train, arms_root)
    if spec.arm == "central_dp_tuned":
        return _run_tuned_arm(cfg, dataset)
    try:
        if spec.pipeline == "centralized":
            from training import centralized

            res = centralized.run(cfg, dataset=dataset, verbose=False)
            fed = (None, None)
        else:
            from training import federated

            res = federated.run(cfg, dataset=dataset, verbose=False)
            fed = (res.privacy.get("num_clients"), cfg.clients_per_round)
    except Diverged as e:  # the hint in this binary's flags (a rerun of the comparison says it again)
        raise Diverged(
            f"{e.where} of arm {spec.arm_id}", e.reason, _DIVERGED_HINT[spec.pipeline], e.folder
        ) from None
    return ArmOutcome(
        output_dir=res.output_dir,
        test_accuracy=float(res.test_accuracy),
        test_loss=float(res.test_loss),
        privacy=dict(res.privacy),
        wall_time_s=float(res.wall_time_s),
        history=list(res.history),
        model_dir=os.path.join(res.output_dir, "model"),
        num_clients=fed[0],
        clients_per_round=fed[1],
        audit=res.audit,
        test_metrics=_test_metrics(res),
    )


def _test_metrics(res: Any) -> dict[str, float]:
    """The result's `test_metrics` (training.metrics keys), at least its test_loss and test_accuracy."""
    reported = getattr(res, "test_metrics", None) or {}  # CentralizedResult, FederatedResult: both have it
    found = {k: float(v) for k, v in reported.items() if k.startswith("test_") and v is not None}
    return {"test_loss": float(res.test_loss), "test_accuracy": float(res.test_accuracy), **found}


def _run_tuned_arm(cfg, dataset: Dataset) -> ArmOutcome:
    """The private search; the released (selected) model is the arm's model.

    Nothing in the outcome may depend on the search's secret number of runs K: no run count, no
    per-run history, and no wall time (it grows with K; it stays in the arm's not_for_release/)."""
    from training import tuning

    res = tuning.run(cfg, dataset=dataset, verbose=False)
    selected = res.selected or {}
    return ArmOutcome(
        output_dir=res.output_dir,
        test_accuracy=float(selected.get("test_accuracy", math.nan)),
        test_loss=float(selected.get("test_loss", math.nan)),
        privacy=dict(res.privacy),
        wall_time_s=math.nan,  # not even in not_for_release/timings.csv (the search's own folder has it)
        history=[],
        model_dir=os.path.join(res.output_dir, "model"),
        test_metrics={k: float(v) for k, v in selected.items() if k.startswith("test_") and v is not None},
    )
