"""Centralized DP-SGD vs federated DP on the same split and budgets, with a membership-inference audit.

  python -m pipelines.compare                                   # README demo: digits, eps 1,3,8
  python -m pipelines.compare --target_epsilons=3 --seeds=0,1,2 --arms=central_dp,fed_dp_example
  tensorboard --logdir=runs/comparison/tensorboard               # HParams tab: arms side by side

Arms and their privacy units: see `training/comparison/grid.py` and the README. Outputs in
<root_output_dir>/<experiment_name>/; rerunning the same command skips completed arms.
"""

from __future__ import annotations

import math
import os

from absl import flags

from pipelines import _app, _flags
from privacy.randomness import SEED_MAX
from training.centralized_config import MAX_EPOCHS, MAX_ROUNDS
from training.comparison.grid import ARMS, DEFAULT_ARMS, ComparisonConfig

_D = ComparisonConfig()  # flag defaults are the library defaults
DEFINE_int, DEFINE_float = flags.DEFINE_integer, flags.DEFINE_float

_DATA = _flags.define_dataset_flags(files=False)
_MODEL = _flags.define_model_flags("Model architecture (same for every arm).")
_OUT = _flags.define_output_flags(_D.experiment_name)
_DELTA, _ACCOUNTANT = _flags.define_delta_and_accountant(
    accountant_help="Privacy accountant of every DP arm."
)
_SECURE = _flags.define_secure_noise_flag()
_AUDIT = _flags.define_audit_flags(_D.audit_canaries, _D.audit_example_canaries, _D.audit_canary_clients)
_METRIC = _flags.define_metric_flag("Headline column of results.md and the plot (results.csv has all).")
flags.adopt_module_key_flags(_flags)  # the shared flags above are this binary's too (--help)
_EPSILONS = _flags.define_list(
    "target_epsilons", _D.target_epsilons, "Target epsilons (e.g. 1,3,8).", check=lambda e: 0 < e < math.inf
)
_ARMS = flags.DEFINE_list(
    "arms", list(DEFAULT_ARMS), f"Arms, from: {','.join(ARMS)} (central_label_ldp, central_dp_tuned opt-in)."
)
_SEEDS = _flags.define_list(
    "seeds",
    _D.seeds,
    "Seeds (split, init, sampling, noise); several give mean ± std.",
    int,
    lambda s: 0 <= s <= SEED_MAX,
    f"ints in [0, {SEED_MAX}]",
)

_CENTRAL_EPOCHS = DEFINE_int(
    "central_epochs", None, "Centralized epochs (default: pipeline's).", lower_bound=1
)
_CENTRAL_BATCH = DEFINE_int("central_batch_size", None, "Centralized expected batch size.", lower_bound=1)
_CENTRAL_LR = DEFINE_float("central_learning_rate", None, "Centralized SGD learning rate.")
_CENTRAL_CLIP = DEFINE_float("central_clip", _D.central_clip, "DP-SGD per-example clip norm.")
_FED_AGG = flags.DEFINE_enum("fed_aggregator", _D.fed_aggregator, ["fixed", "adaptive"], "DP-FedAvg clip.")
_FED_CLIENTS = DEFINE_int("fed_num_clients", _D.fed_num_clients, "Clients of fed_(non)dp.", lower_bound=1)
_FED_CPR = DEFINE_int("fed_clients_per_round", _D.fed_clients_per_round, "Clients/round.", lower_bound=1)
_FED_ROUNDS = DEFINE_int("fed_rounds", _D.fed_rounds, "Rounds of fed_nondp / fed_dp.", lower_bound=1)
_FED_EPOCHS = DEFINE_int("fed_client_epochs", _D.fed_client_epochs, "Local epochs per round.", lower_bound=1)
_FED_BATCH = DEFINE_int("fed_client_batch_size", _D.fed_client_batch_size, "Local batch size.", lower_bound=1)
_FED_CLIENT_LR = DEFINE_float("fed_client_learning_rate", _D.fed_client_learning_rate, "Client LR.")
_FED_SERVER_OPT = flags.DEFINE_enum(
    "fed_server_optimizer", _D.fed_server_optimizer, ["sgd", "momentum", "adam"], "Server optimizer."
)
_FED_SERVER_LR = DEFINE_float("fed_server_learning_rate", _D.fed_server_learning_rate, "Server LR.")
_FED_CLIP = DEFINE_float("fed_clip", _D.fed_clip, "DP-FedAvg clip of a client update (initial, if adaptive).")
_EX_CPR = DEFINE_int(
    "fed_example_clients_per_round", _D.fed_example_clients_per_round, "fed_dp_example: clients/round."
)
_EX_ROUNDS = DEFINE_int("fed_example_rounds", _D.fed_example_rounds, "fed_dp_example: rounds.", lower_bound=1)
_EX_LR = DEFINE_float(
    "fed_example_client_learning_rate", _D.fed_example_client_learning_rate, "fed_dp_example: client LR."
)
_REF_MODELS = DEFINE_int(
    "audit_reference_models", _D.audit_reference_models, "LiRA reference models.", lower_bound=0
)

