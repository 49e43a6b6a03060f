"""Centralized training, non-private or DP-SGD, as a library call (no absl FLAGS here).

flags -> CentralizedConfig (frozen, validated) -> prepare() (every check, nothing written) ->
run() -> training loop -> RunFolder outputs. With ``dp=True`` one `privacy.config.DpSgdConfig`
drives the batch sampler, the noise (`privacy.noise`) and the accountant, so the reported epsilon
is the epsilon of the sampling that was really used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from data.datasets import Dataset
from privacy import accounting
from privacy.config import DpSgdConfig, check_delta
from privacy.preprocessing import Fitted
from privacy.report import privacy_report, randomness_report, reported_epsilon
from training import interrupts, table_preprocessing
from training.canary_audit import (
    AUDIT_FILE,
    BLACK_BOX_EXAMPLES,
    WHITE_BOX_STEPS,
    RunCanaries,
    WhiteBoxObserver,
    audit_record,
    audit_seed,
    insert_canaries,
    write_audit,
)
from training.centralized_config import LR_SCHEDULES, CentralizedConfig, ConfigError, NonPrivateLedger
from training.progress import Diverged, Progress, divergence
from training.run_folder import RunFolder, write_scalars

__all__ = ["LR_SCHEDULES", "CentralizedConfig", "CentralizedResult", "ConfigError", "Plan", "prepare", "run"]


@dataclasses.dataclass
class CentralizedResult:
    output_dir: str
    test_accuracy: float
    test_loss: float
    privacy: dict[str, Any]
    wall_time_s: float
    history: list[dict[str, Any]]  # what metrics.csv holds (a DP run: no timings, which nothing covers)
    audit: dict[str, Any] | None = None
    # every epoch's full row, its wall time included (a DP run's is in not_for_release/ only)
    unreleased_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the last evaluation's test metrics (training.metrics: test_loss, test_accuracy, test_auc, ...)
    test_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def dp_sgd_config(config: CentralizedConfig, num_examples: int, fitted=None) -> DpSgdConfig:
    """The DP-SGD config of this run, with the noise calibrated when a target is given (composed
    with a table's preprocessing statistics, `fitted`, when there are any)."""
    if config.batch_size > num_examples:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {num_examples} training examples")
    try:
        check_delta(config.delta, num_examples, "example")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    base = DpSgdConfig(
        num_examples=num_examples,
        batch_size=config.batch_size,
        epochs=config.epochs,
        noise_multiplier=config.noise_multiplier or 0.0,
        l2_norm_clip=config.l2_norm_clip,
        delta=config.delta,
        accountant=config.accountant,
        sampling=config.sampling,
        **(table_preprocessing.dp_fields(fitted) if fitted is not None else {}),
    )
    if config.noise_multiplier is None:
        try:
            return accounting.calibrate_dp_sgd(base, config.target_epsilon)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    return base


@dataclasses.dataclass
class Plan:
    """A validated run: everything `train` needs, decided before any file is written."""

    config: CentralizedConfig
    dataset: Dataset
    local_report: dict | None
    dp: DpSgdConfig | None
    ledger: Sequence[float]  # epsilon after each epoch (NonPrivateLedger: inf, without a list)
    epochs: int  # planned: the budget may stop the run before config.epochs
    engine: str
    folder: RunFolder
    fingerprint: dict[str, Any]
    canaries: RunCanaries | None = None
    engine_reason: str | None = None  # auto did not pick ghost: why (privacy.json, the binary's line)
    fitted: Fitted | None = None  # a table's preprocessing (privacy.preprocessing), or None

    @property
    def complete(self) -> bool:
        """The folder holds this very run, finished (privacy.json is written last)."""
        return os.path.exists(self.folder.file(RunFolder.PRIVACY)) and os.path.exists(
            self.folder.file(RunFolder.RUN_CONFIG)
        )


def with_recipe(
    config: CentralizedConfig, input_shape: tuple[int, ...], table_rows: int | None = None
) -> CentralizedConfig:
    """The config with every unset training setting taken from `training.recipes` for this model and
    input (`table_rows`: a table of that many training rows gets the tabular recipe)."""
    from training.recipes import default_recipe

    recipe = default_recipe(config.model, input_shape, config.dp, table_rows, table=table_rows is not None)
    fields = ("epochs", "batch_size", "learning_rate", "momentum", "lr_schedule", "l2_norm_clip")
    unset = {f: getattr(recipe, f) for f in fields if getattr(config, f) is None}
    if config.sampling_rate is not None:
        unset.pop("batch_size", None)  # resolved from the sampling rate below
    return dataclasses.replace(config, **unset)


def noise_seed(config: CentralizedConfig) -> int | None:
    """The seed of everything the guarantee relies on (noise, sampling, local DP), derived from
    (seed, experiment name, run_id), so that no two experiments, comparison arms or search trials
    share a stream; None: OS entropy."""
    from privacy.randomness import derive_seed

    if config.secure_noise:
        return None
    return derive_seed(config.seed, "centralized", config.experiment_name, config.run_id)


def _load(config: CentralizedConfig, dataset: Dataset | None) -> tuple[Dataset, dict | None]:
    from training.inputs import load_training_data, with_local_dp

    if dataset is not None:
        return with_local_dp(dataset, config.local_dp, noise_seed(config))
    return load_training_data(
        config.dataset,
        config.data_dir,
        seed=config.seed,
        download=config.download,
        label_column=config.label_column,
        schema_file=config.schema_file,
        image_size=config.image_size,
        color_mode=config.color_mode,
        local_dp=config.local_dp,
        noise_seed=noise_seed(config),
    )


def _with_canaries(config: CentralizedConfig, dataset: Dataset, probe) -> tuple[Dataset, RunCanaries | None]:
    if config.audit_canaries == 0 and config.audit_example_canaries == 0:
        return dataset, None
    try:
        return insert_canaries(
            dataset,
            config.audit_canaries,
            config.audit_example_canaries,
            audit_seed(config.seed),
            probe,
            config.l2_norm_clip,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


def prepare(config: CentralizedConfig, dataset: Dataset | None = None) -> Plan:
    """Loads the data and checks every setting (data, model, DP, engine, output folder); writes nothing.

    `dataset` (already loaded, e.g. by the comparison) is used as given, local DP included.
    """
    from models.specs import MODELS, check_compatible
    from privacy.clipping import explain_engine

    folder = RunFolder(config.root_output_dir, config.experiment_name)
    folder.check()
    dataset, local_report = _load(config, dataset)
    fitted = None
    if table_preprocessing.is_table(dataset):
        config = with_recipe(config, dataset.input_shape, dataset.num_train)
        dataset, fitted = _fit_table(config, dataset)
    if config.model in MODELS:  # by name, before its recipe; any other model is built and checked below
        check_compatible(config.model, dataset.input_shape, dataset.num_classes, config.model_init)
    config = with_recipe(config, dataset.input_shape)
    probe = _build(config, dataset)  # a user's model is built and checked here, before any write
    dataset, canaries = _with_canaries(config, dataset, probe)
    n = canaries.num_units if canaries else dataset.num_train
    if config.sampling_rate is not None:
        config = dataclasses.replace(
            config, batch_size=max(1, round(config.sampling_rate * n)), sampling_rate=None
        )
    if config.batch_size > n:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {n} training examples")
    dp = dp_sgd_config(config, n, fitted) if config.dp else None
    ledger = accounting.dp_sgd_epsilon_per_epoch(dp) if dp else NonPrivateLedger(config.epochs)
    try:
        epochs = accounting.plan_within_budget(
            ledger, config.target_epsilon if dp else None, "epoch", "raise the noise multiplier"
        )
        engine, engine_reason = explain_engine(config.engine, probe) if dp else ("none", None)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    skip = ("root_output_dir", "data_dir", "download")
    fingerprint = {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}
    fingerprint["resolved_noise_multiplier"] = dp.noise_multiplier if dp else None
    if config.model_init == "fresh":  # the default: left out, as in the runs made before it existed
        fingerprint.pop("model_init")
    folder.check_same_run(fingerprint)
    return Plan(config, dataset, local_report, dp, ledger, epochs, engine, folder, fingerprint, canaries,
                engine_reason, fitted)  # fmt: skip


def _fit_table(config: CentralizedConfig, dataset: Dataset) -> tuple[Dataset, Fitted]:
    """The table's preprocessing for this run (`training.table_preprocessing.fit_for_run`)."""
    try:
        return table_preprocessing.fit_for_run(
            dataset, config.preprocessing, config.dp, config.preprocessing_share, config.target_epsilon,
            config.delta, lambda: accounting.dp_sgd_epsilon(dp_sgd_config(config, dataset.num_train)),
            noise_seed(config), adjacency=accounting.sampling_adjacency(config.sampling),
        )  # fmt: skip
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _build(config: CentralizedConfig, dataset: Dataset):
    """The run's model, initialized from the seed or with its saved weights (`models.specs`)."""
    from models.specs import build_model

    return build_model(
        config.model, dataset.input_shape, dataset.num_classes, config.seed, config.width, config.model_init
    )


def run(
    config: CentralizedConfig,
    dataset: Dataset | None = None,
    flags: dict[str, Any] | None = None,
    verbose: bool = True,
) -> CentralizedResult:
    """Validates everything, then trains, evaluates, accounts and writes all outputs.

    `flags` (the binary's flag values) are written to flags.txt, after validation; `verbose` prints
    progress (with an ETA unless the run is DP: its timings are not covered).
    """
    return launch(prepare(config, dataset), flags, verbose)


def launch(plan: Plan, flags: dict[str, Any] | None = None, verbose: bool = True) -> CentralizedResult:
    """Creates the run folder (flags.txt first), then trains: the first writes of a prepared run.

    A run that is already complete (same settings, privacy.json written) is not redone: its results
    are read back and nothing on disk changes (one that diverged raises `Diverged` again).
    """
    progress = Progress("centralized", plan.epochs, enabled=verbose, timed=plan.dp is None)
    if plan.complete:
        diverged = Diverged.recorded(plan.folder.read_json(RunFolder.PRIVACY), _hint(plan), plan.folder.path)
        if diverged is not None:  # nothing to redo: the same settings diverge again
            raise diverged
        progress.note(f"{plan.folder.path} already holds this run, complete: nothing to do")
        return _read_result(plan)
    with plan.folder.removed_on_environment_failure():  # a full disk leaves no half-folder
        plan.folder.create()
        if flags is not None:
            plan.folder.write_flags(flags)
        plan.folder.write_json(RunFolder.RUN_CONFIG, plan.fingerprint)
        return train(plan, progress)


def _read_result(plan: Plan) -> CentralizedResult:
    """A finished run read back: the same `history` (metrics.csv, the released rows) as a fresh run."""
    history = plan.folder.read_metrics()
    full = plan.folder.read_metrics(name=UNRELEASED_EPOCHS_FILE) if _unreleased(plan) else history
    final = history[-1] if history else {}
    audit = plan.folder.read_json(AUDIT_FILE) if plan.canaries else None
    return _result(plan, final, plan.folder.read_json(RunFolder.PRIVACY), 0.0, history, audit, full)


def _result(plan: Plan, final: dict, privacy: dict, wall_time_s: float, history: list, audit, full: list):
    return CentralizedResult(
        output_dir=plan.folder.path, test_accuracy=final.get("test_accuracy", math.nan),
        test_loss=final.get("test_loss", math.nan), privacy=privacy, wall_time_s=wall_time_s,
        history=history, audit=audit, unreleased_history=full, test_metrics=_test_metrics(final),
    )  # fmt: skip


def _report(plan: Plan, epochs_done: int) -> dict[str, Any]:
    if plan.dp is None:
        guarantee = accounting.non_private_guarantee("example", "shuffle", 0)
        details: dict[str, Any] = {"epochs": epochs_done}
    else:
        guarantee = accounting.dp_sgd_guarantee(plan.dp, epochs_done)
        details = {
            "epochs": epochs_done,
            "batch_size": plan.dp.batch_size,
            "sampling_rate": plan.dp.sampling_rate,
            "num_examples": plan.dp.num_examples,
            "engine": plan.engine,
            "engine_reason": plan.engine_reason,  # why auto did not pick ghost (None: it did)
        }
    if plan.fitted is not None:
        adjacency = accounting.dp_sgd_adjacency(plan.dp) if plan.dp else None
        guarantee, details["preprocessing"] = table_preprocessing.report(plan.fitted, guarantee, adjacency)
    if plan.local_report:
        details["local_dp"] = plan.local_report
    details["randomness"] = randomness_report(plan.config.secure_noise)
    details["stopped_early_for_budget"] = epochs_done < plan.config.epochs
    return privacy_report(guarantee, **details)


def _model_and_optimizer(plan: Plan):
    """The Keras model (compiled for evaluate() and a reloadable SavedModel) and its SGD optimizer."""
    import tensorflow as tf

    config, dataset = plan.config, plan.dataset
    model = _build(config, dataset)
    if dataset.task == "classification":
        model.compile(
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
        )
    else:
        model.compile(loss=tf.keras.losses.MeanSquaredError())
    lr: Any = config.learning_rate
    if config.lr_schedule == "cosine":  # decays to 0 over the planned steps: calmer final DP iterates
        units = plan.canaries.num_units if plan.canaries else dataset.num_train
        steps = plan.epochs * math.ceil(units / config.batch_size)
        lr = tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, steps))
    return model, tf.keras.optimizers.SGD(lr, momentum=config.momentum)


