"""The Python API: what the binaries do, callable from a notebook with your model and your data.

Each function builds the same frozen config a binary builds from its flags and runs the same library
call (`training.centralized.run`, `training.federated.run`, `training.comparison.run_comparison`,
`training.tuning.run`, `privacy.report.budget_report`), so the same settings and seed give the same
metrics and the same privacy report as the command line. Bad settings raise `ConfigError` with the
one-line message the binaries print.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from ppml.user_data import as_dataset
from training.run_folder import FolderInUse, release_folders


class ConfigError(ValueError):
    """Settings, data or a model that cannot run; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class DP:
    """The DP settings of a run: a target epsilon (the noise is calibrated to it) or a noise multiplier.

    `clip` is the L2 bound on one example's gradient (centralized) or one user's update (federated);
    None takes the recipe's. `secure_noise` draws noise and sampling from OS entropy (for a release).
    """

    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float = 1e-5
    clip: float | None = None
    accountant: str = "rdp"
    secure_noise: bool = False

    def __post_init__(self) -> None:
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ConfigError("DP needs exactly one of target_epsilon and noise_multiplier")


@dataclasses.dataclass
class Result:
    """A finished run: the trained model, its metrics per epoch/round and its privacy.json as a dict."""

    model: Any  # tf.keras.Model (the released SavedModel, loaded), or None (a search that released none)
    metrics: list[dict[str, Any]]
    privacy: dict[str, Any]
    test_accuracy: float | None
    output_dir: str | None  # None when no output_dir was asked for (the run folder was temporary)
    audit: dict[str, Any] | None = None


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """ValueError/OSError raised while validating, and a run folder another process is writing, are
    the user's: one-line ConfigError. The call's run-folder locks are given back when it returns."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, OSError, FolderInUse) as e:
        raise ConfigError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    finally:
        release_folders()


def _model_spec(model: Any, settings: dict[str, Any]) -> str:
    """A built-in name or file spec as it is; a Keras model or a model function is registered
    (with its weights when `model_init="pretrained"`)."""
    if isinstance(model, str):
        return model
    from models.specs import register_model

    return register_model(model, init=settings.get("model_init", "fresh"))


def _dp_settings(dp: DP, clip_field: str) -> dict[str, Any]:
    """The config fields a DP object sets (`clip_field`: the pipeline's name for the clip)."""
    values = dict(target_epsilon=dp.target_epsilon, noise_multiplier=dp.noise_multiplier, delta=dp.delta,
                  accountant=dp.accountant, secure_noise=dp.secure_noise)  # fmt: skip
    if dp.clip is not None:
        values[clip_field] = dp.clip
    return values


def _config(cls, settings: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ConfigError(f"unknown settings {unknown}; {cls.__name__} takes {sorted(names)}")
    return cls(**settings)


@contextlib.contextmanager
def _run_folder(output_dir: str | None) -> Iterator[str]:
    """The root folder of the run: the one asked for, or a temporary one removed afterwards."""
    if output_dir is not None:
        yield output_dir
        return
    root = tempfile.mkdtemp(prefix="ppml-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _load_model(run_dir: str):
    import tensorflow as tf

    path = os.path.join(run_dir, "model")
    from models.table_encoding import register

    register()  # a table model's preprocessing layer
    return tf.keras.models.load_model(path) if os.path.isdir(path) else None


def _train(config_cls, prepare, launch, model, data, dp: DP | None, dp_values: dict[str, Any],
           clip_field: str, output_dir: str | None, experiment_name: str, label: str, seed: int,
           verbose: bool, settings: dict[str, Any]) -> Result:  # fmt: skip
    """The shared body of the two training functions: config -> prepare -> launch -> Result.

    `dp_values`: what a DP run sets besides the DP object's fields (centralized: dp=True; federated:
    its aggregator); `clip_field`: the pipeline's name for the clip."""
    with _user_errors():
        name, dataset = as_dataset(data, label=label, seed=seed)
        with _run_folder(output_dir) as root:
            values = dict(dataset=name, model=_model_spec(model, settings), label_column=label, seed=seed,
                          root_output_dir=root, experiment_name=experiment_name, **settings)  # fmt: skip
            if dp is not None:
                values.update(dp_values, **_dp_settings(dp, clip_field))
            res = launch(prepare(_config(config_cls, values), dataset), verbose=verbose)
            return Result(_load_model(res.output_dir), res.history, res.privacy, res.test_accuracy,
                          res.output_dir if output_dir else None, res.audit)  # fmt: skip


def train_centralized(
    model: Any = "mlp",
    data: Any = "digits",
    dp: DP | None = None,
    *,
    output_dir: str | None = None,
    experiment_name: str = "centralized",
    label: str = "label",
    seed: int = 0,
    verbose: bool = False,
    **settings: Any,
) -> Result:
    """Centralized training (DP-SGD with `dp`), as `python -m pipelines.train_centralized` does.

    `model`: a built-in name, "file.py:function", "file.keras", a Keras model or a function
    (input_shape, num_classes) -> model. `data`: a dataset name, arrays, a DataFrame (with a `label`
    column) or a tf.data.Dataset. `settings`: any other CentralizedConfig field (epochs, batch_size,
    learning_rate, engine, audit_canaries, model_init, ...).
    """
    from training import centralized

    return _train(centralized.CentralizedConfig, centralized.prepare, centralized.launch, model, data, dp,
                  {"dp": True}, "l2_norm_clip", output_dir, experiment_name, label, seed, verbose,
                  settings)  # fmt: skip


def train_federated(
    model: Any = "mlp",
    data: Any = "digits",
    dp: DP | None = None,
    *,
    output_dir: str | None = None,
    experiment_name: str = "federated",
    label: str = "label",
    seed: int = 0,
    verbose: bool = False,
    **settings: Any,
) -> Result:
    """Federated averaging on TFF (DP-FedAvg with `dp`, user level), as `pipelines.train_federated`.

    `settings`: any other FederatedConfig field (num_clients, clients_per_round, rounds, partition,
    client_id_column, aggregator (default with dp: fixed), client_epochs, ...).
    """
    from training import federated

    # DP-FedAvg needs a DP aggregator: fixed unless the settings name one
    defaults = {} if dp is None else {"aggregator": settings.pop("aggregator", "fixed")}
    return _train(federated.FederatedConfig, federated.plan_run, federated.launch, model, data, dp, defaults,
                  "clip_norm", output_dir, experiment_name, label, seed, verbose, settings)  # fmt: skip


@dataclasses.dataclass
class Comparison:
    """The comparison's table rows (one per arm), and where its table, plot and TensorBoard are."""

    rows: list[dict[str, Any]]
    output_dir: str
    plot: str
    table: str


def compare(
    model: Any = "mlp",
    data: Any = "digits",
    *,
    target_epsilons: Sequence[float] = (1.0, 3.0, 8.0),
    arms: Sequence[str] | None = None,
    output_dir: str = "runs",
    experiment_name: str = "comparison",
    label: str = "label",
    seed: int = 0,
    verbose: bool = False,
    **settings: Any,
) -> Comparison:
    """Centralized vs federated, DP vs non-DP on one split, as `pipelines.compare` (the demo) does.

    The results stay in `output_dir` (the plot and table are what the comparison is for).
    """
    from training.comparison import ComparisonConfig, run_comparison

    with _user_errors():
        name, dataset = as_dataset(data, label=label, seed=seed)
        values = dict(dataset=name, model=_model_spec(model, settings),
                      target_epsilons=tuple(target_epsilons), seeds=(seed,), root_output_dir=output_dir,
                      experiment_name=experiment_name, **settings)  # fmt: skip
        if arms is not None:
            values["arms"] = tuple(arms)
        config = _config(ComparisonConfig, values)
        result = run_comparison(config, dataset, log=print if verbose else (lambda line: None))
    return Comparison(result.rows, result.output_dir, os.path.join(result.output_dir, "privacy_utility.png"),
                      os.path.join(result.output_dir, "results.md"))  # fmt: skip


def tune(
    model: Any = "mlp",
    data: Any = "digits",
    *,
    target_epsilon: float,
    output_dir: str | None = None,
    experiment_name: str = "tune",
    label: str = "label",
    seed: int = 0,
    verbose: bool = False,
    **settings: Any,
) -> Result:
    """Private hyperparameter search whose epsilon covers the search, as `pipelines.tune` does.

    `settings`: any other TuningConfig field (runs, space, pipeline, delta, score_noise, ...).
    """
    from privacy.private_selection import RunsDistribution
    from training import tuning

    with _user_errors():
        name, dataset = as_dataset(data, label=label, seed=seed)
        with _run_folder(output_dir) as root:
            values = dict(target_epsilon=target_epsilon, runs=RunsDistribution(*tuning.DEFAULT_RUNS),
                          dataset=name, model=_model_spec(model, settings), label_column=label, seed=seed,
                          root_output_dir=root, experiment_name=experiment_name)  # fmt: skip
            values.update(settings)
            plan = tuning.prepare(_config(tuning.TuningConfig, values), dataset)
            res = tuning.launch(plan, verbose=verbose)
            selected = res.selected or {}
            return Result(_load_model(res.output_dir), [], res.privacy, selected.get("test_accuracy"),
                          res.output_dir if output_dir else None)  # fmt: skip


def budget(
    num_examples: int,
    batch_size: int,
    epochs: int,
    *,
    target_epsilon: float | None = None,
    noise_multiplier: float | None = None,
    delta: float = 1e-5,
    accountant: str = "rdp",
    sampling: str = "poisson",
) -> dict[str, Any]:
    """Epsilon of DP-SGD settings, or the noise for a target, without training (`pipelines.budget`)."""
    from privacy.report import budget_report

    with _user_errors():
        return budget_report(num_examples, batch_size, epochs, noise_multiplier, target_epsilon, delta,
                             accountant, sampling)  # fmt: skip
