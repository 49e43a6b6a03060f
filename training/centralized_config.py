"""The frozen, validated settings of a centralized run (what flags or the Python API give it), and
the checks every run config shares (federated, search, comparison): the run folder's name, the float
and count ranges TensorFlow and the loops accept.

`training/centralized.py` turns one into a plan and runs it; keeping the settings apart keeps each
module one concern (and under the layout's size limit).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from models.specs import check_init
from privacy.config import ACCOUNTANTS, DP_SGD_ENGINES, EXAMPLE_SAMPLINGS
from privacy.local_dp import LocalDpConfig
from privacy.randomness import check_seed
from training.run_folder import check_experiment_name, check_root_output_dir

LR_SCHEDULES = ("constant", "cosine")
# Sane bounds: far beyond any useful run, and small enough that the per-epoch / per-round ledgers,
# progress and metrics rows of a run stay in memory (a DP ledger is one accountant query per entry).
MAX_EPOCHS = 1_000_000
MAX_ROUNDS = 10_000_000
FLOAT32_MAX = 3.4028234663852886e38  # TensorFlow computes in float32: a larger value becomes inf


class ConfigError(ValueError):
    """Settings that cannot run (as opposed to a bug): the message says what to change."""


class NonPrivateLedger(Sequence[float]):
    """The ledger (epsilon after each epoch or round) of a run without DP: inf after every one of
    `length`, without a list of `length` entries allocated up front."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):  # noqa: ANN001 - int or slice, as a list's
        if isinstance(index, slice):
            return [math.inf] * len(range(*index.indices(self.length)))
        if not -self.length <= index < self.length:
            raise IndexError("ledger index out of range")
        return math.inf


def check_output(root_output_dir: str, experiment_name: str) -> None:
    """Both output settings of a run (every config calls this; the rules are training.run_folder's)."""
    try:
        check_root_output_dir(root_output_dir)
        check_experiment_name(experiment_name, root_output_dir)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_float32(**values: object) -> None:
    """ConfigError for a value that is not a finite float32 (e.g. 1e300 or nan; None is unset)."""
    for name, value in values.items():
        if value is None or isinstance(value, bool):
            continue
        try:
            ok = math.isfinite(float(value)) and abs(float(value)) <= FLOAT32_MAX
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"--{name} must be a finite number of magnitude <= {FLOAT32_MAX:.4g} (TensorFlow computes "
                f"in float32), got {value!r}"
            )


def check_count(name: str, value: int | None, bound: int) -> None:
    """ConfigError for a count (epochs, rounds) beyond its sane bound."""
    if value is not None and value > bound:
        raise ConfigError(f"--{name} must be <= {bound:,} (a sane bound), got {value:,}")


def check_search_space(space: object) -> None:
    """A search space's values (tuples per field, training/search_space.py) are finite float32, its
    epoch and round counts within their bounds."""
    if not dataclasses.is_dataclass(space) or isinstance(space, type):
        return  # not a space: the search config refuses it
    for name, values in dataclasses.asdict(space).items():
        try:
            for value in values:
                check_float32(**{name: value})
        except ValueError:
            raise ConfigError(
                f"every {name} of the search space must be a finite number of magnitude <= "
                f"{FLOAT32_MAX:.4g} (float32), got {list(values)}"
            ) from None
    check_count("epoch_counts", max(getattr(space, "epochs", ()), default=None), MAX_EPOCHS)
    check_count("round_counts", max(getattr(space, "rounds", ()), default=None), MAX_ROUNDS)


