"""Centralized training, non-private or DP-SGD, as a library call (no absl FLAGS here).

flags -> CentralizedConfig (frozen, validated) -> run() -> training loop -> outputs.
With ``dp=True`` one :class:`privacy.config.DpSgdConfig` drives the batch sampler, the
noise added by :mod:`privacy.dp_sgd` and the accountant, so the reported epsilon is the
epsilon of the sampling that was really used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any

import numpy as np

from data.datasets import Dataset, load_dataset
from pipelines import outputs
from privacy import accounting
from privacy.config import ACCOUNTANTS, DP_SGD_ENGINES, EXAMPLE_SAMPLINGS, DpSgdConfig
from privacy.local_dp import LocalDpConfig, apply_local_dp

LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """Settings that cannot run (as opposed to a bug): the message says what to change."""


@dataclasses.dataclass(frozen=True)
class CentralizedConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    label_column: str = "label"
    model: str = "mlp"
    epochs: int = 100
    batch_size: int = 512
    learning_rate: float = 0.1
    momentum: float = 0.9
    lr_schedule: str = "cosine"
    dp: bool = False
    l2_norm_clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    sampling: str = "poisson"
    engine: str = "auto"
    seed: int = 0
    root_output_dir: str = "runs"
    experiment_name: str = "centralized"
    local_dp: LocalDpConfig | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (self.l2_norm_clip > 0, f"l2_norm_clip must be > 0, got {self.l2_norm_clip}"),
            (0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}"),
            (self.accountant in ACCOUNTANTS, f"accountant must be one of {ACCOUNTANTS}"),
            (self.sampling in EXAMPLE_SAMPLINGS, f"sampling must be one of {EXAMPLE_SAMPLINGS}"),
            (self.engine in DP_SGD_ENGINES, f"engine must be one of {DP_SGD_ENGINES}"),
            (self.noise_multiplier is None or self.noise_multiplier >= 0, "noise_multiplier must be >= 0"),
            (self.target_epsilon is None or self.target_epsilon > 0, "target_epsilon must be > 0"),
        ]
        if self.dp:
            checks.append(
                (
                    self.noise_multiplier is not None or self.target_epsilon is not None,
                    "--dp needs --noise_multiplier or --target_epsilon",
                )
            )
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclasses.dataclass
class CentralizedResult:
    output_dir: str
    test_accuracy: float
    test_loss: float
    privacy: dict[str, Any]
    wall_time_s: float
    history: list[dict[str, Any]]


def dp_sgd_config(config: CentralizedConfig, num_examples: int) -> DpSgdConfig:
    """The DP-SGD config of this run, with the noise calibrated when a target is given."""
    if config.batch_size > num_examples:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {num_examples} training examples")
    if config.delta >= 1.0 / num_examples:
        raise ConfigError(
            f"delta={config.delta:g} must be < 1/N = {1.0 / num_examples:.3g} (N={num_examples} examples)"
        )
    base = DpSgdConfig(
        num_examples=num_examples,
        batch_size=config.batch_size,
        epochs=config.epochs,
        noise_multiplier=config.noise_multiplier or 0.0,
        l2_norm_clip=config.l2_norm_clip,
        delta=config.delta,
        accountant=config.accountant,
        sampling=config.sampling,
    )
    if config.noise_multiplier is None:
        try:
            return accounting.calibrate_dp_sgd(base, config.target_epsilon)
        except ValueError as e:
            raise ConfigError(str(e)) from e
    return base


def _privacy_report(
    dp: DpSgdConfig | None, epochs_done: int, engine: str, local_report: dict | None
) -> dict[str, Any]:
    if dp is None:
        report: dict[str, Any] = {
            "epsilon": math.inf,
            "delta": None,
            "dp": False,
            "unit": "example",
            "statement": "Non-private training: no differential-privacy guarantee.",
        }
    else:
        st = accounting.dp_sgd_statement(dp, epochs_done)
        report = {
            "epsilon": st.epsilon,
            "delta": st.delta,
            "dp": True,
            "accountant": st.accountant,
            "sampling": st.sampling,
            "adjacency": st.adjacency,
            "unit": st.unit,
            "noise_multiplier": dp.noise_multiplier,
            "clip": dp.l2_norm_clip,
            "l2_norm_clip": dp.l2_norm_clip,
            "steps": st.steps,
            "epochs": epochs_done,
            "batch_size": dp.batch_size,
            "sampling_rate": dp.sampling_rate,
            "num_examples": dp.num_examples,
            "engine": engine,
            "statement": st.as_text(),
        }
    if local_report:
        report["local_dp"] = local_report
    return report


def make_train_steps(
    model, task: str, input_shape, label_dtype, optimizer, dp: DpSgdConfig | None, engine: str, seed: int
):
    """(train_step(x, y), noise_only_step()) as tf.functions; DP when `dp` is given.

    The DP step is clipped sum (any engine) + N(0, (zC)^2) noise, over the expected batch
    size. An empty Poisson batch still takes a noise-only step: skipping it would change
    the mechanism the accountant analyses.
    """
    import tensorflow as tf

    from privacy import dp_sgd

    variables = model.trainable_variables
    spec = (tf.TensorSpec([None, *input_shape], tf.float32), tf.TensorSpec([None], label_dtype))
    if dp is None:
        loss_fn = dp_sgd.per_example_loss(task)

        @tf.function(input_signature=spec)
        def plain_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

        return plain_step, None

    clipped_sum = dp_sgd.make_clipped_sum_fn(engine, model, task, dp.l2_norm_clip)
    noise_gen = tf.random.Generator.from_seed(seed + 7919)
    expected = float(dp.batch_size)

    @tf.function(input_signature=spec)
    def dp_step(x, y):
        grads = dp_sgd.noisy_mean_gradient(
            clipped_sum(x, y), dp.noise_multiplier, dp.l2_norm_clip, expected, noise_gen
        )
        optimizer.apply_gradients(zip(grads, variables))

    @tf.function
    def noise_only_step():
        zeros = [tf.zeros_like(v) for v in variables]
        grads = dp_sgd.noisy_mean_gradient(zeros, dp.noise_multiplier, dp.l2_norm_clip, expected, noise_gen)
        optimizer.apply_gradients(zip(grads, variables))

    return dp_step, noise_only_step


def run(config: CentralizedConfig, dataset: Dataset | None = None) -> CentralizedResult:
    """Trains, evaluates, accounts and writes all outputs; returns the summary."""
    import tensorflow as tf

    from models.builders import build_model
    from privacy import dp_sgd, sampling

    start = time.time()
    out_dir = outputs.run_dir(config.root_output_dir, config.experiment_name)
    if dataset is None:
        dataset = load_dataset(
            config.dataset,
            config.data_dir,
            seed=config.seed,
            download=config.download,
            label_column=config.label_column,
        )
    local_report = None
    if config.local_dp is not None and config.local_dp.enabled:
        dataset, local_report = apply_local_dp(dataset, config.local_dp, config.seed)

    n = dataset.num_train
    dp = dp_sgd_config(config, n) if config.dp else None
    if dp is None and config.batch_size > n:
        raise ConfigError(f"batch_size {config.batch_size} exceeds the {n} training examples")
    ledger = accounting.dp_sgd_epsilon_per_epoch(dp) if dp else [math.inf] * config.epochs
    budget = config.target_epsilon if dp is not None else None
    planned_epochs = accounting.last_affordable(ledger, budget) if budget is not None else config.epochs
    if dp is not None and planned_epochs == 0:
        raise ConfigError(
            f"even one epoch costs epsilon={ledger[0]:.3g} > target {budget}; raise the noise multiplier"
        )

    model = build_model(config.model, dataset.input_shape, dataset.num_classes, seed=config.seed)
    metrics = ["accuracy"] if dataset.task == "classification" else []
    eval_loss = (
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if dataset.task == "classification"
        else tf.keras.losses.MeanSquaredError()
    )
    model.compile(loss=eval_loss, metrics=metrics)  # for evaluate() and a reloadable SavedModel
    lr: Any = config.learning_rate
    if config.lr_schedule == "cosine":  # decays to 0 over the planned steps: calmer final DP iterates
        steps = planned_epochs * math.ceil(n / config.batch_size)
        lr = tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, steps))
    optimizer = tf.keras.optimizers.SGD(lr, momentum=config.momentum)
    engine = dp_sgd.resolve_engine(config.engine, model) if dp else "none"
    x_train = tf.constant(dataset.x_train)
    y_train = tf.constant(dataset.y_train)

    train_step, noise_only_step = make_train_steps(
        model, dataset.task, dataset.input_shape, y_train.dtype, optimizer, dp, engine, config.seed
    )

    rng = np.random.default_rng(config.seed)
    batch_cfg = dp or DpSgdConfig(
        num_examples=n,
        batch_size=config.batch_size,
        epochs=config.epochs,
        noise_multiplier=0.0,
        sampling="shuffle",
    )
    tb = tf.summary.create_file_writer(os.path.join(out_dir, "tensorboard"))
    history: list[dict[str, Any]] = []
    logging.info(
        "training %s on %s (%d examples), %s",
        config.model,
        dataset.name,
        n,
        "DP-SGD engine=" + engine if dp else "non-private",
    )
    for epoch in range(1, planned_epochs + 1):
        t0 = time.time()
        for idx in sampling.epoch_batches(batch_cfg, rng):
            if len(idx) == 0:
                noise_only_step()
            else:
                train_step(tf.gather(x_train, idx), tf.gather(y_train, idx))
        epoch_time = time.time() - t0
        evals = model.evaluate(dataset.x_test, dataset.y_test, verbose=0, batch_size=1024, return_dict=True)
        row = {
            "epoch": epoch,
            "test_loss": float(evals["loss"]),
            "epsilon": ledger[epoch - 1],
            "epoch_time_s": epoch_time,
        }
        if "accuracy" in evals:
            row["test_accuracy"] = float(evals["accuracy"])
        history.append(row)
        with tb.as_default(step=epoch):
            for key, value in row.items():
                if key != "epoch" and math.isfinite(value):
                    tf.summary.scalar(key, value)
        acc = f" acc={row['test_accuracy']:.4f}" if "test_accuracy" in row else ""
        eps = f" eps={row['epsilon']:.3f}" if dp else ""
        print(
            f"[centralized] epoch {epoch}/{planned_epochs} loss={row['test_loss']:.4f}{acc}{eps} "
            f"({epoch_time:.1f}s)",
            flush=True,
        )
    if planned_epochs < config.epochs:
        print(
            f"[centralized] stopped after {planned_epochs} epochs: epoch {planned_epochs + 1} "
            f"would spend epsilon={ledger[planned_epochs]:.3f} > budget {budget}",
            flush=True,
        )

    privacy = _privacy_report(dp, planned_epochs, engine, local_report)
    privacy["stopped_early_for_budget"] = planned_epochs < config.epochs
    with tb.as_default(step=planned_epochs):
        tf.summary.text("privacy_statement", privacy["statement"])
    tb.flush()
    model.save(os.path.join(out_dir, "model"))
    outputs.write_csv(os.path.join(out_dir, "metrics.csv"), history)
    outputs.atomic_write_json(os.path.join(out_dir, "privacy.json"), privacy)
    final = history[-1]
    return CentralizedResult(
        output_dir=out_dir,
        test_accuracy=final.get("test_accuracy", math.nan),
        test_loss=final["test_loss"],
        privacy=privacy,
        wall_time_s=time.time() - start,
        history=history,
    )
