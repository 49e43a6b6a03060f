"""Centralized training, non-private or DP-SGD with a true epsilon.

  python -m pipelines.train_centralized                                  # non-private, digits
  python -m pipelines.train_centralized --dp --target_epsilon=3          # DP-SGD, eps <= 3
  python -m pipelines.train_centralized --flagfile=runs/centralized/flags.txt

Outputs go to <root_output_dir>/<experiment_name>/: flags.txt, privacy.json, metrics.csv,
tensorboard/, model/ (SavedModel).
"""

from __future__ import annotations

from absl import flags

from pipelines import _app, _flags
from privacy.config import DP_SGD_ENGINES, EXAMPLE_SAMPLINGS
from training.centralized_config import MAX_EPOCHS

_DATA = _flags.define_dataset_flags()
_MODEL = _flags.define_model_flags()
_BUDGET = _flags.define_budget_flags()
_OUT = _flags.define_output_flags("centralized")
_LOCAL_DP = _flags.define_local_dp_flags()
_SEED = _flags.define_seed_flag("Seed for the split, init, sampling and noise.")
_SECURE = _flags.define_secure_noise_flag()
_AUDIT = _flags.define_audit_flags(example_canaries=0)
flags.adopt_module_key_flags(_flags)  # the shared flags above are this binary's too (--help)

RECIPE = " Default: by model and input shape (training/recipes.py; README)."
_EPOCHS = flags.DEFINE_integer("epochs", None, "Training epochs." + RECIPE, lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Batch size (expected size q*N under Poisson sampling)." + RECIPE, lower_bound=1
)
_SAMPLING_RATE = flags.DEFINE_float(
    "sampling_rate", None, "Alternative to --batch_size: Poisson rate q; batch_size = round(q*N)."
)
_LR = flags.DEFINE_float("learning_rate", None, "SGD learning rate." + RECIPE)
_MOMENTUM = flags.DEFINE_float("momentum", None, "SGD momentum (post-processing of DP gradients)." + RECIPE)
_SCHEDULE = flags.DEFINE_enum(
    "lr_schedule", None, ["constant", "cosine"], "Learning-rate schedule (cosine decays to 0)." + RECIPE
)
_DP = flags.DEFINE_bool("dp", False, "Train with DP-SGD.")
_CLIP = flags.DEFINE_float("l2_norm_clip", None, "Per-example gradient L2 clip norm C." + RECIPE)
_SAMPLING = flags.DEFINE_enum(
    "sampling",
    "poisson",
    EXAMPLE_SAMPLINGS,
    "poisson (exact accounting) or shuffle (no amplification claimed).",
)
_ENGINE = flags.DEFINE_enum("engine", "auto", DP_SGD_ENGINES, "DP-SGD clipping engine (see README).")

_flags.positive("learning_rate")
_flags.positive("l2_norm_clip")
_flags.at_most("epochs", MAX_EPOCHS)
_flags.finite_floats()
flags.register_validator("momentum", lambda v: v is None or 0 <= v < 1, "--momentum must be in [0, 1)")
flags.register_validator(
    "sampling_rate", lambda v: v is None or 0 < v <= 1, "--sampling_rate must be in (0, 1]"
)
flags.register_multi_flags_validator(
    ["dp", "noise_multiplier", "target_epsilon"],
    lambda f: not f["dp"] or f["noise_multiplier"] is not None or f["target_epsilon"] is not None,
    "--dp needs --noise_multiplier or --target_epsilon",
)


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    _app.import_tensorflow()  # before anything else imports TF (see pipelines/_app.py)
    from training import centralized
    from training.canary_audit import audit_text
    from training.progress import Diverged

    with _app.bad_input():  # every check; nothing is written before it passes
        config = centralized.CentralizedConfig(
            **_DATA.values(),  # dataset, data_dir, download, label_column, image_size, color_mode
            **_MODEL.values(),  # model, model_init
            epochs=_EPOCHS.value,
            batch_size=_BATCH_SIZE.value,
            sampling_rate=_SAMPLING_RATE.value,
            learning_rate=_LR.value,
            momentum=_MOMENTUM.value,
            lr_schedule=_SCHEDULE.value,
            dp=_DP.value,
            l2_norm_clip=_CLIP.value,
            noise_multiplier=_BUDGET.noise_multiplier.value,
            target_epsilon=_BUDGET.target_epsilon.value,
            delta=_BUDGET.delta.value,
            accountant=_BUDGET.accountant.value,
            sampling=_SAMPLING.value,
            engine=_ENGINE.value,
            seed=_SEED.value,
            secure_noise=_SECURE.value,
            audit_canaries=_AUDIT.canaries.value,
            audit_example_canaries=_AUDIT.example_canaries.value,
            root_output_dir=_OUT.root_output_dir.value,
            experiment_name=_OUT.experiment_name.value,
            local_dp=_LOCAL_DP.config(),
        )
        plan = centralized.prepare(config)
    if plan.engine_reason:  # auto chose a slower engine: say why (the model is the user's to change)
        print(f"engine: {plan.engine} (ghost: {plan.engine_reason})")
    if plan.fitted is not None:  # a table: its schema (public structure) and preprocessing mode
        print(plan.dataset.table.schema.summary())
        print(f"preprocessing: {plan.fitted.mode}")
    try:
        result = centralized.launch(plan, flags=_flags.key_flag_values(__name__))
    except Diverged as e:  # not the input, not a bug: one line, exit code 5
        raise _app.Exit(str(e), code=e.exit_code) from None
    print(_app.result_line(result.test_metrics, result.test_accuracy, result.privacy["statement"]))
    if result.audit:
        print(audit_text(result.audit))
    print(f"outputs in {result.output_dir}")


def run() -> None:
    _app.run(main, __name__)


if __name__ == "__main__":
    run()
