"""Flag definers shared by the binaries: each flag is defined once, here, with its validators.

Not a binary (the leading underscore says so). A binary calls the definers it needs at import time
and adopts this module's key flags, so `--help` lists them; like google-research/federated's
`define_optimizer_flags`. Nothing here imports TensorFlow, so `--help` stays fast. Definers are
idempotent: a second binary imported into the same process reuses the flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import flags

from data.datasets import DATASETS, NEEDS_DATA_DIR
from data.image_folders import COLOR_MODES
from models.builders import MODELS
from models.specs import INITS, spec_problem
from privacy.config import ACCOUNTANTS
from privacy.randomness import SEED_MAX
from training.centralized_config import FLOAT32_MAX

FLAGS = flags.FLAGS


def _define(definer, name: str, default: Any, help_text: str, **kwargs) -> flags.FlagHolder:
    """DEFINE_* once per process; later calls get the existing flag, with this call's default."""
    if name in FLAGS:
        FLAGS.set_default(name, default)
        return flags.FlagHolder(FLAGS, FLAGS[name])
    return definer(name=name, default=default, help=help_text, **kwargs)


def _validator(names: list[str], check, message: str) -> None:
    key = (tuple(names), message)
    if key in _VALIDATORS:
        return
    _VALIDATORS.add(key)
    if len(names) == 1:
        flags.register_validator(names[0], check, message)
    else:
        flags.register_multi_flags_validator(names, check, message)


_VALIDATORS: set[tuple] = set()


def positive(name: str, allow_none: bool = True) -> None:
    """`--name` must be > 0 (or unset)."""
    _validator(
        [name], lambda v: (allow_none and v is None) or (v is not None and v > 0), f"--{name} must be > 0"
    )


def at_most(name: str, bound: int) -> None:
    """`--name` must be <= bound (or unset): counts whose loops and rows must fit in memory."""
    _validator([name], lambda v: v is None or v <= bound, f"--{name} must be <= {bound:,} (a sane bound)")


def _finite32(value: float | None) -> bool:
    return value is None or abs(value) <= FLOAT32_MAX  # False for nan and inf too


def finite_floats() -> None:
    """Every float flag defined so far must be finite in float32: TensorFlow turns 1e300 into inf
    (a binary calls this after defining its own flags)."""
    for name in list(FLAGS):
        if FLAGS[name].flag_type() == "float" and name == FLAGS[name].name:  # not its short name
            _validator(
                [name],
                _finite32,
                f"--{name} must be a finite number of magnitude <= {FLOAT32_MAX:.4g} (TensorFlow computes in "
                "float32)",
            )


# ---------------------------------------------------------------- data and model


@dataclasses.dataclass(frozen=True)
class DatasetFlags:
    dataset: flags.FlagHolder
    data_dir: flags.FlagHolder
    download: flags.FlagHolder | None = None
    label_column: flags.FlagHolder | None = None
    image_size: flags.FlagHolder | None = None
    color_mode: flags.FlagHolder | None = None
    schema_file: flags.FlagHolder | None = None  # the table flags (with `files`)
    preprocessing: flags.FlagHolder | None = None
    preprocessing_share: flags.FlagHolder | None = None

    def values(self) -> dict[str, Any]:
        """{config field: value} of every flag defined here (the configs name their fields alike)."""
        return {f.name: h.value for f in dataclasses.fields(self) if (h := getattr(self, f.name)) is not None}


def define_dataset_flags(
    datasets: tuple[str, ...] = DATASETS,
    help_text: str = "Dataset (digits is embedded, no download).",
    files: bool = True,
    tables: bool = True,
) -> DatasetFlags:
    """--dataset, --data_dir, --image_size, --color_mode and (with `files`) --download and --label_column.

    The image flags are defined for every binary that loads a dataset: an audit must rebuild the
    exact arrays (size, channels) the model was trained on."""
    holders = DatasetFlags(
        _define(flags.DEFINE_enum, "dataset", "digits", help_text, enum_values=list(datasets)),
        _define(
            flags.DEFINE_string,
            "data_dir",
            None,
            "Cache folder (MNIST/Fashion-MNIST/CIFAR-10/EMNIST), CSV file/folder, or image folder.",
        ),
        _define(flags.DEFINE_bool, "download", False, "Download a missing public dataset into --data_dir.")
        if files
        else None,
        _define(flags.DEFINE_string, "label_column", "label", "CSV label column.") if files else None,
        image_size=_define(
            flags.DEFINE_integer,
            "image_size",
            None,
            "--dataset=image_folder: resize every image to NxN. Default: the images' own size, if they "
            "all share it.",
        ),
        color_mode=_define(
            flags.DEFINE_enum,
            "color_mode",
            None,
            "--dataset=image_folder: channels. Default: grayscale if every image is single-channel.",
            enum_values=list(COLOR_MODES),
        ),
        **(_table_flags() if files and tables else {}),
    )
    positive("image_size")
    _validator(
        ["dataset", "data_dir"],
        lambda f: f["dataset"] not in NEEDS_DATA_DIR or bool(f["data_dir"]),
        "this --dataset needs --data_dir",
    )
    return holders


