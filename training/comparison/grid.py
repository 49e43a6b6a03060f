"""What a comparison is: its settings, its arms (each with a privacy unit) and the grid of runs.

Arms (each states its privacy unit; an epsilon is only comparable within a unit):

* ``central_nondp``  centralized SGD, no DP. Unit: example (no guarantee, epsilon = inf).
* ``central_dp``     centralized DP-SGD calibrated to each target epsilon. Unit: example.
* ``fed_nondp``      FedAvg over ``fed_num_clients`` IID clients, no DP. Unit: user.
* ``fed_dp``         DP-FedAvg (fixed or adaptive clipping) over the same clients, calibrated to
                     each target epsilon. Unit: user (a user's whole local dataset).
* ``fed_dp_example`` DP-FedAvg with exactly one training example per client (num_clients = N,
                     IID). A user is then one example, so its user-level epsilon is an
                     example-level epsilon: the apples-to-apples counterpart of ``central_dp``.
* ``central_label_ldp`` (opt-in) non-private training on labels released by randomized response
                     at the target epsilon (local DP of each example's label only).
* ``central_dp_tuned`` (opt-in) DP-SGD through the private hyperparameter search
                     (`training/tuning.py`): the target epsilon covers the whole search, so the row
                     shows what honest tuning costs next to ``central_dp``. Unit: example.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from data.datasets import Dataset
from models.specs import check_init
from privacy.randomness import check_seed
from training.centralized_config import MAX_EPOCHS, MAX_ROUNDS, check_count, check_float32, check_output
from training.metrics import default_metric, is_metric, metric_names

DEFAULT_ARMS = ("central_nondp", "central_dp", "fed_nondp", "fed_dp", "fed_dp_example")
# central_label_ldp: non-private training on labels released by randomized response at the
# target epsilon (data-level, local DP of each example's label only; features are not protected).
# central_dp_tuned: the private search (its epsilon covers every run tried and the selection).
ARMS = (*DEFAULT_ARMS, "central_label_ldp", "central_dp_tuned")
DP_ARMS = ("central_dp", "fed_dp", "fed_dp_example", "central_label_ldp", "central_dp_tuned")
FED_AGGREGATORS = ("fixed", "adaptive")
UNITS = {
    "central_nondp": "example",
    "central_dp": "example",
    "fed_nondp": "user",
    "fed_dp": "user",
    "fed_dp_example": "example (= user: 1 example per client)",
    "central_label_ldp": "example label (local DP: randomized response)",
    "central_dp_tuned": "example (the epsilon covers the private search)",
}
NONPRIVATE_COUNTERPART = {
    "central_dp": "central_nondp",
    "fed_dp": "fed_nondp",
    "central_label_ldp": "central_nondp",
    "central_dp_tuned": "central_nondp",
}


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
    """Everything that defines a comparison; validated before any arm runs.

    Defaults are the README demo: digits, MLP, epsilons 1/3/8, one seed, all five arms, in
    under 10 minutes on 2 CPU cores.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None  # image_folder: resize to NxN; None: the images' own size
    color_mode: str | None = None  # image_folder: "grayscale" or "rgb"; None: inferred
    model: str = "mlp"  # a model spec (models/specs.py): built-in name, PATH.py:FUNCTION, PATH.keras
    model_init: str = "fresh"  # "fresh": initialized from the seed; "pretrained": a .keras's saved weights
    target_epsilons: tuple[float, ...] = (1.0, 3.0, 8.0)
    delta: float = 1e-5
    arms: tuple[str, ...] = DEFAULT_ARMS
    seeds: tuple[int, ...] = (0,)
    secure_noise: bool = False  # every arm's noise and sampling from OS entropy (not reproducible)
    accountant: str = "rdp"
    root_output_dir: str = "runs"
    experiment_name: str = "comparison"
    # centralized arms (None: the centralized pipeline's own tuned default)
    central_epochs: int | None = None
    central_batch_size: int | None = None
    central_learning_rate: float | None = None
    central_clip: float = 1.0
    # federated arms (fed_nondp, fed_dp)
    fed_aggregator: str = "fixed"
    fed_num_clients: int = 100
    fed_clients_per_round: int = 20
    fed_rounds: int = 60
    fed_client_epochs: int = 5
    fed_client_batch_size: int = 16
    fed_client_learning_rate: float = 0.1
    fed_server_optimizer: str = "sgd"
    fed_server_learning_rate: float = 1.0
    fed_clip: float = 1.0
    # fed_dp_example: one example per client
    fed_example_clients_per_round: int = 50
    fed_example_client_learning_rate: float = 0.5
    fed_example_rounds: int = 40
    # audit
    audit_reference_models: int = 4  # 0 runs the loss-threshold attack only
    audit_max_per_side: int | None = None
    # one-run canary audit (training/canary_audit.py), each canary inserted with probability 1/2:
    audit_canaries: int = 500  # white box: gradient canaries (central), aggregator canary users (fed)
    audit_example_canaries: int = 100  # black box: OOD examples (central; fed_dp_example's clients)
    audit_canary_clients: int = 20  # black box: OOD canary clients (fed_nondp, fed_dp)
    # the table's headline column: a training.metrics name, or "auto" (`headline_metric`). A view of
    # the same arms: neither is part of `settings()`, so changing them reruns no arm
    metric: str = "auto"
    # binary labels: the share of class 1, for "auto" (AUC when under 20%). It must be a DP release
    # or public knowledge, never measured on the private labels; None (no such estimate): accuracy
    positive_fraction: float | None = None

    def __post_init__(self) -> None:
        _check(len(self.arms) > 0, "no arms given; choose from " + ",".join(ARMS))
        unknown = [a for a in self.arms if a not in ARMS]
        _check(not unknown, f"unknown arm(s) {unknown}; choose from {','.join(ARMS)}")
        _check(len(set(self.arms)) == len(self.arms), f"arms repeat: {list(self.arms)}")
        if any(a in DP_ARMS for a in self.arms):
            _check(len(self.target_epsilons) > 0, "the target epsilon list is empty; give e.g. 1,3,8")
        for eps in self.target_epsilons:
            _check(
                isinstance(eps, int | float) and math.isfinite(eps) and eps > 0,
                f"target epsilons must be finite and > 0, got {eps}",
            )
        _check(
            len(set(self.target_epsilons)) == len(self.target_epsilons),
            f"target epsilons repeat: {list(self.target_epsilons)}",
        )
        _check(0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}")
        _check(len(self.seeds) > 0, "the seed list is empty")
        _check(all(s >= 0 for s in self.seeds), f"seeds must be >= 0, got {list(self.seeds)}")
        for seed in self.seeds:
            check_seed(seed, "--seeds")
        _check(len(set(self.seeds)) == len(self.seeds), f"seeds repeat: {list(self.seeds)}")
        _check(self.accountant in ("rdp", "pld"), f"accountant must be rdp or pld, got {self.accountant}")
        for key in ("audit_canaries", "audit_example_canaries", "audit_canary_clients"):
            _check(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)}")
        _check(
            self.fed_server_optimizer in ("sgd", "momentum", "adam"),
            f"fed_server_optimizer must be sgd, momentum or adam, got {self.fed_server_optimizer!r}",
        )
        _check(
            self.fed_aggregator in FED_AGGREGATORS,
            f"fed_aggregator must be one of {FED_AGGREGATORS}, got {self.fed_aggregator!r}",
        )
        _check(
            self.metric == "auto" or is_metric(self.metric),
            f"metric must be auto or a test metric (test_accuracy, test_auc, test_average_precision, "
            f"test_balanced_accuracy, test_recall_<i>, test_loss), got {self.metric!r}",
        )
        _check(
            self.positive_fraction is None or 0 <= self.positive_fraction <= 1,
            f"positive_fraction must be in [0, 1], got {self.positive_fraction}",
        )
        check_output(self.root_output_dir, self.experiment_name)
        floats = ("delta", "central_learning_rate", "central_clip", "fed_client_learning_rate",
                  "fed_server_learning_rate", "fed_clip", "fed_example_client_learning_rate",
                  "positive_fraction")  # fmt: skip
        check_float32(**{f: getattr(self, f) for f in floats})
        check_count("central_epochs", self.central_epochs, MAX_EPOCHS)
        check_count("fed_rounds", self.fed_rounds, MAX_ROUNDS)
        check_count("fed_example_rounds", self.fed_example_rounds, MAX_ROUNDS)
        check_init(self.model, self.model_init)  # the spec's form and the init (files: in validate)
        positive = {
            "central_epochs": self.central_epochs,
            "central_batch_size": self.central_batch_size,
            "central_learning_rate": self.central_learning_rate,
            "central_clip": self.central_clip,
            "fed_num_clients": self.fed_num_clients,
            "fed_clients_per_round": self.fed_clients_per_round,
            "fed_rounds": self.fed_rounds,
            "fed_client_epochs": self.fed_client_epochs,
            "fed_client_batch_size": self.fed_client_batch_size,
            "fed_client_learning_rate": self.fed_client_learning_rate,
            "fed_server_learning_rate": self.fed_server_learning_rate,
            "fed_clip": self.fed_clip,
            "fed_example_clients_per_round": self.fed_example_clients_per_round,
            "fed_example_client_learning_rate": self.fed_example_client_learning_rate,
            "fed_example_rounds": self.fed_example_rounds,
        }
        for key, value in positive.items():
            _check(value is None or value > 0, f"{key} must be > 0, got {value}")
        _check(
            self.fed_clients_per_round <= self.fed_num_clients,
            f"fed_clients_per_round ({self.fed_clients_per_round}) exceeds fed_num_clients "
            f"({self.fed_num_clients})",
        )
        _check(self.audit_reference_models >= 0, "audit_reference_models must be >= 0")
        _check(
            self.audit_max_per_side is None or self.audit_max_per_side > 0,
            "audit_max_per_side must be > 0",
        )

    @property
    def output_dir(self) -> str:
        return os.path.join(self.root_output_dir, self.experiment_name)

    def settings(self) -> dict[str, Any]:
        """What an arm's result depends on (everything but the lists of arms/epsilons/seeds)."""
        d = dataclasses.asdict(self)
        for key in ("arms", "target_epsilons", "seeds", "root_output_dir", "experiment_name"):
            d.pop(key)
        for key in ("metric", "positive_fraction"):  # how the table reads the arms, not what they are
            d.pop(key)
        for key in ("image_size", "color_mode"):  # unset: left out, as in records made before they existed
            if d[key] is None:
                d.pop(key)
        if d["model_init"] == "fresh":  # the default: left out, as in records made before it existed
            d.pop("model_init")
        return d


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """One training run of the grid: an arm at one target epsilon (None: non-DP) and seed."""

    arm: str
    target_epsilon: float | None
    seed: int

    @property
    def unit(self) -> str:
        return UNITS[self.arm]

    @property
    def is_dp(self) -> bool:
        return self.arm in DP_ARMS

    @property
    def pipeline(self) -> str:
        return "centralized" if self.arm.startswith("central") else "federated"

    @property
    def arm_id(self) -> str:
        eps = "nodp" if self.target_epsilon is None else f"eps{self.target_epsilon:g}"
        return f"{self.arm}_{eps}_seed{self.seed}"


