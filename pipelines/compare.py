"""Centralized DP-SGD vs federated DP on the same split, with a membership-inference audit.

  python -m pipelines.compare                                   # README demo: digits, eps 1,3,8
  python -m pipelines.compare --target_epsilons=3 --seeds=0,1,2
  python -m pipelines.compare --arms=central_dp,fed_dp_example --fed_aggregator=adaptive
  tensorboard --logdir=runs/comparison/tensorboard               # HParams tab: arms side by side

Arms (--arms, comma-separated; every arm states its privacy unit):
  central_nondp   centralized SGD, no DP                               unit: example
  central_dp      centralized DP-SGD, one run per target epsilon       unit: example
  fed_nondp       FedAvg over --fed_num_clients IID clients, no DP     unit: user
  fed_dp          DP-FedAvg, one run per target epsilon                unit: user
  fed_dp_example  DP-FedAvg with exactly one example per client        unit: example (= user)

Outputs in <root_output_dir>/<experiment_name>/: results.csv, results.md, privacy_utility.png,
tensorboard/, comparison.json, flags.txt and arms/<arm_id>/ (each pipeline's own run). Rerunning
the same command skips completed arms and finishes the rest.
"""

from __future__ import annotations

import math
import os

from absl import app, flags

from data.datasets import DATASETS
from models.builders import MODELS
from pipelines import cli
from pipelines.comparison import ARMS, DEFAULT_ARMS, ComparisonConfig

_D = ComparisonConfig()  # flag defaults are the library defaults

_DATASET = flags.DEFINE_enum("dataset", "digits", DATASETS, "Dataset (digits is embedded, no download).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Cache folder for MNIST/Fashion-MNIST/CIFAR-10, or CSV path."
)
_MODEL = flags.DEFINE_enum("model", "mlp", MODELS, "Model architecture (same for every arm).")
_EPSILONS = flags.DEFINE_list(
    "target_epsilons", [f"{e:g}" for e in _D.target_epsilons], "Target epsilons of the DP arms."
)
_DELTA = flags.DEFINE_float("delta", _D.delta, "Target delta; must be < 1/(number of privacy units).")
_ARMS = flags.DEFINE_list(
    "arms", list(DEFAULT_ARMS), "Arms to run, from: " + ",".join(ARMS) + " (central_label_ldp is opt-in)."
)
_SEEDS = flags.DEFINE_list(
    "seeds", [str(x) for x in _D.seeds], "Seeds (split, init, sampling, noise); several give mean ± std."
)
_ACCOUNTANT = flags.DEFINE_enum("accountant", "rdp", ["rdp", "pld"], "Privacy accountant for every DP arm.")
_ROOT = flags.DEFINE_string("root_output_dir", _D.root_output_dir, "Root folder of all runs.")
_NAME = flags.DEFINE_string(
    "experiment_name", _D.experiment_name, "Comparison folder under --root_output_dir."
)

_CENTRAL_EPOCHS = flags.DEFINE_integer(
    "central_epochs", None, "Centralized epochs (default: the centralized pipeline's).", lower_bound=1
)
_CENTRAL_BATCH = flags.DEFINE_integer(
    "central_batch_size", None, "Centralized expected batch size (default: the pipeline's).", lower_bound=1
)
_CENTRAL_LR = flags.DEFINE_float(
    "central_learning_rate", None, "Centralized SGD learning rate (default: the pipeline's)."
)
_CENTRAL_CLIP = flags.DEFINE_float("central_clip", 1.0, "DP-SGD per-example clip norm.")

_FED_AGG = flags.DEFINE_enum(
    "fed_aggregator", _D.fed_aggregator, ["fixed", "adaptive"], "DP-FedAvg clipping."
)
_FED_CLIENTS = flags.DEFINE_integer(
    "fed_num_clients", _D.fed_num_clients, "IID clients of fed_nondp / fed_dp.", lower_bound=1
)
_FED_CPR = flags.DEFINE_integer(
    "fed_clients_per_round", _D.fed_clients_per_round, "Expected clients per round.", lower_bound=1
)
_FED_ROUNDS = flags.DEFINE_integer(
    "fed_rounds", _D.fed_rounds, "Rounds of fed_nondp / fed_dp.", lower_bound=1
)
_FED_EPOCHS = flags.DEFINE_integer(
    "fed_client_epochs", _D.fed_client_epochs, "Local epochs per round.", lower_bound=1
)
_FED_BATCH = flags.DEFINE_integer(
    "fed_client_batch_size", _D.fed_client_batch_size, "Local batch size.", lower_bound=1
)
_FED_CLIENT_LR = flags.DEFINE_float(
    "fed_client_learning_rate", _D.fed_client_learning_rate, "Client SGD learning rate."
)
_FED_SERVER_OPT = flags.DEFINE_enum(
    "fed_server_optimizer", _D.fed_server_optimizer, ["sgd", "momentum", "adam"], "Server optimizer."
)
_FED_SERVER_LR = flags.DEFINE_float(
    "fed_server_learning_rate", _D.fed_server_learning_rate, "Server learning rate."
)
_FED_CLIP = flags.DEFINE_float(
    "fed_clip", _D.fed_clip, "DP-FedAvg clip norm of a client update (initial, if adaptive)."
)
_EX_CPR = flags.DEFINE_integer(
    "fed_example_clients_per_round",
    _D.fed_example_clients_per_round,
    "fed_dp_example: expected clients (= examples) per round.",
    lower_bound=1,
)
_EX_ROUNDS = flags.DEFINE_integer(
    "fed_example_rounds", _D.fed_example_rounds, "fed_dp_example: rounds.", lower_bound=1
)
_EX_LR = flags.DEFINE_float(
    "fed_example_client_learning_rate",
    _D.fed_example_client_learning_rate,
    "fed_dp_example: client learning rate (one SGD step on one example).",
)
_REF_MODELS = flags.DEFINE_integer(
    "audit_reference_models",
    _D.audit_reference_models,
    "Reference models for the offline LiRA attack (0: loss-threshold attack only).",
    lower_bound=0,
)
_CANARIES = flags.DEFINE_integer(
    "audit_canaries",
    _D.audit_canaries,
    "Mislabeled canaries planted in the training data of every arm, half of them inserted "
    "(members) and half left out; even number, 0 for none.",
    lower_bound=0,
)


