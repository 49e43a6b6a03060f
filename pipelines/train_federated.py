"""Federated training on TFF: FedAvg/FedProx, optionally with user-level DP.

  python -m pipelines.train_federated                                     # non-private FedAvg, digits
  python -m pipelines.train_federated --aggregator=fixed --noise_multiplier=0.5
  python -m pipelines.train_federated --aggregator=adaptive --target_epsilon=10 --rounds=50
  python -m pipelines.train_federated --workers=10.0.0.5:8000,10.0.0.6:8000   # remote TFF workers
  python -m pipelines.train_federated --flagfile=runs/federated/flags.txt     # rerun / resume

Re-running the same command resumes from the last checkpoint in
<root_output_dir>/<experiment_name>/checkpoints/. Outputs there: flags.txt, privacy.json,
metrics.csv, tensorboard/, model/ (SavedModel), checkpoints/.
"""

from __future__ import annotations

import os

from absl import app, flags

from pipelines import cli, local_dp_flags

flags.adopt_module_key_flags(local_dp_flags)  # show the local-DP flags in --help

# Plain tuples (not imported from the library) so that --help never imports TensorFlow.
_DATASETS = (
    "digits",
    "synthetic_classification",
    "synthetic_regression",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "csv",
    "emnist",
)
_MODELS = ("linear", "logistic", "mlp", "cnn")
_NEEDS_DATA_DIR = ("mnist", "fashion_mnist", "cifar10", "csv", "emnist")

_DATASET = flags.DEFINE_enum("dataset", "digits", _DATASETS, "Dataset; emnist = TFF's federated EMNIST.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Cache folder (MNIST/CIFAR/EMNIST) or CSV file/folder. emnist: holds emnist_all.sqlite."
)
_DOWNLOAD = flags.DEFINE_bool("download", False, "Download a missing public dataset into --data_dir.")
_LABEL_COLUMN = flags.DEFINE_string("label_column", "label", "CSV label column.")
_CLIENT_ID_COLUMN = flags.DEFINE_string(
    "client_id_column", None, "CSV client-id column (for --partition=natural)."
)
_MODEL = flags.DEFINE_enum("model", "mlp", _MODELS, "Model architecture.")
_NUM_CLIENTS = flags.DEFINE_integer(
    "num_clients",
    300,
    "Simulated clients (natural partition: 0 = all, fewer = a seeded subset).",
    lower_bound=0,
)
_CPR = flags.DEFINE_integer(
    "clients_per_round", 30, "Clients per round (expected number under Poisson sampling).", lower_bound=1
)
_ROUNDS = flags.DEFINE_integer("rounds", 50, "Training rounds.", lower_bound=1)
_PARTITION = flags.DEFINE_enum("partition", "dirichlet", ["iid", "dirichlet", "natural"], "Client partition.")
_ALPHA = flags.DEFINE_float("dirichlet_alpha", 1.0, "Dirichlet label-skew concentration (small = skewed).")
_CLIENT_EPOCHS = flags.DEFINE_integer("client_epochs", 5, "Local epochs per round.", lower_bound=1)
_CLIENT_BS = flags.DEFINE_integer("client_batch_size", 10, "Local batch size.", lower_bound=1)
_CLIENT_LR = flags.DEFINE_float("client_learning_rate", 0.1, "Client SGD learning rate.")
_SERVER_OPT = flags.DEFINE_enum(
    "server_optimizer", "adam", ["sgd", "momentum", "adam"], "Server optimizer (adam = FedAdam)."
)
_SERVER_LR = flags.DEFINE_float(
    "server_learning_rate", None, "Server learning rate (default: 0.1 for adam, 1.0 for sgd and momentum)."
)
_FEDPROX_MU = flags.DEFINE_float("fedprox_mu", 0.0, "FedProx proximal strength (0 = plain FedAvg).")
_WEIGHTED = flags.DEFINE_bool(
    "weighted", None, "Weight client updates by examples (non-private only; default: yes without DP)."
)
_AGGREGATOR = flags.DEFINE_enum(
    "aggregator",
    "none",
    ["none", "fixed", "adaptive", "tree"],
    "none: plain mean; fixed: Gaussian, fixed clip; adaptive: Gaussian, adaptive clip (Andrew et al.); "
    "tree: tree aggregation (DP-FTRL).",
)
_CLIP = flags.DEFINE_float("clip_norm", 1.0, "L2 clip of each client's update (initial clip if adaptive).")
_NOISE = flags.DEFINE_float(
    "noise_multiplier", None, "Noise stddev / clip. With --target_epsilon: stop before exceeding the target."
)
_TARGET = flags.DEFINE_float(
    "target_epsilon", None, "User-level epsilon budget; alone, it calibrates --noise_multiplier."
)
_DELTA = flags.DEFINE_float("delta", 1e-5, "Target delta (should be < 1/num_clients).")
_ACCOUNTANT = flags.DEFINE_enum("accountant", "rdp", ["rdp", "pld"], "Privacy accountant.")
_SAMPLING = flags.DEFINE_enum(
    "client_sampling", "poisson", ["uniform", "poisson"], "Client sampling (matched by the accountant)."
)
_QUANTILE = flags.DEFINE_float(
    "target_unclipped_quantile", 0.5, "Adaptive clipping: target fraction of unclipped updates."
)
_COUNT_STDDEV = flags.DEFINE_float(
    "clipped_count_stddev",
    None,
    "Adaptive clipping: clipped-count noise stddev (default 0.05 x clients/round).",
)
_WORKERS = flags.DEFINE_list(
    "workers", None, "Remote TFF workers host:port,... (start them with `python -m pipelines.tff_worker`)."
)
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 5, "Evaluate on the test set every K rounds.", lower_bound=1)
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 10, "Checkpoint every K rounds.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the split, partition, init and client sampling.")
_ROOT = flags.DEFINE_string("root_output_dir", "runs", "Root folder of all runs.")
_NAME = flags.DEFINE_string("experiment_name", "federated", "Run folder name under --root_output_dir.")