def arm_grid(config: ComparisonConfig) -> list[ArmSpec]:
    specs = []
    for seed in config.seeds:
        for arm in config.arms:
            if arm in DP_ARMS:
                specs.extend(ArmSpec(arm, float(eps), seed) for eps in config.target_epsilons)
            else:
                specs.append(ArmSpec(arm, None, seed))
    return specs


def check_delta(config: ComparisonConfig, num_train: int) -> None:
    """delta must be < 1/(number of privacy units) for every DP arm."""
    for arm in config.arms:
        if arm not in DP_ARMS:
            continue
        units = config.fed_num_clients if arm == "fed_dp" else num_train
        what = "clients (users)" if arm == "fed_dp" else "training examples"
        _check(
            config.delta < 1.0 / units,
            f"delta={config.delta:g} must be < 1/{units} = {1.0 / units:.3g} for arm {arm} "
            f"({units} {what}); lower --delta",
        )


def headline_metric(config: ComparisonConfig, num_classes: int) -> str:
    """The table's headline metric: `config.metric`, or for "auto" `training.metrics.default_metric`
    with the positive fraction the caller gave (None: no DP estimate, so test_accuracy)."""
    if config.metric != "auto":
        return config.metric
    return default_metric("classification", num_classes, config.positive_fraction)


def check_dataset(config: ComparisonConfig, dataset: Dataset) -> None:
    _check(dataset.task == "classification", "the comparison needs a classification dataset")
    available = metric_names(dataset.task, dataset.num_classes)
    _check(
        config.metric == "auto" or config.metric in available,
        f"metric {config.metric} is not measured on {dataset.num_classes}-class labels; "
        f"choose from auto,{','.join(available)}",
    )
    n = dataset.num_train
    _check(
        config.fed_num_clients <= n,
        f"fed_num_clients ({config.fed_num_clients}) exceeds the {n} training examples",
    )
    if "fed_dp_example" in config.arms:
        _check(
            config.fed_example_clients_per_round <= n,
            f"fed_example_clients_per_round ({config.fed_example_clients_per_round}) exceeds the "
            f"{n} clients (one per training example)",
        )
    _check(
        config.central_batch_size is None or config.central_batch_size <= n,
        f"central_batch_size ({config.central_batch_size}) exceeds the {n} training examples",
    )
    check_delta(config, n)