def fit(plan: Plan, observer: WhiteBoxObserver | None = None, on_epoch=None):
    """Builds the model and runs the planned epochs of sampled DP (or plain) steps; returns the model.
    `on_epoch(epoch, model)` runs after each epoch. Writes nothing (the private search uses it too)."""
    import tensorflow as tf

    from training.train_steps import make_train_steps

    config, dataset = plan.config, plan.dataset
    model, optimizer = _model_and_optimizer(plan)
    gradients = plan.canaries.gradients if plan.canaries else None
    steps = make_train_steps(
        model, dataset.task, dataset.input_shape, tf.as_dtype(dataset.y_train.dtype), optimizer, plan.dp,
        plan.engine, noise_seed(config), gradients,
    )  # fmt: skip
    epochs = _EpochRunner(plan, steps, observer)
    for epoch in range(1, plan.epochs + 1):
        epochs.run()
        if on_epoch is not None:
            on_epoch(epoch, model)
    return model


def train(plan: Plan, progress: Progress | None = None) -> CentralizedResult:
    """The training loop of a prepared run, and its outputs; `Diverged` (outputs written) when the
    test loss or the weights stop being finite."""
    start = time.time()
    config, dataset = plan.config, plan.dataset
    progress = progress or Progress("centralized", plan.epochs, timed=plan.dp is None)
    observer = (
        WhiteBoxObserver(plan.canaries.gradients) if plan.canaries and plan.canaries.gradients else None
    )
    tb = plan.folder.tensorboard_writer()
    history: list[dict[str, Any]] = []
    epoch_start = [time.time()]

    def evaluate(epoch: int, model) -> None:
        from training.metrics import evaluate_model

        evals = evaluate_model(model, dataset.x_test, dataset.y_test, dataset.task, dataset.num_classes)
        row = {"epoch": epoch, "test_loss": evals.pop("test_loss"), "epsilon": plan.ledger[epoch - 1]}
        row["epoch_time_s"] = time.time() - epoch_start[0]
        row.update(evals)  # test_accuracy, and AUC / average precision / balanced accuracy / RMSE by task
        history.append(row)
        write_scalars(tb, epoch, row, skip=("epoch", *_unreleased(plan)))
        progress.step(epoch, _epoch_text(row, plan))
        # the test loss (held-out data) and the weights (DP-SGD's released iterate) are covered, unlike
        # a training loss: stopping on them reveals nothing the run does not release anyway
        reason = divergence({"test loss": row["test_loss"]}, model.weights)
        if reason is not None:
            raise Diverged(f"epoch {epoch}", reason, _hint(plan), plan.folder.path)
        epoch_start[0] = time.time()

    try:
        model = fit(plan, observer, evaluate)
    except Diverged as stop:  # as a budget stop, without the model (useless) or an audit
        done = len(history)
        _write_outputs(plan, tb, history, _report(plan, done) | stop.report_fields("epoch", done))
        raise
    if plan.epochs < config.epochs:
        progress.note(
            f"stopped after {plan.epochs} epochs: epoch {plan.epochs + 1} would spend "
            f"epsilon={plan.ledger[plan.epochs]:.3f} > budget {config.target_epsilon}"
        )
    privacy = _report(plan, plan.epochs)
    audit = _audit(plan, model, observer, privacy, tb)
    released = _write_outputs(plan, tb, history, privacy, model)
    return _result(plan, history[-1], privacy, time.time() - start, released, audit, history)


