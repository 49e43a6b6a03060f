"""The frozen, validated settings of a centralized run (what flags or the Python API give it).

`training/centralized.py` turns one into a plan and runs it; keeping the settings apart keeps each
module one concern (and under the layout's size limit).
"""

from __future__ import annotations

import dataclasses

from models.specs import check_init
from privacy.config import ACCOUNTANTS, DP_SGD_ENGINES, EXAMPLE_SAMPLINGS
from privacy.local_dp import LocalDpConfig

LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """Settings that cannot run (as opposed to a bug): the message says what to change."""


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
