"""Private hyperparameter search for DP-SGD: one epsilon for the whole search, not only for the winner.

  python -m pipelines.tune --target_epsilon=3                          # digits, default search space
  python -m pipelines.tune --target_epsilon=3 --learning_rates=0.1,0.2 --batch_sizes=512 \\
      --num_runs_distribution=poisson --mean_runs=10
  tensorboard --logdir=runs/tune/not_for_release/tensorboard           # HParams tab: the runs tried

A random number of runs K (drawn before the data is touched), each with a configuration sampled from
the search space and a noisy validation score; only the best run is released (Papernot & Steinke
2022). Outputs in <root_output_dir>/<experiment_name>/: privacy.json (epsilon of the search),
result.json, model/ (the selected run), and not_for_release/ (trials.csv, per-run HParams logs):
every run's score and K, for you only, NOT covered by the guarantee (nor are the per-run lines).
"""

from __future__ import annotations

from absl import flags

from pipelines import _app, _flags
from privacy.config import DP_SGD_ENGINES
from privacy.private_selection import DISTRIBUTIONS
from training.tuning import (
    DEFAULT_RUNS,
    DEFAULT_SCORE_NOISE,
    DEFAULT_VALIDATION_FRACTION,
    SearchSpace,
    TuningConfig,
)

_S = SearchSpace()  # flag defaults are the library defaults

_DATA = _flags.define_dataset_flags()
_MODEL = _flags.define_model_flag()
_BUDGET = _flags.define_budget_flags(target_help="Epsilon of the whole search (all runs and the selection).")
_OUT = _flags.define_output_flags("tune")
_SEED = _flags.define_seed_flag("Seed of K, the configurations, the split, init and noise (keep it secret).")
_SECURE = _flags.define_secure_noise_flag()

_LRS = _flags.define_list("learning_rates", list(_S.learning_rate), "Search space: SGD learning rates.")
_CLIPS = _flags.define_list("l2_norm_clips", list(_S.l2_norm_clip), "Search space: clip norms C.")
_BATCHES = _flags.define_list(
    "batch_sizes",
    list(_S.batch_size),
    "Search space: expected batch sizes.",
    int,
    lambda b: b > 0,
    "ints > 0",
)
_EPOCHS = _flags.define_list(
    "epoch_counts", list(_S.epochs), "Search space: training epochs.", int, lambda e: e > 0, "ints > 0"
)
flags.adopt_module_key_flags(_flags)  # the shared flags above are this binary's too (--help)
_WIDTHS = flags.DEFINE_list(
    "widths", [str(w) for w in _S.width], "Search space: MLP hidden units (--model=mlp only)."
)
_DIST = flags.DEFINE_enum("num_runs_distribution", DEFAULT_RUNS[0], list(DISTRIBUTIONS), "Distribution of K.")
_MEAN = flags.DEFINE_float("mean_runs", DEFAULT_RUNS[1], "Mean number of runs K (> 1).")
_ETA = flags.DEFINE_float(
    "tnb_eta", DEFAULT_RUNS[2], "Shape eta of the truncated negative binomial, in (0, inf)."
)
_SCORE_NOISE = flags.DEFINE_float(
    "score_noise", DEFAULT_SCORE_NOISE,
    "Stddev of the Gaussian noise on each run's count of correct validation predictions (sensitivity 1).",
)  # fmt: skip
_VAL_FRACTION = flags.DEFINE_float(
    "validation_fraction", DEFAULT_VALIDATION_FRACTION, "Validation share of train."
)
_ENGINE = flags.DEFINE_enum("engine", "auto", DP_SGD_ENGINES, "DP-SGD clipping engine (see README).")

flags.mark_flag_as_required("target_epsilon")
flags.register_validator(
    "widths", lambda v: all(x.isdigit() and int(x) > 0 for x in v), "--widths must be ints > 0"
)
flags.register_validator("mean_runs", lambda v: v > 1, "--mean_runs must be > 1")
flags.register_validator("tnb_eta", lambda v: v > 0, "--tnb_eta must be > 0")
flags.register_validator("score_noise", lambda v: v > 0, "--score_noise must be > 0")
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


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    _app.import_tensorflow()  # before anything else imports TF (see pipelines/_app.py)
    from privacy.private_selection import RunsDistribution
    from training import tuning

    with _app.bad_input():  # every check; nothing is written before it passes
        runs = RunsDistribution(
            _DIST.value, _MEAN.value, _ETA.value if _DIST.value.startswith("trunc") else None
        )
        space = SearchSpace(
            learning_rate=tuple(_flags.parse_list(_LRS.value, float)),
            l2_norm_clip=tuple(_flags.parse_list(_CLIPS.value, float)),
            batch_size=tuple(_flags.parse_list(_BATCHES.value, int)),
            epochs=tuple(_flags.parse_list(_EPOCHS.value, int)),
            width=tuple(_flags.parse_list(_WIDTHS.value, int))
            if _MODEL.value == "mlp" or _WIDTHS.present
            else (),
        )
        config = TuningConfig(
            target_epsilon=_BUDGET.target_epsilon.value,
            runs=runs,
            space=space,
            dataset=_DATA.dataset.value,
            data_dir=_DATA.data_dir.value,
            download=_DATA.download.value,
            label_column=_DATA.label_column.value,
            model=_MODEL.value,
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