@interrupts.deferred()  # the model, metrics.csv and privacy.json: all of them or (a signal before) none
def _write_outputs(plan: Plan, tb, history: list[dict[str, Any]], privacy: dict, model=None) -> list[dict]:
    """The statement in TensorBoard, the model (when given), metrics.csv (the released columns; a DP
    run's full rows in not_for_release/), privacy.json last; returns the released rows.

    A run that diverged gets no model, and a privacy.json of exactly the epochs taken (their test
    metrics were released, in TensorBoard and on stdout) that records the divergence: a rerun of the
    same command says it again instead of training."""
    import tensorflow as tf

    with tb.as_default(step=len(history)):
        tf.summary.text("privacy_statement", privacy["statement"])
    tb.flush()
    if model is not None:
        table_preprocessing.save_model(plan.folder, model, plan.dataset.task, plan.fitted)
    released = [{k: v for k, v in r.items() if k not in _unreleased(plan)} for r in history]
    if _unreleased(plan):  # a DP run's timings depend on the sampled batches: for the data holder only
        plan.folder.write_metrics(history, name=UNRELEASED_EPOCHS_FILE)
    plan.folder.write_metrics(released)
    plan.folder.write_privacy(privacy)
    return released


def _hint(plan: Plan) -> str:
    return "lower --learning_rate" + (" or --l2_norm_clip" if plan.dp is not None else "")