def _table_flags() -> dict[str, flags.FlagHolder]:
    """--schema, --preprocessing, --preprocessing_share: how a table's columns become features."""
    return {
        "schema_file": _define(
            flags.DEFINE_string, "schema", None,
            "--dataset=csv: a schema JSON (a run's schema.json format) declaring column kinds, numeric "
            "bounds, categories and the label's classes. Default: inferred from the file.",
        ),
        "preprocessing": _define(
            flags.DEFINE_enum, "preprocessing", "private",
            "--dataset=csv: private = bounds, imputation values and categories are DP statistics inside the "
            "epsilon; schema = from --schema only (no privacy cost); non_private = plain statistics (NOT "
            "covered: privacy.json says so). Non-DP runs use plain statistics unless schema is asked.",
            enum_values=["private", "schema", "non_private"],
        ),
        "preprocessing_share": _define(
            flags.DEFINE_float, "preprocessing_share", None,
            "--preprocessing=private: the share of the target epsilon the statistics alone would cost. "
            "Default: what puts each count's noise at a tenth of the rows (users), from 0.05 to 0.5.",
        ),
    }  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelFlags:
    model: flags.FlagHolder
    init: flags.FlagHolder

    def values(self) -> dict[str, Any]:
        """The config fields they set (every config names them model and model_init)."""
        return {"model": self.model.value, "model_init": self.init.value}


def _model_form(spec: str) -> bool:
    problem = spec_problem(spec, allow_objects=False)
    if problem:
        raise flags.ValidationError(f"--model: {problem}")
    return True


def define_model_flags(help_text: str = "Model to train.") -> ModelFlags:
    """--model (a built-in name, PATH.py:FUNCTION or PATH.keras; models/specs.py) and --init.

    The form is checked at parse time; the file itself when the run is validated (before any write)."""
    holders = ModelFlags(
        _define(
            flags.DEFINE_string,
            "model",
            "mlp",
            f"{help_text} A built-in ({', '.join(MODELS)}), or your own: PATH.py:FUNCTION, where "
            "FUNCTION(input_shape, num_classes) returns an uncompiled tf.keras.Model that outputs logits "
            "[None, num_classes] ([None, 1] for regression), or PATH.keras, a saved Keras model.",
        ),
        _define(
            flags.DEFINE_enum,
            "init",
            "fresh",
            "Starting weights: fresh (initialized from --seed) or pretrained (the saved weights of "
            "--model=PATH.keras, e.g. pretrained on public data: fine-tuning).",
            enum_values=list(INITS),
        ),
    )
    _validator(["model"], _model_form, "--model: not a model spec")
    _validator(
        ["model", "init"],
        lambda f: f["init"] != "pretrained" or f["model"].endswith(".keras"),
        "--init=pretrained starts from the saved weights of --model=PATH.keras; a built-in or a .py "
        "function has none (use --init=fresh)",
    )
    return holders


def define_seed_flag(help_text: str) -> flags.FlagHolder:
    """--seed, in the range every consumer accepts (privacy.randomness.SEED_MAX: Keras seeds no more)."""
    holder = _define(flags.DEFINE_integer, "seed", 0, help_text)
    _validator(
        ["seed"], lambda v: v is None or 0 <= v <= SEED_MAX, f"--seed must be in [0, {SEED_MAX}] (2**32 - 1)"
    )
    return holder


