"""Centralized training, non-private or DP-SGD with a true epsilon.

  python -m pipelines.train_centralized                                  # non-private, digits
  python -m pipelines.train_centralized --dp --target_epsilon=3          # DP-SGD, eps <= 3
  python -m pipelines.train_centralized --flagfile=runs/centralized/flags.txt

Outputs go to <root_output_dir>/<experiment_name>/: flags.txt, privacy.json, metrics.csv,
tensorboard/, model/ (SavedModel).
"""

from __future__ import annotations

import os

from absl import app, flags

from data.datasets import DATASETS
from models.builders import MODELS, check_compatible
from pipelines import cli, local_dp_flags
from privacy.config import ACCOUNTANTS, DP_SGD_ENGINES, EXAMPLE_SAMPLINGS

flags.adopt_module_key_flags(local_dp_flags)  # show the local-DP flags in --help
_DATASET = flags.DEFINE_enum("dataset", "digits", DATASETS, "Dataset (digits is embedded, no download).")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Cache folder for MNIST/Fashion-MNIST/CIFAR-10, or CSV path."
)
_DOWNLOAD = flags.DEFINE_bool("download", False, "Download a missing public dataset into --data_dir.")
_LABEL_COLUMN = flags.DEFINE_string("label_column", "label", "CSV label column.")
_MODEL = flags.DEFINE_enum("model", "mlp", MODELS, "Model architecture.")
_EPOCHS = flags.DEFINE_integer("epochs", 100, "Training epochs.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 512, "Batch size (expected size q*N under Poisson sampling).", lower_bound=1
)
_SAMPLING_RATE = flags.DEFINE_float(
    "sampling_rate", None, "Alternative to --batch_size: Poisson rate q; batch_size = round(q*N)."
)
_LR = flags.DEFINE_float("learning_rate", 0.1, "SGD learning rate.")
_MOMENTUM = flags.DEFINE_float("momentum", 0.9, "SGD momentum (post-processing of DP gradients).")
_SCHEDULE = flags.DEFINE_enum(
    "lr_schedule", "cosine", ["constant", "cosine"], "Learning-rate schedule (cosine decays to 0 by the end)."
)
_DP = flags.DEFINE_bool("dp", False, "Train with DP-SGD.")
_CLIP = flags.DEFINE_float("l2_norm_clip", 1.0, "Per-example gradient L2 clip norm C.")
_NOISE = flags.DEFINE_float("noise_multiplier", None, "Noise stddev / C. With --target_epsilon: a budget.")
_TARGET = flags.DEFINE_float(
    "target_epsilon",
    None,
    "Calibrate the noise to this epsilon (or, with --noise_multiplier, stop before it).",
)
_DELTA = flags.DEFINE_float("delta", 1e-5, "Target delta (must be < 1/N).")
_ACCOUNTANT = flags.DEFINE_enum("accountant", "rdp", ACCOUNTANTS, "Privacy accountant.")
_SAMPLING = flags.DEFINE_enum(
    "sampling",
    "poisson",
    EXAMPLE_SAMPLINGS,
    "poisson (exact accounting) or shuffle (no amplification claimed).",
)
_ENGINE = flags.DEFINE_enum("engine", "auto", DP_SGD_ENGINES, "DP-SGD clipping engine (see README).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the split, init, sampling and noise.")
_ROOT = flags.DEFINE_string("root_output_dir", "runs", "Root folder of all runs.")
_NAME = flags.DEFINE_string("experiment_name", "centralized", "Run folder name under --root_output_dir.")

_HOLDERS = (
    _DATASET, _DATA_DIR, _DOWNLOAD, _LABEL_COLUMN, _MODEL, _EPOCHS, _BATCH_SIZE, _SAMPLING_RATE, _LR,
    _MOMENTUM, _SCHEDULE, _DP, _CLIP, _NOISE, _TARGET, _DELTA, _ACCOUNTANT, _SAMPLING, _ENGINE, _SEED,
    _ROOT, _NAME,
    *local_dp_flags.HOLDERS,
)  # fmt: skip

