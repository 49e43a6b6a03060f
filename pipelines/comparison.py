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

Resumability: an arm whose ``arm_result.json`` exists is skipped; the tables, plot and
TensorBoard runs are rebuilt from all completed arms at the end of every invocation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data.datasets import Dataset, load_dataset
from pipelines import outputs

DEFAULT_ARMS = ("central_nondp", "central_dp", "fed_nondp", "fed_dp", "fed_dp_example")
# central_label_ldp: non-private training on labels released by randomized response at the
# target epsilon (data-level, local DP of each example's label only; features are not protected).
ARMS = (*DEFAULT_ARMS, "central_label_ldp")
DP_ARMS = ("central_dp", "fed_dp", "fed_dp_example", "central_label_ldp")
FED_AGGREGATORS = ("fixed", "adaptive")
UNITS = {
    "central_nondp": "example",
    "central_dp": "example",
    "fed_nondp": "user",
    "fed_dp": "user",
    "fed_dp_example": "example (= user: 1 example per client)",
    "central_label_ldp": "example label (local DP: randomized response)",
}
NONPRIVATE_COUNTERPART = {
    "central_dp": "central_nondp",
    "fed_dp": "fed_nondp",
    "central_label_ldp": "central_nondp",
}
RESULT_FILE = "arm_result.json"
ARM_RESULT_VERSION = 3  # bump when the audit or the record changes: old records are refused


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
    model: str = "mlp"
    target_epsilons: tuple[float, ...] = (1.0, 3.0, 8.0)
    delta: float = 1e-5
    arms: tuple[str, ...] = DEFAULT_ARMS
    seeds: tuple[int, ...] = (0,)
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
    audit_canaries: int = 100  # mislabeled canaries, half inserted into training (0: none)

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
        _check(len(set(self.seeds)) == len(self.seeds), f"seeds repeat: {list(self.seeds)}")
        _check(self.accountant in ("rdp", "pld"), f"accountant must be rdp or pld, got {self.accountant}")
        _check(
            self.audit_canaries >= 0 and self.audit_canaries % 2 == 0,
            f"audit_canaries must be an even number >= 0, got {self.audit_canaries}",
        )
        _check(
            self.fed_server_optimizer in ("sgd", "momentum", "adam"),
            f"fed_server_optimizer must be sgd, momentum or adam, got {self.fed_server_optimizer!r}",
        )
        _check(
            self.fed_aggregator in FED_AGGREGATORS,
            f"fed_aggregator must be one of {FED_AGGREGATORS}, got {self.fed_aggregator!r}",
        )
        name = self.experiment_name
        _check(
            bool(name) and os.sep not in name and name not in (".", ".."),
            f"experiment_name must be a plain folder name, got {name!r}",
        )
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


# ---------------------------------------------------------------- validation