def define_secure_noise_flag() -> flags.FlagHolder:
    return _define(
        flags.DEFINE_bool,
        "secure_noise",
        False,
        "Draw the DP noise and the sampling from OS entropy and record nothing of it (for a release). "
        "Default: from --seed, reproducible; the guarantee then holds only while the seed stays secret.",
    )


# ---------------------------------------------------------------- privacy budget


@dataclasses.dataclass(frozen=True)
class BudgetFlags:
    noise_multiplier: flags.FlagHolder
    target_epsilon: flags.FlagHolder
    delta: flags.FlagHolder
    accountant: flags.FlagHolder


def define_budget_flags(
    noise_help: str = "Noise stddev / clip. With --target_epsilon: a budget to stop before.",
    target_help: str = "Calibrate the noise to this epsilon (or, with --noise_multiplier, stop before it).",
    delta_help: str = "Target delta (must be < 1/N, N = number of privacy units).",
) -> BudgetFlags:
    holders = BudgetFlags(
        _define(flags.DEFINE_float, "noise_multiplier", None, noise_help),
        _define(flags.DEFINE_float, "target_epsilon", None, target_help),
        *define_delta_and_accountant(delta_help),
    )
    _validator(["noise_multiplier"], lambda v: v is None or v >= 0, "--noise_multiplier must be >= 0")
    positive("target_epsilon")
    return holders


def define_delta_and_accountant(
    delta_help: str = "Target delta (must be < 1/N, N = number of privacy units).",
    accountant_help: str = "Privacy accountant.",
) -> tuple[flags.FlagHolder, flags.FlagHolder]:
    delta = _define(flags.DEFINE_float, "delta", 1e-5, delta_help)
    _validator(["delta"], lambda v: 0 < v < 1, "--delta must be in (0, 1)")
    return delta, _define(
        flags.DEFINE_enum, "accountant", "rdp", accountant_help, enum_values=list(ACCOUNTANTS)
    )


# ---------------------------------------------------------------- canary audit


@dataclasses.dataclass(frozen=True)
class AuditFlags:
    canaries: flags.FlagHolder
    example_canaries: flags.FlagHolder | None = None
    canary_clients: flags.FlagHolder | None = None


def define_audit_flags(
    canaries: int = 0, example_canaries: int | None = None, canary_clients: int | None = None
) -> AuditFlags:
    """--audit_canaries (white box) and the black-box kinds this binary offers (a default None: not
    offered). Every canary is inserted with probability 1/2 and counts as a privacy unit."""
    holders = AuditFlags(
        _define(
            flags.DEFINE_integer,
            "audit_canaries",
            canaries,
            "White-box audit: this many canaries whose gradient (update) is a fixed Dirac direction, "
            "scored at every step (round); audit.json gets the one-run epsilon lower bound. 0: off.",
        ),
        None
        if example_canaries is None
        else _define(
            flags.DEFINE_integer,
            "audit_example_canaries",
            example_canaries,
            "Black-box audit: this many out-of-distribution canary examples (random labels), scored by "
            "the final model's loss. 0: off.",
        ),
        None
        if canary_clients is None
        else _define(
            flags.DEFINE_integer,
            "audit_canary_clients",
            canary_clients,
            "Black-box audit: this many canary clients holding out-of-distribution examples, scored by "
            "the final model's loss. 0: off.",
        ),
    )
    for name in ("audit_canaries", "audit_example_canaries", "audit_canary_clients"):
        if name in FLAGS:
            _validator([name], lambda v: v >= 0, f"--{name} must be >= 0")
    return holders


# ---------------------------------------------------------------- outputs


@dataclasses.dataclass(frozen=True)
class OutputFlags:
    root_output_dir: flags.FlagHolder
    experiment_name: flags.FlagHolder


def define_output_flags(default_experiment: str) -> OutputFlags:
    """--root_output_dir and --experiment_name. The run configs check both (one validator,
    training.centralized_config.check_output), not a flag validator: absl's message would echo the
    value, and a newline in it would split the one-line error."""
    return OutputFlags(
        _define(flags.DEFINE_string, "root_output_dir", "runs", "Root folder of all runs."),
        _define(
            flags.DEFINE_string,
            "experiment_name",
            default_experiment,
            "Run folder name under --root_output_dir.",
        ),
    )


# ---------------------------------------------------------------- data-level noise (local DP)


