"""A federated experiment's settings, its DP config and its client population (no TFF here).

`FederatedConfig` is what the binary's flags become; `dp_config` derives, once, the
`DpFedAvgConfig` that drives the client sampler, the TFF aggregator and the accountant; `prepare`
loads the clients and checks every setting before anything is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from data.clients import ClientPopulation, from_dataset
from data.datasets import FEDERATED_DATASETS, Dataset
from data.partition import PARTITIONS
from models.specs import check_init
from privacy import accounting, aggregators
from privacy.auditing.canaries import ExampleCanaries
from privacy.config import ACCOUNTANTS, CLIENT_SAMPLINGS, DpFedAvgConfig, check_delta
from privacy.local_dp import LocalDpConfig
from privacy.report import privacy_report as build_report
from privacy.report import randomness_report
from training import table_preprocessing
from training.centralized_config import MAX_ROUNDS, check_count, check_run_settings
from training.inputs import with_local_dp

AGGREGATORS = ("none", "fixed", "adaptive", "tree")
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam")
SERVER_MOMENTUM = 0.9
CLIENT_LOOPS = ("iterator", "reduce")
# Measured on digits (300 Dirichlet(1) clients, 30/round): FedAdam at 0.1 and FedAvgM at 1.0 both
# pass 93% within 30-40 rounds; plain server SGD at 1.0 is FedAvg itself.
DEFAULT_SERVER_LR = {"sgd": 1.0, "momentum": 1.0, "adam": 0.1}


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class FederatedConfig:
    """Everything a federated run needs; validated on construction.

    Defaults reach >= 93% test accuracy on digits with 300 Dirichlet(1) clients, 30 per
    round, non-private (see the README for the measured numbers).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    label_column: str = "label"
    client_id_column: str | None = None
    schema_file: str | None = None  # tables: as in CentralizedConfig; the statistics are user-level here
    preprocessing: str = "private"
    preprocessing_share: float | None = None  # None: training.table_preprocessing.auto_share
    image_size: int | None = None  # image_folder: resize to NxN; None: the images' own size
    color_mode: str | None = None  # image_folder: "grayscale" or "rgb"; None: inferred from the images
    model: str = "mlp"  # a model spec (models/specs.py): built-in name, PATH.py:FUNCTION, PATH.keras
    model_init: str = "fresh"  # "fresh": initialized from the seed; "pretrained": a .keras's saved weights
    num_clients: int = 300
    clients_per_round: int = 30
    rounds: int = 50
    partition: str = "dirichlet"
    dirichlet_alpha: float = 1.0
    client_epochs: int = 5
    client_batch_size: int = 10
    client_learning_rate: float = 0.1
    server_optimizer: str = "adam"
    server_learning_rate: float | None = None  # None: DEFAULT_SERVER_LR[server_optimizer]
    fedprox_mu: float = 0.0
    weighted: bool | None = None  # None: weighted by examples when non-private, else unweighted
    aggregator: str = "none"
    clip_norm: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    client_sampling: str = "poisson"
    target_unclipped_quantile: float = 0.5
    clipped_count_stddev: float | None = None
    eval_every: int = 5
    checkpoint_every: int = 10
    workers: tuple[str, ...] | None = None
    # How TFF runs a client (same math, up to floating-point order; README "Benchmarks"): the
    # iterator loop and tf.data without its graph rewrites cut the per-client cost about 4x.
    client_loop: str = "iterator"  # "iterator" (DATASET_ITERATOR) or "reduce" (TFF's default)
    client_data_optimizations: bool = False  # tf.data's default graph rewrites on client datasets
    seed: int = 0
    secure_noise: bool = False  # noise and client sampling from OS entropy, not from `seed`
    run_id: str = ""  # this run among runs released together; the noise seed is derived from it
    audit_canaries: int = 0  # canary users through the run's aggregator (white box, the model's tensors)
    audit_canary_clients: int = 0  # out-of-distribution canary clients in the population (black box)
    root_output_dir: str = "runs"
    experiment_name: str = "federated"
    local_dp: LocalDpConfig | None = None  # data-level noise on each client's records

    def __post_init__(self) -> None:
        floats = ("dirichlet_alpha", "client_learning_rate", "server_learning_rate", "fedprox_mu",
                  "clip_norm", "noise_multiplier", "target_epsilon", "delta", "target_unclipped_quantile",
                  "clipped_count_stddev", "preprocessing_share")  # fmt: skip
        check_run_settings(
            self.seed, self.root_output_dir, self.experiment_name, **{f: getattr(self, f) for f in floats}
        )
        check_count("rounds", self.rounds, MAX_ROUNDS)
        _check(  # "arrays": data handed over in memory by the Python API (ppml)
            self.dataset in (*FEDERATED_DATASETS, "arrays"), f"dataset must be one of {FEDERATED_DATASETS}"
        )
        check_init(self.model, self.model_init)  # the spec's form and the init (files: in plan_run)
        _check(self.partition in PARTITIONS, f"partition must be one of {PARTITIONS}")
        _check(
            self.num_clients >= 1 or (self.num_clients == 0 and self.partition == "natural"),
            "num_clients must be >= 1 (0 means 'all natural clients' with --partition=natural)",
        )
        _check(self.clients_per_round >= 1, "clients_per_round must be >= 1")
        _check(
            self.num_clients == 0 or self.clients_per_round <= self.num_clients,
            f"clients_per_round ({self.clients_per_round}) exceeds num_clients ({self.num_clients})",
        )
        _check(self.rounds >= 1, "rounds must be >= 1")
        _check(self.dirichlet_alpha > 0, "dirichlet_alpha must be > 0")
        _check(self.client_epochs >= 1, "client_epochs must be >= 1")
        _check(self.client_batch_size >= 1, "client_batch_size must be >= 1")
        _check(self.client_learning_rate > 0, "client_learning_rate must be > 0")
        _check(
            self.server_optimizer in SERVER_OPTIMIZERS, f"server_optimizer must be one of {SERVER_OPTIMIZERS}"
        )
        _check(
            self.server_learning_rate is None or self.server_learning_rate > 0,
            "server_learning_rate must be > 0",
        )
        _check(self.fedprox_mu >= 0, "fedprox_mu must be >= 0 (0 turns FedProx off)")
        _check(self.client_loop in CLIENT_LOOPS, f"client_loop must be one of {CLIENT_LOOPS}")
        _check(self.aggregator in AGGREGATORS, f"aggregator must be one of {AGGREGATORS}")
        _check(self.clip_norm > 0, "clip_norm must be > 0")
        _check(self.noise_multiplier is None or self.noise_multiplier >= 0, "noise_multiplier must be >= 0")
        _check(self.target_epsilon is None or self.target_epsilon > 0, "target_epsilon must be > 0")
        _check(0 < self.delta < 1, "delta must be in (0, 1)")
        _check(self.accountant in ACCOUNTANTS, f"accountant must be one of {ACCOUNTANTS}")
        _check(self.client_sampling in CLIENT_SAMPLINGS, f"client_sampling must be one of {CLIENT_SAMPLINGS}")
        _check(
            self.clipped_count_stddev is None or self.clipped_count_stddev > 0,
            "clipped_count_stddev must be > 0",
        )
        _check(self.audit_canaries >= 0, "audit_canaries must be >= 0")
        _check(self.audit_canary_clients >= 0, "audit_canary_clients must be >= 0")
        _check(self.eval_every >= 1, "eval_every must be >= 1")
        _check(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        _check(self.workers is None or len(self.workers) > 0, "workers must be None or a non-empty list")
        _check(
            not (self.secure_noise and self.aggregator == "tree"),
            "--secure_noise cannot be used with --aggregator=tree: its once-only client order must survive "
            "a resume, so it needs the recorded seed; use --aggregator=fixed or adaptive",
        )
        if self.aggregator == "none":
            _check(
                not self.noise_multiplier and self.target_epsilon is None,
                "--noise_multiplier/--target_epsilon need a DP aggregator: pass --aggregator=fixed, "
                "adaptive or tree",
            )
        else:
            _check(
                self.noise_multiplier is not None or self.target_epsilon is not None,
                f"--aggregator={self.aggregator} needs --noise_multiplier or --target_epsilon",
            )
            _check(
                self.weighted is not True,
                "DP aggregators average client updates unweighted (each user counts once); "
                "--weighted applies only to --aggregator=none",
            )

    @property
    def is_private(self) -> bool:
        return self.aggregator != "none"

    @property
    def server_lr(self) -> float:
        if self.server_learning_rate is not None:
            return self.server_learning_rate
        return DEFAULT_SERVER_LR[self.server_optimizer]

    @property
    def is_weighted(self) -> bool:
        return (not self.is_private) if self.weighted is None else self.weighted


def dp_config(config: FederatedConfig, num_clients: int, fitted=None) -> DpFedAvgConfig:
    """The DpFedAvgConfig of the run (noise 0 and aggregator 'none' for non-private runs).

    With only a target epsilon, the noise is calibrated here, once, for the whole run.
    Raises ValueError for settings TFF's aggregators cannot satisfy (before TFF is imported).
    """
    _check(
        config.clients_per_round <= num_clients,
        f"clients_per_round ({config.clients_per_round}) exceeds the {num_clients} clients of the data",
    )
    if config.is_private:
        check_delta(config.delta, num_clients, "user")
    base = DpFedAvgConfig(
        num_clients=num_clients,
        clients_per_round=config.clients_per_round,
        rounds=config.rounds,
        noise_multiplier=config.noise_multiplier or 0.0,
        clip_norm=config.clip_norm,
        delta=config.delta,
        accountant=config.accountant,
        client_sampling=config.client_sampling,
        aggregator=config.aggregator,
        target_unclipped_quantile=config.target_unclipped_quantile,
        clipped_count_stddev=config.clipped_count_stddev,
        **(table_preprocessing.dp_fields(fitted) if fitted is not None else {}),
    )
    if config.is_private and config.noise_multiplier is None:
        base = accounting.calibrate_fedavg(base, config.target_epsilon)
    if config.is_private and base.noise_multiplier == 0:
        raise ValueError("--noise_multiplier=0 gives no privacy; use --aggregator=none for a non-private run")
    aggregators.check_settings(base)
    return base


def load_population(config: FederatedConfig, dataset: Dataset | ClientPopulation | None = None):
    """The client population of the run (partitioned data, or EMNIST writers)."""
    if isinstance(dataset, ClientPopulation):  # already built (and perturbed, with local DP)
        return dataset
    local = config.local_dp is not None and config.local_dp.enabled
    writers = config.dataset in ("emnist", "synthetic_emnist")
    _check(not (local and writers), "local DP flags need an in-memory dataset (not (synthetic) EMNIST)")
    if writers and dataset is None:
        _check(
            config.partition == "natural",
            f"{config.dataset} is partitioned by writer: use --partition=natural",
        )
    if config.dataset == "synthetic_emnist" and dataset is None:
        from data.synthetic_emnist import NUM_WRITERS, SyntheticEmnistPopulation

        return SyntheticEmnistPopulation(config.num_clients or NUM_WRITERS, seed=config.seed)
    if config.dataset == "emnist" and dataset is None:
        from data.emnist import load_emnist

        return load_emnist(
            config.data_dir, num_clients=config.num_clients, seed=config.seed, download=config.download
        )
    if dataset is None:
        from data.datasets import load_dataset

        dataset = load_dataset(
            config.dataset,
            config.data_dir,
            seed=config.seed,
            download=config.download,
            label_column=config.label_column,
            client_id_column=config.client_id_column,
            image_size=config.image_size,
            color_mode=config.color_mode,
            **({"schema_file": config.schema_file} if config.schema_file else {}),
        )
    fitted = None
    if table_preprocessing.is_table(dataset):
        dataset, fitted = _fit_table(config, dataset)
    # each client perturbs its own records before any training sees them
    dataset, local_report = with_local_dp(dataset, config.local_dp, noise_seed(config))
    population = from_dataset(
        dataset, config.partition, config.num_clients, alpha=config.dirichlet_alpha, seed=config.seed
    )
    population.local_dp_report = local_report
    population.preprocessing = fitted
    return population


def _fit_table(config: FederatedConfig, dataset: Dataset):
    """The table's user-level preprocessing: each simulated user's rows (the partition below is the one
    `from_dataset` makes, same arguments) weigh 1/rows, so one user moves each histogram by at most 1."""
    from data import partition

    _check(
        not (config.secure_noise and config.is_private and config.preprocessing == "private"),
        "--secure_noise with a table's private preprocessing cannot resume (the statistics would be drawn "
        "again); use the seeded mode or --preprocessing=schema",
    )

    users = partition.partition(
        config.partition, dataset.y_train, config.num_clients, alpha=config.dirichlet_alpha,
        client_ids=dataset.client_ids, seed=config.seed,
    )  # fmt: skip

    def training_epsilon() -> float:
        return accounting.fedavg_epsilon(dp_config(config, len(users)))

    return table_preprocessing.fit_for_run(
        dataset, config.preprocessing, config.is_private, config.preprocessing_share, config.target_epsilon,
        config.delta, training_epsilon, noise_seed(config), users=users,
        adjacency=accounting.aggregation_adjacency(config.aggregator, config.client_sampling),
    )  # fmt: skip


def noise_seed(config: FederatedConfig) -> int | None:
    """The seed of everything the guarantee relies on (aggregator noise, client sampling, local DP);
    derived from (seed, experiment name, run_id) so that no two experiments, comparison arms or search
    trials share a stream; None: OS entropy."""
    from privacy.randomness import derive_seed

    if config.secure_noise:
        return None
    return derive_seed(config.seed, "federated", config.experiment_name, config.run_id)


def prepare(
    config: FederatedConfig, dataset: Dataset | ClientPopulation | None = None
) -> tuple[ClientPopulation, DpFedAvgConfig, ExampleCanaries | None]:
    """Loads the clients (and the inserted canary clients, which the accountant counts) and validates
    every setting (DP, resumption) without writing anything."""
    from training.canary_audit import audit_seed
    from training.federated.aggregator_audit import insert_canary_clients
    from training.federated.checkpoints import check_resumable

    population = load_population(config, dataset)
    seed = audit_seed(config.seed)
    population, canary_clients = insert_canary_clients(population, config.audit_canary_clients, seed)
    dp = dp_config(config, population.num_clients, getattr(population, "preprocessing", None))
    check_resumable(config, dp)
    return population, dp, canary_clients


def privacy_report(
    config: FederatedConfig,
    dp: DpFedAvgConfig,
    rounds_done: int,
    empty_rounds: int = 0,
    local_report: dict | None = None,
    fitted=None,
) -> dict[str, Any]:
    """The run's privacy.json (see `privacy.report`), with the federated details (`fitted`: a table's
    preprocessing, privacy.preprocessing.Fitted)."""
    guarantee = accounting.fedavg_guarantee(dp, rounds_done)
    details: dict[str, Any] = {
        "clients_per_round": dp.clients_per_round,
        "num_clients": dp.num_clients,
        "rounds": rounds_done,
        "rounds_planned": config.rounds,
        "aggregator": config.aggregator,
    }
    if dp.is_private:  # how many rounds sampled no client is a statistic of the sampling: not released
        details["sampling_rate"] = dp.sampling_rate
    else:
        details["empty_rounds"] = empty_rounds
    if dp.is_private and dp.aggregator == "adaptive":
        z_v, stddev = aggregators.adaptive_noise_split(dp)
        details.update(value_noise_multiplier=z_v, clipped_count_stddev=stddev)
        guarantee = guarantee.with_note(
            f"TFF splits the effective noise multiplier z={dp.noise_multiplier:.4g} between the update "
            f"sum (value noise multiplier {z_v:.4g}) and the clipped-count query (stddev {stddev:.4g}); "
            "together they are exactly as private as one Gaussian mechanism with z, which is what is "
            "accounted. The clip starts at the given value and adapts."
        )
    if fitted is not None:
        adjacency = accounting.fedavg_adjacency(dp) if dp.is_private else None
        guarantee, details["preprocessing"] = table_preprocessing.report(fitted, guarantee, adjacency)
    if local_report:
        details["local_dp"] = local_report
    details["randomness"] = randomness_report(config.secure_noise)
    return build_report(guarantee, what="federated averaging", **details)