def _test_metrics(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k.startswith("test_")}


class _EpochRunner:
    """One epoch of sampled batches through the compiled steps (canaries included where sampled)."""

    def __init__(self, plan: Plan, steps, observer: WhiteBoxObserver | None) -> None:
        import tensorflow as tf

        self.plan, self.observer = plan, observer
        self.train_step, self.noise_only_step = steps
        self.x, self.y = tf.constant(plan.dataset.x_train), tf.constant(plan.dataset.y_train)
        self.rng = np.random.default_rng(noise_seed(plan.config))  # batch (and canary) sampling
        units = plan.canaries.num_units if plan.canaries else plan.dataset.num_train
        self.batches = plan.dp or DpSgdConfig(
            num_examples=units, batch_size=plan.config.batch_size, epochs=plan.config.epochs,
            noise_multiplier=0.0, sampling="shuffle",
        )  # fmt: skip

    def run(self) -> None:
        import tensorflow as tf

        from privacy import sampling

        for idx in sampling.epoch_batches(self.batches, self.rng):
            mask = ()
            if self.plan.canaries:
                idx, canary_mask = self.plan.canaries.split(idx)
                mask = () if canary_mask is None else (tf.constant(canary_mask),)
            if len(idx) == 0 and self.noise_only_step is not None:
                observed = self.noise_only_step(*mask)
            elif len(idx) == 0 and not (mask and mask[0].numpy().any()):
                continue  # non-private, nothing sampled: no step
            else:
                observed = self.train_step(tf.gather(self.x, idx), tf.gather(self.y, idx), *mask)
            if self.observer is not None:
                self.observer.add(observed)


