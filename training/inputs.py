"""The data a run trains on: the dataset, with data-level (local DP) noise applied when asked.

One home for "load, then perturb each record", shared by the centralized and federated runs; the
noise itself is `privacy.local_dp`.
"""

from __future__ import annotations

import dataclasses

from data.datasets import Dataset, load_dataset
from privacy.local_dp import LocalDpConfig, apply_local_dp


def with_local_dp(
    dataset: Dataset, local_dp: LocalDpConfig | None, seed: int | None
) -> tuple[Dataset, dict | None]:
    """The dataset with each training record perturbed (test set untouched), and the report.

    `seed` None draws the local-DP noise from OS entropy (--secure_noise)."""
    if local_dp is None or not local_dp.enabled:
        return dataset, None
    if getattr(dataset, "table", None) is not None:
        raise ValueError("local DP (--local_dp_*) applies to numeric features, not to a raw table's columns")
    x, y, report = apply_local_dp(dataset.x_train, dataset.y_train, dataset.num_classes, local_dp, seed)
    return dataclasses.replace(dataset, x_train=x, y_train=y), report


def load_training_data(
    name: str,
    data_dir: str | None,
    *,
    seed: int,
    download: bool = False,
    label_column: str = "label",
    client_id_column: str | None = None,
    image_size: int | None = None,
    color_mode: str | None = None,
    schema_file: str | None = None,
    local_dp: LocalDpConfig | None = None,
    noise_seed: int | None = 0,
) -> tuple[Dataset, dict | None]:
    """The dataset (split by `seed`) with local DP applied (noise from `noise_seed`; None: OS entropy)."""
    dataset = load_dataset(
        name,
        data_dir,
        seed=seed,
        download=download,
        label_column=label_column,
        client_id_column=client_id_column,
        image_size=image_size,
        color_mode=color_mode,
        **({"schema_file": schema_file} if schema_file else {}),
    )
    return with_local_dp(dataset, local_dp, noise_seed)
