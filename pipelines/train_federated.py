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

from absl import flags

from data.datasets import FEDERATED_DATASETS
from pipelines import _app, _flags
from training.centralized_config import MAX_ROUNDS

_DATA = _flags.define_dataset_flags(FEDERATED_DATASETS, "Dataset; emnist = TFF's federated EMNIST.")
_MODEL = _flags.define_model_flags()
_BUDGET = _flags.define_budget_flags(
    noise_help="Noise stddev / clip. With --target_epsilon: stop before exceeding the target.",
    target_help="User-level epsilon budget; alone, it calibrates --noise_multiplier.",
    delta_help="Target delta (must be < 1/num_clients).",
)
_OUT = _flags.define_output_flags("federated")
_LOCAL_DP = _flags.define_local_dp_flags()
_SEED = _flags.define_seed_flag("Seed for the split, partition, init and client sampling.")
_SECURE = _flags.define_secure_noise_flag()
_AUDIT = _flags.define_audit_flags(canary_clients=0)
flags.adopt_module_key_flags(_flags)  # the shared flags above are this binary's too (--help)

_CLIENT_ID_COLUMN = flags.DEFINE_string("client_id_column", None, "CSV client-id column (natural partition).")
_NUM_CLIENTS = flags.DEFINE_integer(
    "num_clients", 300, "Clients (natural partition: 0 = all).", lower_bound=0
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
_FEDPROX_MU = flags.DEFINE_float("fedprox_mu", 0.0, "FedProx proximal strength (0: FedAvg).", lower_bound=0)
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
_SAMPLING = flags.DEFINE_enum(
    "client_sampling", "poisson", ["uniform", "poisson"], "Client sampling (matched by the accountant)."
)
_QUANTILE = flags.DEFINE_float(
    "target_unclipped_quantile", 0.5, "Adaptive clipping: target fraction of unclipped updates."
)
_COUNT_STDDEV = flags.DEFINE_float(
    "clipped_count_stddev", None, "Adaptive: count noise (0.05 x clients/round)."
)
_WORKERS = flags.DEFINE_list(
    "workers", None, "Remote TFF workers host:port,... (start them with `python -m pipelines.tff_worker`)."
)
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 5, "Evaluate on the test set every K rounds.", lower_bound=1)
_CKPT_EVERY = flags.DEFINE_integer("checkpoint_every", 10, "Checkpoint every K rounds.", lower_bound=1)

for _name in ("dirichlet_alpha", "client_learning_rate", "clip_norm"):
    _flags.positive(_name, allow_none=False)
_flags.positive("server_learning_rate")
_flags.positive("clipped_count_stddev")
_flags.at_most("rounds", MAX_ROUNDS)
_flags.finite_floats()
flags.register_validator("target_unclipped_quantile", lambda v: 0 < v < 1, "must be in (0, 1)")
flags.register_validator(
    "workers",
    lambda v: v is None or all(w.rpartition(":")[2].isdigit() and w.rpartition(":")[0] for w in v),
    "--workers must be a comma-separated list of host:port",
)


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    from training import federated

    with _app.bad_input():  # every check; nothing is written before it passes
        config = federated.FederatedConfig(
            **_DATA.values(),  # dataset, data_dir, download, label_column, image_size, color_mode
            client_id_column=_CLIENT_ID_COLUMN.value,
            **_MODEL.values(),  # model, model_init
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
            noise_multiplier=_BUDGET.noise_multiplier.value,
            target_epsilon=_BUDGET.target_epsilon.value,
            delta=_BUDGET.delta.value,
            accountant=_BUDGET.accountant.value,
            client_sampling=_SAMPLING.value,
            target_unclipped_quantile=_QUANTILE.value,
            clipped_count_stddev=_COUNT_STDDEV.value,
            workers=tuple(_WORKERS.value) if _WORKERS.value else None,
            eval_every=_EVAL_EVERY.value,
            checkpoint_every=_CKPT_EVERY.value,
            seed=_SEED.value,
            secure_noise=_SECURE.value,
            audit_canaries=_AUDIT.canaries.value,
            audit_canary_clients=_AUDIT.canary_clients.value,
            root_output_dir=_OUT.root_output_dir.value,
            experiment_name=_OUT.experiment_name.value,
            local_dp=_LOCAL_DP.config(),
        )
        _app.import_tensorflow()  # plan_run builds the model (and the EMNIST loader imports TFF)
        plan = federated.plan_run(config)
    from training.canary_audit import audit_text
    from training.federated.execution_context import WorkerLostError
    from training.progress import Diverged

    try:
        result = federated.launch(plan, flags=_flags.key_flag_values(__name__))
    except WorkerLostError as e:  # not a bug, and not the input: one line, resumable
        raise _app.Exit(f"{e} Resume with the same command.", code=_app.EXIT_BUG) from None
    except Diverged as e:  # one line, exit code 5
        raise _app.Exit(str(e), code=e.exit_code) from None
    print(_app.result_line(result.test_metrics, result.test_accuracy, result.privacy["statement"]))
    if result.audit:
        print(audit_text(result.audit))
    print(f"outputs in {result.output_dir}")


def run() -> None:
    _app.run(main, __name__, resumable=True)


if __name__ == "__main__":
    run()