flags.register_validator(
    "arms",
    lambda v: bool(v) and all(a in ARMS for a in v) and len(set(v)) == len(v),
    f"--arms must be a non-empty list of distinct arms from {','.join(ARMS)}",
)
for _name in ("central_learning_rate", "central_clip", "fed_client_learning_rate", "fed_server_learning_rate",
              "fed_clip", "fed_example_client_learning_rate"):  # fmt: skip
    _flags.positive(_name)
_flags.at_most("central_epochs", MAX_EPOCHS)
_flags.at_most("fed_rounds", MAX_ROUNDS)
_flags.at_most("fed_example_rounds", MAX_ROUNDS)
_flags.finite_floats()


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    _app.import_tensorflow()  # before anything imports TF (see pipelines/_app.py)
    from training import comparison
    from training.progress import Diverged
    from training.run_folder import RunFolder

    with _app.bad_input():  # every check; nothing is written before it passes
        config = ComparisonConfig(
            **_DATA.values(),  # dataset, data_dir, image_size, color_mode
            **_MODEL.values(),  # model, model_init
            target_epsilons=tuple(_flags.parse_list(_EPSILONS.value, float) or ()),
            delta=_DELTA.value,
            arms=tuple(_ARMS.value),
            seeds=tuple(_flags.parse_list(_SEEDS.value, int) or ()),
            secure_noise=_SECURE.value,
            accountant=_ACCOUNTANT.value,
            root_output_dir=_OUT.root_output_dir.value,
            experiment_name=_OUT.experiment_name.value,
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
            audit_canaries=_AUDIT.canaries.value,
            audit_example_canaries=_AUDIT.example_canaries.value,
            audit_canary_clients=_AUDIT.canary_clients.value,
            metric=_METRIC.value,
            positive_fraction=None,  # auto: the estimate a table's DP arm released (driver), else accuracy
        )
        comparison.validate(config, comparison.load_datasets(config, None))
        folder = RunFolder(config.root_output_dir, config.experiment_name).create()
    folder.write_flags(_flags.key_flag_values(__name__))
    try:
        result = comparison.run_comparison(config)
    except Diverged as e:  # an arm diverged: one line, exit code 5 (the arms done so far are kept)
        raise _app.Exit(str(e), code=e.exit_code) from None
    print(f"[compare] ran {len(result.ran)} arm(s), skipped {len(result.skipped)} complete arm(s)")
    # no wall time: it covers the DP arms (each arm's is in not_for_release/timings.csv)
    print(f"[compare] outputs in {result.output_dir}")
    with open(os.path.join(result.output_dir, "results.md")) as f:
        print(f.read())


def run() -> None:
    _app.run(main, __name__, resumable=True)


if __name__ == "__main__":
    run()