flags.register_validator("learning_rate", lambda v: v > 0, "--learning_rate must be > 0")
flags.register_validator("momentum", lambda v: 0 <= v < 1, "--momentum must be in [0, 1)")
flags.register_validator("l2_norm_clip", lambda v: v > 0, "--l2_norm_clip must be > 0")
flags.register_validator("noise_multiplier", lambda v: v is None or v >= 0, "--noise_multiplier must be >= 0")
flags.register_validator("target_epsilon", lambda v: v is None or v > 0, "--target_epsilon must be > 0")
flags.register_validator("delta", lambda v: 0 < v < 1, "--delta must be in (0, 1)")
flags.register_validator(
    "sampling_rate", lambda v: v is None or 0 < v <= 1, "--sampling_rate must be in (0, 1]"
)
flags.register_multi_flags_validator(
    ["dp", "noise_multiplier", "target_epsilon"],
    lambda f: not f["dp"] or f["noise_multiplier"] is not None or f["target_epsilon"] is not None,
    "--dp needs --noise_multiplier or --target_epsilon",
)
flags.register_multi_flags_validator(
    ["dataset", "data_dir"],
    lambda f: f["dataset"] not in ("mnist", "fashion_mnist", "cifar10", "csv") or bool(f["data_dir"]),
    "this --dataset needs --data_dir",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from pipelines.absl_tf import import_tensorflow

    import_tensorflow()  # before anything else imports TF (see pipelines/absl_tf.py)
    from data.datasets import DatasetError, load_dataset
    from pipelines import centralized, outputs

    try:
        dataset = load_dataset(
            _DATASET.value,
            _DATA_DIR.value,
            seed=_SEED.value,
            download=_DOWNLOAD.value,
            label_column=_LABEL_COLUMN.value,
        )
        batch_size = _BATCH_SIZE.value
        if _SAMPLING_RATE.value is not None:
            batch_size = max(1, round(_SAMPLING_RATE.value * dataset.num_train))
        config = centralized.CentralizedConfig(
            dataset=_DATASET.value,
            data_dir=_DATA_DIR.value,
            download=_DOWNLOAD.value,
            label_column=_LABEL_COLUMN.value,
            model=_MODEL.value,
            epochs=_EPOCHS.value,
            batch_size=batch_size,
            learning_rate=_LR.value,
            momentum=_MOMENTUM.value,
            lr_schedule=_SCHEDULE.value,
            dp=_DP.value,
            l2_norm_clip=_CLIP.value,
            noise_multiplier=_NOISE.value,
            target_epsilon=_TARGET.value,
            delta=_DELTA.value,
            accountant=_ACCOUNTANT.value,
            sampling=_SAMPLING.value,
            engine=_ENGINE.value,
            seed=_SEED.value,
            root_output_dir=_ROOT.value,
            experiment_name=_NAME.value,
            local_dp=local_dp_flags.local_dp_config(),
        )
        check_compatible(config.model, dataset.input_shape, dataset.num_classes)
        if config.dp:
            centralized.dp_sgd_config(config, dataset.num_train)  # validate before writing anything
        out_dir = outputs.run_dir(_ROOT.value, _NAME.value)
    except (ValueError, DatasetError) as e:  # bad input: one clear line, nothing written
        raise SystemExit(f"train_centralized: error: {e}") from None
    outputs.write_flagfile(os.path.join(out_dir, "flags.txt"), {h.name: h.value for h in _HOLDERS})
    try:
        result = centralized.run(config, dataset)
    except centralized.ConfigError as e:
        raise SystemExit(f"train_centralized: error: {e}") from None
    print(f"test accuracy {result.test_accuracy:.4f}; {result.privacy['statement']}")
    print(f"outputs in {result.output_dir}")


def run() -> None:
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