_HOLDERS = (
    _DATASET, _DATA_DIR, _DOWNLOAD, _LABEL_COLUMN, _CLIENT_ID_COLUMN, _MODEL, _NUM_CLIENTS, _CPR, _ROUNDS,
    _PARTITION, _ALPHA, _CLIENT_EPOCHS, _CLIENT_BS, _CLIENT_LR, _SERVER_OPT, _SERVER_LR, _FEDPROX_MU,
    _WEIGHTED, _AGGREGATOR, _CLIP, _NOISE, _TARGET, _DELTA, _ACCOUNTANT, _SAMPLING, _QUANTILE,
    _COUNT_STDDEV, _WORKERS, _EVAL_EVERY, _CKPT_EVERY, _SEED, _ROOT, _NAME, *local_dp_flags.HOLDERS,
)  # fmt: skip

flags.register_validator("dirichlet_alpha", lambda v: v > 0, "--dirichlet_alpha must be > 0")
flags.register_validator("client_learning_rate", lambda v: v > 0, "--client_learning_rate must be > 0")
flags.register_validator(
    "server_learning_rate", lambda v: v is None or v > 0, "--server_learning_rate must be > 0"
)
flags.register_validator("fedprox_mu", lambda v: v >= 0, "--fedprox_mu must be >= 0")
flags.register_validator("clip_norm", lambda v: v > 0, "--clip_norm must be > 0")
flags.register_validator("noise_multiplier", lambda v: v is None or v >= 0, "--noise_multiplier must be >= 0")
flags.register_validator("target_epsilon", lambda v: v is None or v > 0, "--target_epsilon must be > 0")
flags.register_validator("delta", lambda v: 0 < v < 1, "--delta must be in (0, 1)")
flags.register_validator(
    "target_unclipped_quantile", lambda v: 0 < v < 1, "--target_unclipped_quantile must be in (0, 1)"
)
flags.register_validator(
    "clipped_count_stddev", lambda v: v is None or v > 0, "--clipped_count_stddev must be > 0"
)
flags.register_validator(
    "workers",
    lambda v: v is None or all(w.rpartition(":")[2].isdigit() and w.rpartition(":")[0] for w in v),
    "--workers must be a comma-separated list of host:port",
)
flags.register_multi_flags_validator(
    ["aggregator", "noise_multiplier", "target_epsilon"],
    lambda f: (
        f["aggregator"] == "none" or f["noise_multiplier"] is not None or f["target_epsilon"] is not None
    ),
    "a DP --aggregator needs --noise_multiplier or --target_epsilon",
)
flags.register_multi_flags_validator(
    ["aggregator", "noise_multiplier", "target_epsilon"],
    lambda f: f["aggregator"] != "none" or (not f["noise_multiplier"] and f["target_epsilon"] is None),
    "--noise_multiplier/--target_epsilon need a DP --aggregator (fixed, adaptive or tree)",
)
flags.register_multi_flags_validator(
    ["num_clients", "partition"],
    lambda f: f["num_clients"] > 0 or f["partition"] == "natural",
    "--num_clients=0 (all) is only meaningful with --partition=natural",
)
flags.register_multi_flags_validator(
    ["num_clients", "clients_per_round"],
    lambda f: f["num_clients"] == 0 or f["clients_per_round"] <= f["num_clients"],
    "--clients_per_round must be <= --num_clients",
)
flags.register_multi_flags_validator(
    ["dataset", "data_dir"],
    lambda f: f["dataset"] not in _NEEDS_DATA_DIR or bool(f["data_dir"]),
    "this --dataset needs --data_dir",
)
flags.register_multi_flags_validator(
    ["dataset", "partition"],
    lambda f: f["dataset"] != "emnist" or f["partition"] == "natural",
    "--dataset=emnist is partitioned by writer: use --partition=natural",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from data.datasets import DatasetError
    from pipelines import federated, outputs
    from pipelines.absl_tf import import_tensorflow  # TF imported inside main() breaks Keras otherwise

    try:
        config = federated.FederatedConfig(
            dataset=_DATASET.value,
            data_dir=_DATA_DIR.value,
            download=_DOWNLOAD.value,
            label_column=_LABEL_COLUMN.value,
            client_id_column=_CLIENT_ID_COLUMN.value,
            model=_MODEL.value,
            num_clients=_NUM_CLIENTS.value,
            clients_per_round=_CPR.value,
            rounds=_ROUNDS.value,
            partition=_PARTITION.value,
            dirichlet_alpha=_ALPHA.value,
            client_epochs=_CLIENT_EPOCHS.value,
            client_batch_size=_CLIENT_BS.value,
            client_learning_rate=_CLIENT_LR.value,
            server_optimizer=_SERVER_OPT.value,
            server_learning_rate=_SERVER_LR.value,
            fedprox_mu=_FEDPROX_MU.value,
            weighted=_WEIGHTED.value,
            aggregator=_AGGREGATOR.value,
            clip_norm=_CLIP.value,
            noise_multiplier=_NOISE.value,
            target_epsilon=_TARGET.value,
            delta=_DELTA.value,
            accountant=_ACCOUNTANT.value,
            client_sampling=_SAMPLING.value,
            target_unclipped_quantile=_QUANTILE.value,
            clipped_count_stddev=_COUNT_STDDEV.value,
            workers=tuple(_WORKERS.value) if _WORKERS.value else None,
            eval_every=_EVAL_EVERY.value,
            checkpoint_every=_CKPT_EVERY.value,
            seed=_SEED.value,
            root_output_dir=_ROOT.value,
            experiment_name=_NAME.value,
            local_dp=local_dp_flags.local_dp_config(),
        )
        if config.dataset == "emnist":
            import_tensorflow()  # the EMNIST loader imports TFF
        population, _ = federated.prepare(config)  # every check before anything is written
        out_dir = outputs.run_dir(_ROOT.value, _NAME.value)
        outputs.write_flagfile(os.path.join(out_dir, "flags.txt"), {h.name: h.value for h in _HOLDERS})
        import_tensorflow()
        result = federated.run(config, population)
    except (ValueError, DatasetError) as e:  # one clear line, not a traceback
        raise SystemExit(f"train_federated: error: {e}") from None
    print(f"test accuracy {result.test_accuracy:.4f}; {result.privacy['statement']}")
    print(f"outputs in {result.output_dir}")


def run() -> None:
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
