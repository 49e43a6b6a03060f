"""Run state on disk for resumable federated runs: the settings fingerprint and earlier metrics.

A rerun over existing checkpoints resumes only when it would train the same thing; anything else
is refused before a file is touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from privacy.config import DpFedAvgConfig
from training.federated.experiment import FederatedConfig

# Fields that may change between a run and its resumption without changing what is trained.
_RESUMABLE_CHANGES = (
    "eval_every", "checkpoint_every", "workers", "root_output_dir", "data_dir",
    "client_loop", "client_data_optimizations",  # how TFF runs a client, not what it computes
)  # fmt: skip


def fingerprint(config: FederatedConfig, dp: DpFedAvgConfig) -> dict[str, Any]:
    d = {k: v for k, v in dataclasses.asdict(config).items() if k not in _RESUMABLE_CHANGES}
    d["resolved_noise_multiplier"] = dp.noise_multiplier
    d["resolved_num_clients"] = dp.num_clients
    if d.get("model_init") == "fresh":  # the default: left out, as in checkpoints made before it existed
        d.pop("model_init")
    return json.loads(json.dumps(d, default=str))


def checkpoint_dir(config: FederatedConfig) -> str:
    return os.path.join(config.root_output_dir, config.experiment_name, "checkpoints")


def has_checkpoint(ckpt_dir: str) -> bool:
    return os.path.isdir(ckpt_dir) and any(n.startswith("program_state_") for n in os.listdir(ckpt_dir))


def check_resumable(config: FederatedConfig, dp: DpFedAvgConfig) -> None:
    """ValueError if the run folder holds checkpoints, or a privacy.json (a run that diverged before
    its first checkpoint), of a run with other settings (nothing written)."""
    from training.run_folder import RunFolder

    folder = RunFolder(config.root_output_dir, config.experiment_name)
    folder.watch(RunFolder.PRIVACY)  # a run starting meanwhile is refused when the folder is locked
    if has_checkpoint(checkpoint_dir(config)) or os.path.exists(folder.file(RunFolder.PRIVACY)):
        folder.check_same_run(fingerprint(config, dp), os.path.join("checkpoints", RunFolder.RUN_CONFIG))
    else:
        folder.watch(os.path.join("checkpoints", RunFolder.RUN_CONFIG))