def check_run_settings(seed: object, root_output_dir: str, experiment_name: str, **floats: object) -> None:
    """The checks every run config shares: output folder, seed range, finite float32 settings."""
    check_output(root_output_dir, experiment_name)
    try:
        check_seed(seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    check_float32(**floats)


@dataclasses.dataclass(frozen=True)
class CentralizedConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    label_column: str = "label"
    schema_file: str | None = None  # tables: the declared schema (data/schema.py's JSON); None: inferred
    preprocessing: str = "private"  # tables: private (DP statistics) | schema (declared only) | non_private
    preprocessing_share: float | None = None  # tables, private: the statistics' share of the target
    # epsilon; None: training.table_preprocessing.auto_share
    image_size: int | None = None  # image_folder: resize to NxN; None: the images' own size
    color_mode: str | None = None  # image_folder: "grayscale" or "rgb"; None: inferred from the images
    model: str = "mlp"  # a model spec (models/specs.py): built-in name, PATH.py:FUNCTION, PATH.keras
    model_init: str = "fresh"  # "fresh": initialized from the seed; "pretrained": a .keras's saved weights
    width: int | None = None  # MLP hidden units; None: models/builders.py's default
    # None: from training.recipes, by model and input shape (resolved in prepare())
    epochs: int | None = None
    batch_size: int | None = None
    sampling_rate: float | None = None  # instead of batch_size: batch_size = round(q * N)
    learning_rate: float | None = None
    momentum: float | None = None
    lr_schedule: str | None = None
    dp: bool = False
    l2_norm_clip: float | None = None
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    sampling: str = "poisson"
    engine: str = "auto"
    seed: int = 0
    secure_noise: bool = False  # noise and sampling from OS entropy, not from `seed`
    # who this run is among runs released together (the comparison's arm, the search's trial): its
    # noise and sampling seed is derived from (seed, run_id), so no two such runs share a stream
    run_id: str = ""
    audit_canaries: int = 0  # gradient (white-box) canaries, half inserted (training/canary_audit.py)
    audit_example_canaries: int = 0  # out-of-distribution example (black-box) canaries, half inserted
    root_output_dir: str = "runs"
    experiment_name: str = "centralized"
    local_dp: LocalDpConfig | None = None

    def __post_init__(self) -> None:
        floats = ("sampling_rate", "learning_rate", "momentum", "l2_norm_clip", "noise_multiplier",
                  "target_epsilon", "delta", "preprocessing_share")  # fmt: skip
        check_run_settings(
            self.seed, self.root_output_dir, self.experiment_name, **{f: getattr(self, f) for f in floats}
        )
        check_count("epochs", self.epochs, MAX_EPOCHS)
        checks = [
            (self.epochs is None or self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (
                self.batch_size is None or self.batch_size > 0,
                f"batch_size must be > 0, got {self.batch_size}",
            ),
            (
                self.sampling_rate is None or 0 < self.sampling_rate <= 1,
                f"sampling_rate must be in (0, 1], got {self.sampling_rate}",
            ),
            (
                self.learning_rate is None or self.learning_rate > 0,
                f"learning_rate must be > 0, got {self.learning_rate}",
            ),
            (
                self.momentum is None or 0 <= self.momentum < 1,
                f"momentum must be in [0, 1), got {self.momentum}",
            ),
            (
                self.lr_schedule is None or self.lr_schedule in LR_SCHEDULES,
                f"lr_schedule must be one of {LR_SCHEDULES}",
            ),
            (
                self.l2_norm_clip is None or self.l2_norm_clip > 0,
                f"l2_norm_clip must be > 0, got {self.l2_norm_clip}",
            ),
            (0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}"),
            (
                self.preprocessing in ("private", "schema", "non_private"),
                "preprocessing must be one of private, schema, non_private",
            ),
            (
                self.preprocessing_share is None or 0 < self.preprocessing_share < 1,
                "preprocessing_share must be in (0, 1)",
            ),
            (self.accountant in ACCOUNTANTS, f"accountant must be one of {ACCOUNTANTS}"),
            (self.sampling in EXAMPLE_SAMPLINGS, f"sampling must be one of {EXAMPLE_SAMPLINGS}"),
            (self.engine in DP_SGD_ENGINES, f"engine must be one of {DP_SGD_ENGINES}"),
            (self.noise_multiplier is None or self.noise_multiplier >= 0, "noise_multiplier must be >= 0"),
            (self.target_epsilon is None or self.target_epsilon > 0, "target_epsilon must be > 0"),
            (self.audit_canaries >= 0, f"audit_canaries must be >= 0, got {self.audit_canaries}"),
            (
                self.audit_example_canaries >= 0,
                f"audit_example_canaries must be >= 0, got {self.audit_example_canaries}",
            ),
        ]
        if self.dp:
            checks.append(
                (
                    self.noise_multiplier is not None or self.target_epsilon is not None,
                    "--dp needs --noise_multiplier or --target_epsilon",
                )
            )
        else:  # a forgotten --dp must not leave the user believing in a guarantee
            checks.append(
                (
                    self.noise_multiplier is None and self.target_epsilon is None,
                    "--noise_multiplier/--target_epsilon only apply with --dp: without --dp the run is not "
                    "private; add --dp, or drop them for a non-private baseline",
                )
            )
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        try:
            check_init(self.model, self.model_init)
        except ValueError as e:
            raise ConfigError(str(e)) from None