def _audit(plan: Plan, model, observer: WhiteBoxObserver | None, privacy: dict, tb) -> dict | None:
    """audit.json of a run with canaries (its lower bound also in privacy.json and TensorBoard)."""
    if plan.canaries is None:
        return None
    examples, black_box = plan.canaries.examples, None
    if examples is not None:
        logits = model.predict(examples.x, batch_size=1024, verbose=0)
        black_box = (examples, logits, BLACK_BOX_EXAMPLES)
    white_box = (observer, WHITE_BOX_STEPS) if observer is not None else None
    record = audit_record(reported_epsilon(privacy), plan.config.delta, white_box, black_box)
    write_audit(plan.folder, record, privacy, tb, plan.epochs, "centralized")
    return record


UNRELEASED_EPOCHS_FILE = os.path.join(RunFolder.NOT_FOR_RELEASE, "epoch_metrics.csv")


def _unreleased(plan: Plan) -> tuple[str, ...]:
    """Columns a DP run keeps in not_for_release/: an epoch's wall time grows with the batches that
    Poisson sampling drew, a statistic of the private data that the guarantee does not cover."""
    return ("epoch_time_s",) if plan.dp is not None else ()


def _epoch_text(row: dict[str, Any], plan: Plan) -> str:
    acc = f" acc={row['test_accuracy']:.4f}" if "test_accuracy" in row else ""
    eps = f" eps={row['epsilon']:.3f}" if plan.dp else ""
    return f"epoch {row['epoch']}/{plan.epochs} loss={row['test_loss']:.4f}{acc}{eps}"