def check_output_dir_writable(path: str) -> None:
    """Fails early (nothing written) when `path` cannot be created or written."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ValueError(f"output folder {path}: {probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {path} is not writable ({probe} is read-only)")


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


def check_dataset(config: ComparisonConfig, dataset: Dataset) -> None:
    _check(dataset.task == "classification", "the comparison needs a classification dataset")
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


# ---------------------------------------------------------------- pipeline configs


def centralized_config(spec: ArmSpec, config: ComparisonConfig, arms_root: str):
    from pipelines.centralized import CentralizedConfig
    from privacy.local_dp import LocalDpConfig

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
        model=config.model,
        dp=spec.is_dp and not local,
        l2_norm_clip=config.central_clip,
        target_epsilon=None if local else spec.target_epsilon,
        local_dp=LocalDpConfig(label_epsilon=spec.target_epsilon) if local else None,
        delta=config.delta,
        accountant=config.accountant,
        sampling="poisson",
        seed=spec.seed,
        root_output_dir=arms_root,
        experiment_name=spec.arm_id,
    )


def federated_config(spec: ArmSpec, config: ComparisonConfig, num_train: int, arms_root: str):
    from pipelines.federated import FederatedConfig

    one_per_client = spec.arm == "fed_dp_example"
    return FederatedConfig(
        dataset=config.dataset,
        data_dir=config.data_dir,
        model=config.model,
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
        root_output_dir=arms_root,
        experiment_name=spec.arm_id,
    )


def pipeline_config(spec: ArmSpec, config: ComparisonConfig, num_train: int, arms_root: str):
    """The arm's pipeline config; building it runs the pipeline's own validation."""
    if spec.pipeline == "centralized":
        return centralized_config(spec, config, arms_root)
    return federated_config(spec, config, num_train, arms_root)


# ---------------------------------------------------------------- running one arm


@dataclasses.dataclass(frozen=True)
class ArmOutcome:
    """What a pipeline run returns, reduced to what the comparison needs."""

    output_dir: str
    test_accuracy: float
    test_loss: float
    privacy: dict[str, Any]
    wall_time_s: float
    history: list[dict[str, Any]]
    model_dir: str
    num_clients: int | None = None
    clients_per_round: int | None = None


ArmRunner = Callable[[ArmSpec, ComparisonConfig, Dataset, str], ArmOutcome]
Auditor = Callable[[str, Dataset, int, ComparisonConfig], dict[str, Any]]


def run_pipeline_arm(spec: ArmSpec, config: ComparisonConfig, dataset: Dataset, arms_root: str) -> ArmOutcome:
    """Runs the arm through pipelines.centralized.run or pipelines.federated.run."""
    cfg = pipeline_config(spec, config, dataset.num_train, arms_root)
    if spec.pipeline == "centralized":
        from pipelines import centralized

        res = centralized.run(cfg, dataset=dataset)
        fed = (None, None)
    else:
        from pipelines import federated

        res = federated.run(cfg, dataset=dataset)
        fed = (cfg.num_clients, cfg.clients_per_round)
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
    )


class MembershipAuditor:
    """Audits saved models; LiRA reference statistics are trained once per split and reused.

    With canaries (seed -> CanarySet) it also runs the canary attack on each model.
    """

    def __init__(self, canaries: Mapping[int, Any] | None = None) -> None:
        self._reference: dict[tuple, Any] = {}
        self._canaries = dict(canaries or {})

    def __call__(
        self, model_dir: str, dataset: Dataset, seed: int, config: ComparisonConfig
    ) -> dict[str, Any]:
        from privacy import audit

        split = audit.audit_split(
            dataset.num_train, len(dataset.x_test), seed=seed, max_per_side=config.audit_max_per_side
        )
        reference = None
        if config.audit_reference_models > 0:
            key = (id(dataset), seed, config.model, config.audit_reference_models, config.audit_max_per_side)
            if key not in self._reference:
                self._reference[key] = audit.train_reference_stats(
                    dataset.x_train,
                    dataset.y_train,
                    dataset.x_test,
                    dataset.y_test,
                    dataset.num_classes,
                    split,
                    audit.ReferenceRecipe(model=config.model, num_models=config.audit_reference_models),
                    seed=seed,
                )
            reference = self._reference[key]
        logits_fn = audit.load_logits_fn(model_dir)
        result = audit.audit_model(
            logits_fn,
            dataset.x_train,
            dataset.y_train,
            dataset.x_test,
            dataset.y_test,
            split,
            reference=reference,
        ).as_dict()
        if seed in self._canaries:
            canary = audit.canary_audit(logits_fn, self._canaries[seed])
            result["attacks"]["canary_loss"] = dataclasses.asdict(canary)
        return result


# ---------------------------------------------------------------- arm results on disk


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
    if record.get("settings") != json.loads(json.dumps(outputs._jsonable(dict(settings)))):  # noqa: SLF001
        raise ValueError(
            f"arm {spec.arm_id} in {out_dir} was completed with different settings; "
            "use a new --experiment_name (or delete that folder) instead of mixing results"
        )
    return record


def _achieved_epsilon(spec: ArmSpec, p: Mapping[str, Any]) -> float:
    if spec.arm == "central_label_ldp":  # the local (per-label) epsilon, as released
        return float(p["local_dp"]["labels"]["epsilon"])
    return float(p["epsilon"]) if p.get("epsilon") is not None else math.inf


def make_arm_record(
    spec: ArmSpec, config: ComparisonConfig, outcome: ArmOutcome, audit: dict, audit_time_s: float
) -> dict[str, Any]:
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
        "clip": p.get("clip", p.get("clip_norm", p.get("l2_norm_clip"))),
        "num_clients": outcome.num_clients,
        "clients_per_round": outcome.clients_per_round,
        "test_accuracy": outcome.test_accuracy,
        "test_loss": outcome.test_loss,
        "attack_auc": attacks.get("loss_threshold", {}).get("auc"),
        "attack_tpr_at_1pct_fpr": attacks.get("loss_threshold", {}).get("tpr_at_fpr"),
        "lira_auc": attacks.get("lira_offline", {}).get("auc"),
        "lira_tpr_at_1pct_fpr": attacks.get("lira_offline", {}).get("tpr_at_fpr"),
        "canary_auc": attacks.get("canary_loss", {}).get("auc"),
        "canary_tpr_at_1pct_fpr": attacks.get("canary_loss", {}).get("tpr_at_fpr"),
        "null_loss_auc": audit.get("null_loss_auc"),
        "member_accuracy": audit.get("member_accuracy"),
        "nonmember_accuracy": audit.get("nonmember_accuracy"),
        "train_time_s": outcome.wall_time_s,
        "audit_time_s": audit_time_s,
        "wall_time_s": outcome.wall_time_s + audit_time_s,
        "run_dir": outcome.output_dir,
    }
    return {
        "version": ARM_RESULT_VERSION,
        "settings": config.settings(),
        "row": row,
        "privacy": p,
        "audit": audit,
        "history": outcome.history,
    }


# ---------------------------------------------------------------- tables and plot


def _mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds, one row per (arm, target epsilon), in grid order."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["target_epsilon"]), []).append(r)
    out = []
    for (arm, target), rs in groups.items():
        agg: dict[str, Any] = {"arm": arm, "unit": rs[0]["unit"], "target_epsilon": target, "seeds": len(rs)}
        for key in (
            "epsilon",
            "test_accuracy",
            "attack_auc",
            "attack_tpr_at_1pct_fpr",
            "lira_auc",
            "lira_tpr_at_1pct_fpr",
            "canary_auc",
            "wall_time_s",
        ):
            m, s, _ = _mean_std([r.get(key) for r in rs])
            agg[key], agg[key + "_std"] = m, s
        agg["noise_multiplier"] = _mean_std([r.get("noise_multiplier") for r in rs])[0]
        out.append(agg)
    order = {a: i for i, a in enumerate(ARMS)}
    out.sort(key=lambda a: (order[a["arm"]], a["target_epsilon"] or 0.0))
    return out


def _fmt(mean: float, std: float, seeds: int, digits: int = 3) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if seeds > 1 else "")


def results_markdown(rows: Sequence[Mapping[str, Any]], config: ComparisonConfig) -> str:
    agg = aggregate(rows)
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"# Centralized DP vs federated DP on {config.dataset} ({config.model})",
        "",
        f"delta = {config.delta:g}; accountant {config.accountant.upper()}; seeds {seeds} "
        f"(mean ± std when more than one); federated DP clipping: {config.fed_aggregator}. "
        "Membership inference, members = training examples vs held-out non-members (balanced): "
        "loss-attack = loss-threshold attack (Yeom et al.); LiRA = offline LiRA with reference "
        "models, which calibrates per-example difficulty (the stronger, better-controlled number; "
        "0.5 = no leakage detected); canary AUC = loss attack on mislabeled canaries, half of them "
        "inserted into every arm's training data (the worst-case probe DP is meant to bound). "
        "Wall time includes the audit.",
        "",
        "| arm | unit | target ε | achieved ε | noise | accuracy | loss-attack AUC | LiRA AUC "
        "| LiRA TPR@1%FPR | canary AUC | wall time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in agg:
        n = a["seeds"]
        target = "—" if a["target_epsilon"] is None else f"{a['target_epsilon']:g}"
        eps = (
            "∞ (non-private)"
            if not math.isfinite(a["epsilon"])
            else _fmt(a["epsilon"], a["epsilon_std"], n, 2)
        )
        noise = "—" if a["target_epsilon"] is None else f"{a['noise_multiplier']:.3g}"
        lines.append(
            f"| {a['arm']} | {a['unit']} | {target} | {eps} | {noise} | "
            f"{_fmt(a['test_accuracy'], a['test_accuracy_std'], n)} | "
            f"{_fmt(a['attack_auc'], a['attack_auc_std'], n)} | "
            f"{_fmt(a['lira_auc'], a['lira_auc_std'], n)} | "
            f"{_fmt(a['lira_tpr_at_1pct_fpr'], a['lira_tpr_at_1pct_fpr_std'], n)} | "
            f"{_fmt(a['canary_auc'], a['canary_auc_std'], n)} | "
            f"{_fmt(a['wall_time_s'], a['wall_time_s_std'], n, 1)} |"
        )
    baselines = {r["seed"]: r.get("null_loss_auc") for r in rows if r.get("null_loss_auc") is not None}
    if baselines:
        values = ", ".join(f"{float(v):.3f} (seed {k})" for k, v in sorted(baselines.items()))
        lines += [
            "",
            "Split baseline: the loss-threshold AUC of the LiRA reference models, which saw neither the "
            f"members nor the non-members, is {values}. A fixed train/test split is rarely exactly "
            "balanced in difficulty, so read attack AUCs against this value rather than 0.5.",
        ]
    lines += [
        "",
        "Units: *example* = add/remove one training example; *user* = add/remove one client's whole "
        "local dataset. fed_dp_example puts exactly one example on each client, so its user-level "
        "guarantee is an example-level one and compares directly with central_dp.",
        "",
    ]
    return "\n".join(lines)


def write_plot(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """Accuracy (and attack AUC) against achieved epsilon; non-DP arms as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    agg = aggregate(rows)
    auc_key = next(
        k for k in ("canary_auc", "lira_auc", "attack_auc") if all(math.isfinite(a[k]) for a in agg)
    )
    auc_title = (
        "membership attack AUC ("
        + {"canary_auc": "inserted canaries", "lira_auc": "offline LiRA", "attack_auc": "loss threshold"}[
            auc_key
        ]
        + ")"
    )
    fig, (ax_acc, ax_auc) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {
        "central_dp": "tab:blue",
        "fed_dp": "tab:orange",
        "fed_dp_example": "tab:green",
        "central_nondp": "tab:blue",
        "fed_nondp": "tab:orange",
    }
    for arm in DP_ARMS:
        pts = [a for a in agg if a["arm"] == arm and math.isfinite(a["epsilon"])]
        if not pts:
            continue
        pts.sort(key=lambda a: a["epsilon"])
        x = [a["epsilon"] for a in pts]
        label = f"{arm} ({'local label' if arm == 'central_label_ldp' else UNITS[arm].split(' ')[0]}-level)"
        for ax, key in ((ax_acc, "test_accuracy"), (ax_auc, auc_key)):
            ax.errorbar(
                x,
                [a[key] for a in pts],
                yerr=[a[key + "_std"] for a in pts],
                marker="o",
                capsize=3,
                color=colors[arm],
                label=label,
            )
    for arm in ("central_nondp", "fed_nondp"):
        for a in (a for a in agg if a["arm"] == arm):
            for ax, key in ((ax_acc, "test_accuracy"), (ax_auc, auc_key)):
                if math.isfinite(a[key]):
                    ax.axhline(a[key], linestyle="--", color=colors[arm], label=f"{arm} (no DP)")
    ax_auc.axhline(0.5, linestyle=":", color="gray", label="chance (AUC 0.5)")
    eps_ticks = sorted({round(a["epsilon"], 1) for a in agg if math.isfinite(a["epsilon"])})
    for ax, title in ((ax_acc, "test accuracy"), (ax_auc, auc_title)):
        ax.set_xscale("log")
        if eps_ticks:
            ax.set_xticks(eps_ticks, [f"{e:g}" for e in eps_ticks])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("achieved ε (log scale)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------- TensorBoard


HPARAM_METRICS = {
    "comparison/test_accuracy": "test accuracy",
    "comparison/epsilon": "achieved epsilon (inf is not logged)",
    "comparison/attack_auc": "loss-threshold attack AUC",
    "comparison/lira_auc": "offline LiRA attack AUC",
    "comparison/wall_time_s": "wall time (train + audit)",
}


def _hparams_domain(config: ComparisonConfig):
    from tensorboard.plugins.hparams import api as hp

    return {
        "arm": hp.HParam("arm", hp.Discrete(list(ARMS))),
        "unit": hp.HParam("unit", hp.Discrete(sorted(set(UNITS.values())))),
        "pipeline": hp.HParam("pipeline", hp.Discrete(["centralized", "federated"])),
        "target_epsilon": hp.HParam("target_epsilon", hp.RealInterval(0.0, 1e6)),
        "noise_multiplier": hp.HParam("noise_multiplier", hp.RealInterval(0.0, 1e6)),
        "clip": hp.HParam("clip", hp.RealInterval(0.0, 1e6)),
        "clients_per_round": hp.HParam("clients_per_round", hp.IntInterval(0, 10**9)),
        "seed": hp.HParam("seed", hp.IntInterval(0, 10**9)),
    }


def write_tensorboard_experiment(logdir: str, config: ComparisonConfig) -> None:
    """The hparams experiment (columns and metrics) at the logdir root, replacing an older one."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    os.makedirs(logdir, exist_ok=True)
    old = [f for f in os.listdir(logdir) if f.startswith("events.out.tfevents")]
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp.hparams_config(
            hparams=list(_hparams_domain(config).values()),
            metrics=[hp.Metric(tag, display_name=name) for tag, name in HPARAM_METRICS.items()],
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
    for key in ("noise_multiplier", "clip"):
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
            "comparison/test_accuracy": row.get("test_accuracy"),
            "comparison/epsilon": row.get("epsilon"),
            "comparison/attack_auc": row.get("attack_auc"),
            "comparison/lira_auc": row.get("lira_auc"),
            "comparison/wall_time_s": row.get("wall_time_s"),
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


# ---------------------------------------------------------------- the comparison


@dataclasses.dataclass
class ComparisonResult:
    output_dir: str
    rows: list[dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    wall_time_s: float


def _load_datasets(config: ComparisonConfig, dataset: Dataset | None) -> dict[int, Dataset]:
    """One dataset per seed: load_dataset(seed=s) is the split the pipelines use for seed s."""
    if dataset is not None:
        return {s: dataset for s in config.seeds}
    return {s: load_dataset(config.dataset, config.data_dir, seed=s) for s in config.seeds}


def plant_canaries(config: ComparisonConfig, datasets: Mapping[int, Dataset]) -> tuple[dict, dict]:
    """Per seed: the training set with canaries planted (same for every arm), and the canaries."""
    from privacy import audit

    planted, canaries = {}, {}
    for seed, ds in datasets.items():
        if config.audit_canaries == 0:
            planted[seed] = ds
            continue
        x, y, canaries[seed] = audit.plant_canaries(
            ds.x_train, ds.y_train, ds.num_classes, config.audit_canaries, seed
        )
        planted[seed] = dataclasses.replace(ds, x_train=x, y_train=y, client_ids=None)
    return planted, canaries


def validate(config: ComparisonConfig, datasets: Mapping[int, Dataset], check_pipelines: bool = True) -> None:
    """Every check that can fail, done before the first arm starts or any file is written."""
    check_output_dir_writable(config.output_dir)
    for ds in datasets.values():
        check_dataset(config, ds)
    out_dir = config.output_dir
    comparison_json = os.path.join(out_dir, "comparison.json")
    if os.path.exists(comparison_json):
        try:
            with open(comparison_json) as f:
                previous = json.load(f).get("settings")
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {comparison_json}: {e}") from e
        if previous != json.loads(json.dumps(outputs._jsonable(config.settings()))):  # noqa: SLF001
            raise ValueError(
                f"{out_dir} holds a comparison made with different settings; use a new "
                "--experiment_name (or delete that folder) instead of mixing results"
            )
    for spec in arm_grid(config):
        load_arm_result(out_dir, spec, config.settings())  # raises on a mismatch
        if check_pipelines:
            pipeline_config(spec, config, datasets[spec.seed].num_train, os.path.join(out_dir, "arms"))


def collect_rows(config: ComparisonConfig) -> list[dict[str, Any]]:
    rows = []
    for spec in arm_grid(config):
        record = load_arm_result(config.output_dir, spec, config.settings())
        if record is not None:
            rows.append(record["row"])
    return rows


def write_reports(config: ComparisonConfig, rows: Sequence[Mapping[str, Any]]) -> None:
    out = config.output_dir
    if not rows:
        return
    outputs.write_csv(os.path.join(out, "results.csv"), rows)
    outputs.atomic_write_text(os.path.join(out, "results.md"), results_markdown(rows, config))
    write_plot(rows, os.path.join(out, "privacy_utility.png"))


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
    datasets, canaries = plant_canaries(config, _load_datasets(config, dataset))
    auditor = auditor or MembershipAuditor(canaries)
    validate(config, datasets, check_pipelines=real_pipelines)

    out = outputs.run_dir(config.root_output_dir, config.experiment_name)
    arms_root = os.path.join(out, "arms")
    os.makedirs(arms_root, exist_ok=True)
    outputs.atomic_write_json(
        os.path.join(out, "comparison.json"),
        {"settings": config.settings(), "arms": config.arms, "target_epsilons": config.target_epsilons},
    )
    tb_root = os.path.join(out, "tensorboard")
    ran, skipped = [], []
    grid = arm_grid(config)
    for i, spec in enumerate(grid, 1):
        if load_arm_result(out, spec, config.settings()) is not None:
            skipped.append(spec.arm_id)
            log(f"[compare] {i}/{len(grid)} {spec.arm_id}: already complete, skipped")
            continue
        log(f"[compare] {i}/{len(grid)} {spec.arm_id}: running ({spec.unit}-level unit)")
        outcome = run_arm(spec, config, datasets[spec.seed], arms_root)
        t0 = time.time()
        audit = auditor(outcome.model_dir, datasets[spec.seed], spec.seed, config)
        record = make_arm_record(spec, config, outcome, audit, time.time() - t0)
        result_path = arm_result_path(out, spec)
        os.makedirs(os.path.dirname(result_path), exist_ok=True)
        outputs.atomic_write_json(result_path, record)  # the completion marker, written last
        write_tensorboard_arm(tb_root, record, config)
        ran.append(spec.arm_id)
        r = record["row"]
        log(
            f"[compare] {spec.arm_id}: accuracy {r['test_accuracy']:.4f}, epsilon {r['epsilon']:.3g}, "
            f"attack AUC {r['attack_auc']:.3f}, {r['wall_time_s']:.1f}s"
        )
        write_reports(config, collect_rows(config))  # partial tables after every arm

    rows = collect_rows(config)
    write_reports(config, rows)
    write_tensorboard_experiment(tb_root, config)
    for spec in grid:  # runs lost between the result and its TensorBoard write are rebuilt
        if not os.path.isdir(os.path.join(tb_root, spec.arm_id)):
            record = load_arm_result(out, spec, config.settings())
            if record is not None:
                write_tensorboard_arm(tb_root, record, config)
    return ComparisonResult(out, rows, ran, skipped, time.time() - start)
