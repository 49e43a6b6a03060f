"""Fixtures of the comparison tests: a small fake dataset and cheap, deterministic fake arms."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data.datasets import Dataset
from training import comparison
from training.comparison import ArmOutcome, ArmSpec, ComparisonConfig


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

    def __init__(self, fail_on: str | None = None, refuted: str | None = None):
        self.calls: list[str] = []
        self.fail_on = fail_on
        self.refuted = refuted  # this arm's canary audit "refutes" its claim (a buggy arm)

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
                "l2_norm_clip": 1.0,
            },
            wall_time_s=1.0,
            # with the timings a pipeline's full rows carry, which the comparison must not release
            history=[
                {"epoch": 1, "test_accuracy": acc - 0.1, "epoch_time_s": 0.5},
                {"epoch": 2, "test_accuracy": acc, "round_time_s": 0.5},
            ],
            model_dir=os.path.join(out, "model"),
            clients_per_round=None if spec.pipeline == "centralized" else 10,
            num_clients=None if spec.pipeline == "centralized" else 50,
            audit=self._canary_audit(spec),
        )

    def _canary_audit(self, spec: ArmSpec) -> dict:
        """A canary audit record: the bound at 40% of the claim, 3.5 when non-private, 9.0 if refuted."""
        eps = spec.target_epsilon
        bound = 9.0 if spec.arm_id == self.refuted else (3.5 if eps is None else 0.4 * eps)
        black = {"epsilon_lower_bound": 0.1, "auc": 0.55}
        kinds = {"white_box": {"epsilon_lower_bound": bound}, "black_box": black}
        return {
            "epsilon_lower_bound": bound,
            "mode": "white-box: fake",
            "exceeds_claim": spec.arm_id == self.refuted,
            "kinds": kinds,
        }

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


@pytest.fixture
def fake_dataset():
    """fake_dataset(n_train=400, n_test=100): 4 features, 3 classes, seeded."""
    return _dataset


@pytest.fixture
def fake_arms():
    """The FakeArms class: fake_arms(fail_on=arm_id) records the arms it ran."""
    return FakeArms


@pytest.fixture
def comparison_config(tmp_path):
    """comparison_config(**overrides): a small comparison under tmp_path/runs/cmp."""
    return lambda **kw: _config(tmp_path, **kw)


@pytest.fixture
def run_fake():
    """run_fake(config, fake_arms_instance, dataset=None): the comparison with fake arms."""
    return _run
