"""Private hyperparameter search for DP-SGD: one epsilon for the whole search, not only for the winner.

  python -m pipelines.tune --target_epsilon=3                          # digits, default search space
  python -m pipelines.tune --target_epsilon=3 --learning_rates=0.1,0.2 --batch_sizes=512 \\
      --num_runs_distribution=poisson --mean_runs=10
  python -m pipelines.tune --pipeline=federated --target_epsilon=8       # DP-FedAvg, user level
  tensorboard --logdir=runs/tune/not_for_release/tensorboard           # HParams tab: the runs tried

A random number of runs K (drawn before the data is touched), each with a configuration sampled from
the search space and a noisy validation score; only the best run is released (Papernot & Steinke
2022). Outputs in <root_output_dir>/<experiment_name>/: privacy.json (epsilon of the search),
result.json, model/ (the selected run), and not_for_release/ (trials.csv, per-run HParams logs,
search.json with K and the wall time, progress.log with the per-run lines): every run's score and
K, for you only, NOT covered by the guarantee. Nothing outside not_for_release/ depends on K.
"""

from __future__ import annotations

from absl import flags

from pipelines import _app, _flags
from privacy.config import DP_SGD_ENGINES
from privacy.private_selection import DISTRIBUTIONS
from training.centralized_config import MAX_EPOCHS, MAX_ROUNDS
from training.federated.search import FederatedSearchSpace
from training.tuning import (
    DEFAULT_RUNS,
    DEFAULT_VALIDATION_FRACTION,
    PIPELINES,
    SearchSpace,
    TuningConfig,
)

_S, _F = SearchSpace(), FederatedSearchSpace()  # flag defaults are the library defaults


def _space_list(
    name: str, default: tuple, help_text: str, kind: type = float, most: int | None = None
) -> tuple:
    """A search-space list flag and the type of its values (ints: at most `most`, when given)."""
    limit = f" and <= {most:,}" if most else ""
    ints = (
        dict(kind=int, check=lambda v: 0 < v <= (most or v), what=f"ints > 0{limit}") if kind is int else {}
    )
    return _flags.define_list(name, list(default), help_text, **ints), kind


_DATA = _flags.define_dataset_flags(tables=False)  # the search takes no raw tables (yet)
_MODEL = _flags.define_model_flags()
_BUDGET = _flags.define_budget_flags(target_help="Epsilon of the whole search (all runs and the selection).")
_OUT = _flags.define_output_flags("tune")
_SEED = _flags.define_seed_flag("Seed of K, the configurations, the split, init and noise (keep it secret).")
_SECURE = _flags.define_secure_noise_flag()
_CENTRAL = {  # SearchSpace field -> (flag, kind)
    "learning_rate": _space_list("learning_rates", _S.learning_rate, "Space: SGD learning rates."),
    "l2_norm_clip": _space_list("l2_norm_clips", _S.l2_norm_clip, "Space: clip norms C."),
    "batch_size": _space_list("batch_sizes", _S.batch_size, "Space: expected batch sizes.", int),
    "epochs": _space_list("epoch_counts", _S.epochs, "Space: training epochs.", int, MAX_EPOCHS),
    "width": _space_list("widths", _S.width, "Space: MLP hidden units (mlp only).", int),
}
_FEDERATED = {  # FederatedSearchSpace field -> (flag, kind), with --pipeline=federated
    "client_learning_rate": _space_list(
        "client_learning_rates", _F.client_learning_rate, "Space: client rates."
    ),
    "clip_norm": _space_list("clip_norms", _F.clip_norm, "Space: clip norms of a user's update."),
    "clients_per_round": _space_list(
        "clients_per_round_values", _F.clients_per_round, "Space: per round.", int
    ),
    "rounds": _space_list("round_counts", _F.rounds, "Space: rounds.", int, MAX_ROUNDS),
}
flags.adopt_module_key_flags(_flags)  # the shared flags above are this binary's too (--help)
_PIPELINE = flags.DEFINE_enum(
    "pipeline", "centralized", list(PIPELINES), "DP-SGD, or DP-FedAvg (user level)."
)
_NUM_CLIENTS = flags.DEFINE_integer(
    "num_clients", 300, "federated: users (Dirichlet split of train).", lower_bound=2
)
_DIST = flags.DEFINE_enum("num_runs_distribution", DEFAULT_RUNS[0], list(DISTRIBUTIONS), "Distribution of K.")
_MEAN = flags.DEFINE_float("mean_runs", DEFAULT_RUNS[1], "Mean number of runs K (> 1).")
_ETA = flags.DEFINE_float(
    "tnb_eta", DEFAULT_RUNS[2], "Shape eta of the truncated negative binomial, in (0, inf)."
)
_SCORE_NOISE = flags.DEFINE_float(
    "score_noise", None, "Noise stddev on each run's count of correct validation predictions, per unit "
    "of its sensitivity (1 example; federated: 5 predictions of one user). Default 10 (federated: 2).",
)  # fmt: skip
_VAL_FRACTION = flags.DEFINE_float("validation_fraction", DEFAULT_VALIDATION_FRACTION, "Validation share.")
_ENGINE = flags.DEFINE_enum("engine", "auto", DP_SGD_ENGINES, "DP-SGD clipping engine (see README).")