@dataclasses.dataclass(frozen=True)
class LocalDpFlags:
    label_epsilon: flags.FlagHolder
    feature_epsilon: flags.FlagHolder
    feature_clip: flags.FlagHolder
    feature_mechanism: flags.FlagHolder
    feature_delta: flags.FlagHolder

    def config(self):
        """LocalDpConfig from the flags, or None when no local DP is asked for."""
        from privacy.local_dp import LocalDpConfig

        if self.label_epsilon.value is None and self.feature_epsilon.value is None:
            return None
        return LocalDpConfig(
            label_epsilon=self.label_epsilon.value,
            feature_epsilon=self.feature_epsilon.value,
            feature_clip=self.feature_clip.value,
            feature_mechanism=self.feature_mechanism.value,
            feature_delta=self.feature_delta.value,
        )


def define_local_dp_flags() -> LocalDpFlags:
    holders = LocalDpFlags(
        _define(
            flags.DEFINE_float,
            "local_dp_label_epsilon",
            None,
            "Randomized response on each training label with this local epsilon.",
        ),
        _define(
            flags.DEFINE_float,
            "local_dp_feature_epsilon",
            None,
            "Noise on each clipped training feature vector with this local epsilon.",
        ),
        _define(
            flags.DEFINE_float,
            "local_dp_feature_clip",
            None,
            "Norm bound applied to each feature vector before feature noise.",
        ),
        _define(
            flags.DEFINE_enum,
            "local_dp_feature_mechanism",
            "laplace",
            "Feature noise: Laplace (L1 clip), Gaussian (L2).",
            enum_values=["laplace", "gaussian"],
        ),
        _define(
            flags.DEFINE_float, "local_dp_feature_delta", 1e-5, "Delta of the Gaussian feature mechanism."
        ),
    )
    for name in ("local_dp_label_epsilon", "local_dp_feature_epsilon", "local_dp_feature_clip"):
        positive(name)
    _validator(
        ["local_dp_feature_epsilon", "local_dp_feature_clip"],
        lambda f: (f["local_dp_feature_epsilon"] is None) == (f["local_dp_feature_clip"] is None),
        "--local_dp_feature_epsilon and --local_dp_feature_clip go together (noise needs a norm bound)",
    )
    return holders


# ---------------------------------------------------------------- evaluation


def define_metric_flag(
    help_text: str = "Headline test metric of the results (a training.metrics name), or auto.",
) -> flags.FlagHolder:
    """--metric: auto or a test metric name (test_accuracy, test_auc, test_recall_3, ...).

    auto is `training.metrics.default_metric` with the positive fraction the binary knows from a DP
    release or public knowledge, never from the raw labels (none known: test_accuracy)."""
    from training.metrics import METRICS, is_metric

    names = ", ".join(METRICS)
    holder = _define(flags.DEFINE_string, "metric", "auto", f"{help_text} One of: auto, {names}.")
    _validator(["metric"], lambda v: v == "auto" or is_metric(v), f"--metric must be auto or one of {names}")
    return holder


# ---------------------------------------------------------------- list flags


def parse_list(values: list[str] | None, kind: type) -> list | None:
    """[kind(v) for v in values], or None when a value does not parse."""
    try:
        return [kind(v) for v in values or []]
    except ValueError:
        return None


def define_list(
    name: str,
    default: list,
    help_text: str,
    kind: type = float,
    check=lambda x: x > 0,
    what: str = "numbers > 0",
) -> flags.FlagHolder:
    """A comma-separated list of distinct values of `kind`, each passing `check` (validated at parse time)."""
    holder = _define(
        flags.DEFINE_list, name, [f"{v:g}" if kind is float else str(v) for v in default], help_text
    )

    def valid(values: list[str]) -> bool:
        parsed = parse_list(values, kind)
        finite = kind is not float or all(_finite32(x) for x in parsed or [])
        return bool(parsed) and finite and all(check(x) for x in parsed) and len(set(parsed)) == len(parsed)

    finite = f" (finite, magnitude <= {FLOAT32_MAX:.4g})" if kind is float else ""
    _validator([name], valid, f"--{name} must be a non-empty comma-separated list of distinct {what}{finite}")
    return holder


def key_flag_values(module_name: str) -> dict[str, Any]:
    """The values of a binary's key flags (its own and the adopted shared ones): flags.txt."""
    return {f.name: f.value for f in FLAGS.get_key_flags_for_module(module_name)}