def _floats(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _ints(values: list[str]) -> list[int] | None:
    try:
        return [int(v) for v in values]
    except ValueError:
        return None


def _valid_epsilons(values: list[str]) -> bool:
    eps = _floats(values)
    return bool(eps) and all(math.isfinite(e) and e > 0 for e in eps) and len(set(eps)) == len(eps)


flags.register_validator(
    "target_epsilons",
    _valid_epsilons,
    "--target_epsilons must be a non-empty comma-separated list of distinct numbers > 0 (e.g. 1,3,8)",
)
flags.register_validator(
    "arms",
    lambda v: bool(v) and all(a in ARMS for a in v) and len(set(v)) == len(v),
    f"--arms must be a non-empty list of distinct arms from {','.join(ARMS)}",
)
flags.register_validator(
    "seeds",
    lambda v: bool(v) and _ints(v) is not None and min(_ints(v)) >= 0 and len(set(_ints(v))) == len(v),
    "--seeds must be a non-empty list of distinct integers >= 0",
)
flags.register_validator("delta", lambda v: 0 < v < 1, "--delta must be in (0, 1)")
for _name in (
    "central_learning_rate",
    "central_clip",
    "fed_client_learning_rate",
    "fed_server_learning_rate",
    "fed_clip",
    "fed_example_client_learning_rate",
):
    flags.register_validator(_name, lambda v: v is None or v > 0, f"--{_name} must be > 0")
flags.register_multi_flags_validator(
    ["fed_clients_per_round", "fed_num_clients"],
    lambda f: f["fed_clients_per_round"] <= f["fed_num_clients"],
    "--fed_clients_per_round must be <= --fed_num_clients",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from pipelines.absl_tf import import_tensorflow

    import_tensorflow()  # before anything imports TF (see pipelines/absl_tf.py)
    from pipelines import comparison, outputs

    try:
        config = comparison.ComparisonConfig(
            dataset=_DATASET.value,
            data_dir=_DATA_DIR.value,
            model=_MODEL.value,
            target_epsilons=tuple(_floats(_EPSILONS.value) or ()),
            delta=_DELTA.value,
            arms=tuple(_ARMS.value),
            seeds=tuple(_ints(_SEEDS.value) or ()),
            accountant=_ACCOUNTANT.value,
            root_output_dir=_ROOT.value,
            experiment_name=_NAME.value,
            central_epochs=_CENTRAL_EPOCHS.value,
            central_batch_size=_CENTRAL_BATCH.value,
            central_learning_rate=_CENTRAL_LR.value,
            central_clip=_CENTRAL_CLIP.value,
            fed_aggregator=_FED_AGG.value,
            fed_num_clients=_FED_CLIENTS.value,
            fed_clients_per_round=_FED_CPR.value,
            fed_rounds=_FED_ROUNDS.value,
            fed_client_epochs=_FED_EPOCHS.value,
            fed_client_batch_size=_FED_BATCH.value,
            fed_client_learning_rate=_FED_CLIENT_LR.value,
            fed_server_optimizer=_FED_SERVER_OPT.value,
            fed_server_learning_rate=_FED_SERVER_LR.value,
            fed_clip=_FED_CLIP.value,
            fed_example_clients_per_round=_EX_CPR.value,
            fed_example_rounds=_EX_ROUNDS.value,
            fed_example_client_learning_rate=_EX_LR.value,
            audit_reference_models=_REF_MODELS.value,
            audit_canaries=_CANARIES.value,
        )
        datasets, _ = comparison.plant_canaries(config, comparison._load_datasets(config, None))  # noqa: SLF001
        comparison.validate(config, datasets)
    except ValueError as e:
        raise app.UsageError(str(e)) from None

    out = outputs.run_dir(config.root_output_dir, config.experiment_name)
    outputs.write_flagfile(
        os.path.join(out, "flags.txt"), outputs.absl_flag_values(flags.FLAGS, [__name__, "pipelines.compare"])
    )
    result = comparison.run_comparison(config)
    print(f"[compare] ran {len(result.ran)} arm(s), skipped {len(result.skipped)} complete arm(s)")
    print(f"[compare] wall time {result.wall_time_s:.1f}s; outputs in {result.output_dir}")
    with open(os.path.join(result.output_dir, "results.md")) as f:
        print(f.read())


def run() -> None:
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