flags.mark_flag_as_required("target_epsilon")
flags.register_validator("mean_runs", lambda v: v > 1, "--mean_runs must be > 1")
flags.register_validator("tnb_eta", lambda v: v > 0, "--tnb_eta must be > 0")
flags.register_validator("score_noise", lambda v: v is None or v > 0, "--score_noise must be > 0")
flags.register_validator(
    "validation_fraction", lambda v: 0 < v < 1, "--validation_fraction must be in (0, 1)"
)
flags.register_validator(
    "noise_multiplier",
    lambda v: v is None,
    "--noise_multiplier does not apply: the search calibrates each run's noise",
)
flags.register_validator(
    "accountant", lambda v: v == "rdp", "--accountant: the search epsilon needs the RDP accountant (rdp)"
)
_flags.finite_floats()


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    _app.import_tensorflow()  # before anything else imports TF (see pipelines/_app.py)
    from privacy.private_selection import RunsDistribution
    from training import tuning

    with _app.bad_input():  # every check; nothing is written before it passes
        runs = RunsDistribution(
            _DIST.value, _MEAN.value, _ETA.value if _DIST.value.startswith("trunc") else None
        )
        federated = _PIPELINE.value == "federated"
        lists = dict(_FEDERATED if federated else _CENTRAL)
        values = {
            name: tuple(_flags.parse_list(holder.value, kind)) for name, (holder, kind) in lists.items()
        }
        if not federated and _MODEL.model.value != "mlp" and not _CENTRAL["width"][0].present:
            values["width"] = ()  # the MLP widths default does not apply to other models
        space = (FederatedSearchSpace if federated else SearchSpace)(**values)
        config = TuningConfig(
            target_epsilon=_BUDGET.target_epsilon.value,
            runs=runs,
            space=space,
            pipeline=_PIPELINE.value,
            num_clients=_NUM_CLIENTS.value,
            **_DATA.values(),  # dataset, data_dir, download, label_column, image_size, color_mode
            **_MODEL.values(),  # model, model_init
            delta=_BUDGET.delta.value,
            score_noise=_SCORE_NOISE.value,
            validation_fraction=_VAL_FRACTION.value,
            engine=_ENGINE.value,
            seed=_SEED.value,
            secure_noise=_SECURE.value,
            root_output_dir=_OUT.root_output_dir.value,
            experiment_name=_OUT.experiment_name.value,
        )
        plan = tuning.prepare(config)
    result = tuning.launch(plan, flags=_flags.key_flag_values(__name__))
    if result.selected is not None:
        print(f"selected test accuracy {result.selected['test_accuracy']:.4f}")
    print(result.privacy["statement"])
    print(f"outputs in {result.output_dir}")


def run() -> None:
    _app.run(main, __name__)


if __name__ == "__main__":
    run()
