"""Federated learning with TFF: FedAvg / FedProx, user-level DP, checkpoints and resume.

`run(config)` is the library entry (the binary `train_federated` only parses flags). One
`DpFedAvgConfig`, derived once from the `FederatedConfig`, drives the client sampler
(`privacy.sampling.sample_clients`), the TFF aggregator (`privacy.aggregators`) and the
accountant (`privacy.accounting`), so the epsilon we report is the one of the run.

Rounds and the privacy ledger: round r (1-based) samples `sample_clients(dp, r - 1, seed)`,
a pure function of (seed, r); the ledger's epsilon after r rounds is a pure function of r.
The round counter lives in the checkpoint next to the TFF state, so a run resumed after a
crash (even SIGKILL) re-samples exactly the clients of the rounds it redoes and counts each
round of the final model exactly once.

Poisson client sampling can draw zero clients. A DP round still runs then: TFF's DP
aggregators divide by the *expected* clients per round, so the server applies pure noise,
exactly the mechanism the Poisson-sampled Gaussian event accounts for (skipping the round
would reveal that the sample was empty, which the analysis does not cover). Non-private
runs skip such rounds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from data.clients import ClientPopulation
from data.datasets import Dataset
from privacy import accounting
from privacy.auditing.canaries import ExampleCanaries, UpdateCanaries
from privacy.config import DpFedAvgConfig
from training import interrupts, table_preprocessing
from training.centralized_config import NonPrivateLedger
from training.federated import checkpoints
from training.federated.experiment import FederatedConfig, noise_seed, prepare, privacy_report
from training.federated.process import build_process, loss_and_metrics
from training.progress import Diverged, Progress, divergence
from training.run_folder import RunFolder, write_scalars


@dataclasses.dataclass
class FederatedResult:
    output_dir: str
    test_accuracy: float
    test_loss: float
    privacy: dict[str, Any]
    rounds_completed: int
    wall_time_s: float
    history: list[dict[str, Any]]  # what metrics.csv holds (a private run: what its guarantee covers)
    resumed_from_round: int = 0
    audit: dict[str, Any] | None = None
    # every round's full row, the sampled clients' statistics included (not_for_release/ in DP runs)
    unreleased_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the final model's test metrics (training.metrics.evaluate_model: test_loss, test_accuracy,
    # test_auc, ...), computed on the held-out test split and released like test_accuracy
    test_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


# The round statistics a DP run may release: the test metrics (of held-out data), the epsilon spent,
# and the adaptive clip (released by the accounted clipped-count query). The sampled clients' loss,
# accuracy and example counts (TFF sums them without noise), how many clients were sampled, and the
# round's wall time are statistics of the private data that no DP mechanism covers: they go to
# not_for_release/.
UNRELEASED_ROUNDS_FILE = os.path.join(RunFolder.NOT_FOR_RELEASE, "round_metrics.csv")


def released(row: dict[str, Any], private: bool) -> dict[str, Any]:
    """The part of a round's row that a run may write to metrics.csv, TensorBoard and stdout."""
    if not private:
        return row
    return {k: v for k, v in row.items() if k in ("round", "epsilon", _CLIP_KEY) or k.startswith("test_")}


def _scalars(prefix: str, value: Any) -> dict[str, float]:
    """Flattens nested measurement dicts into {'a/b': float} (scalars only)."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_scalars(f"{prefix}/{k}" if prefix else str(k), v))
    elif np.ndim(value) == 0 and not isinstance(value, tuple | list | str):
        try:
            out[prefix] = float(value)
        except (TypeError, ValueError):
            pass
    return out


@dataclasses.dataclass
class _Progress:
    """What a checkpoint holds besides the TFF state, and what the loop accumulates."""

    done: int
    empty_rounds: int
    history: list[dict[str, Any]]


@dataclasses.dataclass
class Plan:
    """A validated federated run: decided before any file is written."""

    config: FederatedConfig
    population: ClientPopulation
    dp: DpFedAvgConfig
    ledger: Sequence[float]  # epsilon after each round (NonPrivateLedger: inf, without a list)
    rounds: int  # planned: the budget may stop the run before config.rounds
    folder: RunFolder
    canary_clients: ExampleCanaries | None = None  # black box, inserted into `population`
    aggregator_canaries: UpdateCanaries | None = None  # white box, through the run's aggregator


def plan_run(config: FederatedConfig, dataset: Dataset | ClientPopulation | None = None) -> Plan:
    """Loads the clients and checks every setting (DP, budget, resumption, output folder); writes nothing."""
    population, dp, canary_clients = prepare(config, dataset)
    # the model is built (and checked against the data) here, eagerly, before anything is written:
    # TFF's model_fn builds it again per call, from the same spec, with the same checks
    shapes = [tuple(v.shape) for v in _initial_model(config, population).trainable_variables]
    aggregator_canaries = None
    if config.audit_canaries:
        from training.canary_audit import audit_seed
        from training.federated.aggregator_audit import aggregator_canaries as make_canaries

        aggregator_canaries = make_canaries(config.audit_canaries, dp, audit_seed(config.seed), shapes)
    folder = RunFolder(config.root_output_dir, config.experiment_name)
    folder.check()
    if config.workers:
        from training.federated.execution_context import check_reachable

        check_reachable(config.workers)
    ledger = accounting.fedavg_epsilon_per_round(dp) if dp.is_private else NonPrivateLedger(config.rounds)
    rounds = accounting.plan_within_budget(
        ledger,
        config.target_epsilon if dp.is_private else None,
        "round",
        "raise --noise_multiplier or the target",
    )
    return Plan(config, population, dp, ledger, rounds, folder, canary_clients, aggregator_canaries)


def _initial_model(config: FederatedConfig, population: ClientPopulation):
    """The run's model with its starting weights: from the seed, or a .keras's saved ones (pretrained)."""
    from models.specs import build_model

    return build_model(
        config.model, population.input_shape, population.num_classes, seed=config.seed, init=config.model_init
    )


def initial_state(config: FederatedConfig, population: ClientPopulation, process):
    """TFF's initial state; with init "pretrained", its global model holds the saved weights (TFF's
    model_fn builds in graph mode, where Keras cannot load weights, so they are set here)."""
    state = process.initialize()
    if config.model_init != "pretrained":
        return state
    import tensorflow_federated as tff

    model = _initial_model(config, population)
    weights = tff.learning.models.ModelWeights(
        trainable=[v.numpy() for v in model.trainable_variables],
        non_trainable=[v.numpy() for v in model.non_trainable_variables],
    )
    return process.set_model_weights(state, weights)


def run(
    config: FederatedConfig,
    dataset: Dataset | ClientPopulation | None = None,
    flags: dict[str, Any] | None = None,
    verbose: bool = True,
) -> FederatedResult:
    """Validates everything, then trains (or resumes), evaluates, accounts and writes all outputs.

    `flags` (the binary's flag values) are written to flags.txt, after validation; `verbose` prints
    progress with an ETA.
    """
    return launch(plan_run(config, dataset), flags, verbose)


def launch(
    plan: Plan, flags: dict[str, Any] | None = None, verbose: bool = True, stop_on_divergence: bool = True
) -> FederatedResult:
    """Creates the run folder (flags.txt first), then trains in a TFF context that owns its worker.

    `stop_on_divergence`: a round whose global weights (or, without DP, train loss) are not finite
    stops the run with `Diverged`, and so does a rerun of a run that stopped so (nothing is redone).
    The private search turns it off: a trial that diverges only scores badly."""
    from training.federated import execution_context

    start = time.time()
    config, folder = plan.config, plan.folder
    if stop_on_divergence and os.path.exists(folder.file(RunFolder.PRIVACY)):
        diverged = Diverged.recorded(folder.read_json(RunFolder.PRIVACY), _hint(plan), folder.path)
        if diverged is not None:  # the same settings diverge again: nothing to redo
            raise diverged
    folder.create()
    if flags is not None:
        folder.write_flags(flags)
    ckpt_dir = checkpoints.checkpoint_dir(config)
    os.makedirs(ckpt_dir, exist_ok=True)
    folder.write_json(
        os.path.join("checkpoints", "run_config.json"), checkpoints.fingerprint(config, plan.dp)
    )
    with execution_context.execution_context(list(config.workers) if config.workers else None):
        return _train(plan, ckpt_dir, start, verbose, stop_on_divergence)


def _evaluator(config: FederatedConfig, population: ClientPopulation, process):
    """(Keras model holding the global weights, evaluate(state) -> test metrics).

    The metrics are `training.metrics.evaluate_model`'s (test_loss, test_accuracy, test_auc, ...),
    the keys the centralized pipeline reports, computed centrally on the held-out test split."""
    from models.specs import build_model
    from training.metrics import evaluate_model

    # the architecture: the global weights are assigned from the state before every evaluation
    eval_model = build_model(config.model, population.input_shape, population.num_classes, seed=config.seed)
    loss, metrics = loss_and_metrics(population.task)
    eval_model.compile(loss=loss, metrics=metrics())  # the saved model stays compiled, as before

    def evaluate(state) -> dict[str, float]:
        process.get_model_weights(state).assign_weights_to(eval_model)
        return evaluate_model(
            eval_model, population.x_test, population.y_test, population.task, population.num_classes
        )

    return eval_model, evaluate


def _train(
    plan: Plan, ckpt_dir: str, start: float, verbose: bool, stop_on_divergence: bool
) -> FederatedResult:
    import tensorflow as tf
    import tensorflow_federated as tff

    config, dp, population, ledger, planned, folder = (
        plan.config, plan.dp, plan.population, plan.ledger, plan.rounds, plan.folder
    )  # fmt: skip
    process = build_process(config, dp, population)
    loop = asyncio.new_event_loop()  # the state manager is async; never asyncio.run() (see field notes)
    try:
        psm = tff.program.FileProgramStateManager(ckpt_dir, keep_total=2)
        state, progress = _restore(
            initial_state(config, population, process), psm, loop, folder, dp.is_private
        )
        done = progress.done
        # a DP run's round durations are statistics of the sampled clients: its lines carry none
        report = Progress("federated", planned, first=done + 1, enabled=verbose, timed=not dp.is_private)
        if done:
            report.note(f"resuming after round {done} from {ckpt_dir}")
        eval_model, evaluate = _evaluator(config, population, process)

        @interrupts.deferred()  # the checkpoint and the privacy.json that accounts for it, together
        def checkpoint(r: int) -> None:
            # metrics.csv first: after a crash it may run ahead of the checkpoint (resume drops
            # the extra rows), but never behind it.
            _write_rounds(folder, progress.history, dp.is_private)
            loop.run_until_complete(psm.save((state, np.int64(r), np.int64(progress.empty_rounds)), r))
            folder.write_privacy(
                privacy_report(
                    config, dp, r, progress.empty_rounds, population.local_dp_report, _fitted(population)
                )
            )

        tb = _tensorboard(folder, progress, planned, dp.is_private)
        report.note(_start_text(config, dp, population, done, planned))
        for r in range(done + 1, planned + 1):
            state, row = _one_round(plan, process, state, r, progress)
            if r % config.eval_every == 0 or r == planned:
                row.update(evaluate(state))
            progress.history.append(row)
            write_scalars(tb, r, released(row, dp.is_private), skip=("round",))
            report.step(r, _round_text(released(row, dp.is_private), planned, dp.is_private))
            if stop_on_divergence:
                _stop_if_diverged(plan, process.get_model_weights(state), row, progress, tb)
            if r % config.checkpoint_every == 0 or r == planned:
                checkpoint(r)
        if planned < config.rounds:
            report.note(
                f"stopped after {planned} rounds: round {planned + 1} would spend "
                f"epsilon={ledger[planned]:.3f} > --target_epsilon={config.target_epsilon}"
            )
        final_eval = evaluate(state)
        privacy = _final_report(config, dp, planned, progress, population)
        audit = _audit(plan, eval_model, privacy, tb if done < planned else None)
        if tb is not None:  # a finished run that is rerun changes nothing on disk
            with tb.as_default(step=planned):
                tf.summary.text("privacy_statement", privacy["statement"])
            tb.flush()
            table_preprocessing.save_model(folder, eval_model, population.task, _fitted(population))
        _write_rounds(folder, progress.history, dp.is_private)
        folder.write_privacy(privacy)
        return FederatedResult(
            output_dir=folder.path,
            test_accuracy=final_eval.get("test_accuracy", math.nan),
            test_loss=final_eval["test_loss"],
            privacy=privacy,
            rounds_completed=planned,
            wall_time_s=time.time() - start,
            history=[released(row, dp.is_private) for row in progress.history],
            resumed_from_round=done,
            audit=audit,
            unreleased_history=progress.history,
            test_metrics=dict(final_eval),
        )
    finally:
        loop.close()


def _hint(plan: Plan) -> str:
    return "lower --client_learning_rate or --server_learning_rate" + (
        " or --clip_norm" if plan.dp.is_private else ""
    )


def _stop_if_diverged(plan: Plan, weights, row: dict[str, Any], progress: _Progress, tb) -> None:
    """Raises `Diverged` after round `row` if the global weights (a DP run's released iterate) or the
    test loss are not finite or, without DP, the train loss is, or every sampled client's update was
    (TFF drops those: zero weight, metrics reset, so num_examples is 0). A DP run's train statistics
    are the sampled clients' and no mechanism covers them: its stop must not depend on them.

    Its outputs first, as a budget stop's without the model (useless) and with no new checkpoint:
    metrics.csv and a privacy.json of exactly the rounds taken, recording the divergence."""
    import tensorflow as tf

    losses = {"test loss": row.get("test_loss")}
    if not plan.dp.is_private:
        losses["train loss"] = row.get("train_loss")
    reasons = [divergence(losses, [*weights.trainable, *weights.non_trainable])]
    if not plan.dp.is_private and row.get("clients") and row.get("train_num_examples") == 0:
        reasons.append("every client update non-finite")
    reason = ", ".join(r for r in reasons if r)
    if not reason:
        return
    config, r, population = plan.config, row["round"], plan.population
    stop = Diverged(f"round {r}", reason, _hint(plan), plan.folder.path)
    privacy = privacy_report(
        config, plan.dp, r, progress.empty_rounds, population.local_dp_report, _fitted(population)
    )
    privacy.update(stop.report_fields("round", r))
    if tb is not None:
        with tb.as_default(step=r):
            tf.summary.text("privacy_statement", privacy["statement"])
        tb.flush()
    _write_rounds(plan.folder, progress.history, plan.dp.is_private)
    plan.folder.write_privacy(privacy)
    raise stop


def _audit(plan: Plan, eval_model, privacy: dict[str, Any], tb) -> dict[str, Any] | None:
    """audit.json (both kinds of canary users); a finished run that is rerun reads it back (`tb` None)."""
    from privacy.report import reported_epsilon
    from training import canary_audit

    if plan.canary_clients is None and plan.aggregator_canaries is None:
        return None
    if tb is None and os.path.exists(plan.folder.file(canary_audit.AUDIT_FILE)):
        record = plan.folder.read_json(canary_audit.AUDIT_FILE)
        privacy["audit"] = canary_audit.summary(record)
        return record
    white_box = black_box = None
    if plan.aggregator_canaries is not None:
        from training.federated.aggregator_audit import simulate_aggregator

        config = plan.config
        observer = simulate_aggregator(
            plan.dp, plan.aggregator_canaries, plan.rounds, plan.aggregator_canaries.seed, noise_seed(config)
        )
        white_box = (observer, canary_audit.WHITE_BOX_AGGREGATOR)
    if plan.canary_clients is not None:
        logits = eval_model.predict(plan.canary_clients.x, batch_size=1024, verbose=0)
        black_box = (plan.canary_clients, logits, canary_audit.BLACK_BOX_CLIENTS)
    record = canary_audit.audit_record(reported_epsilon(privacy), plan.config.delta, white_box, black_box)
    canary_audit.write_audit(plan.folder, record, privacy, tb, plan.rounds, "federated")
    return record


def _one_round(plan: Plan, process, state, r: int, progress: _Progress):
    """Round r (1-based): its sampled clients, one TFF `next`, and the round's metrics row."""
    from privacy.sampling import sample_clients

    config, dp = plan.config, plan.dp
    t0 = time.time()
    clients = sample_clients(dp, r - 1, noise_seed(config))
    row: dict[str, Any] = {"round": r, "clients": len(clients)}
    if len(clients) == 0 and not dp.is_private:
        row["skipped"] = 1  # nothing to average; no privacy implication without DP
    else:
        progress.empty_rounds += len(clients) == 0
        data = plan.population.round_datasets(
            clients, config.client_epochs, config.client_batch_size, config.seed, r,
            config.client_data_optimizations,
        )  # fmt: skip
        result = process.next(state, data)
        state = result.state
        row.update(_round_metrics(result.metrics))
    row["round_time_s"] = time.time() - t0
    row["epsilon"] = plan.ledger[r - 1]
    return state, row


def _tensorboard(folder: RunFolder, progress: _Progress, planned: int, private: bool):
    """The run's TensorBoard writer; None for a finished run (it writes nothing new), unless it was
    killed after its last checkpoint and before its model was saved. A resumed run's log holds the
    kept rounds (released columns) only."""
    if progress.done >= planned and os.path.isdir(folder.file(RunFolder.MODEL)):
        return None
    kept = [released(row, private) for row in progress.history]
    return folder.tensorboard_writer(kept, step_key="round")


def _restore(initial, psm, loop, folder: RunFolder, private: bool):
    """(TFF state, progress) from the latest checkpoint, or the initial state for a new run."""
    saved, _ = loop.run_until_complete(psm.load_latest((initial, np.int64(0), np.int64(0))))
    if saved is None:
        return initial, _Progress(0, 0, [])
    done = int(saved[1])
    name = UNRELEASED_ROUNDS_FILE if private else RunFolder.METRICS  # where the full rows are
    return saved[0], _Progress(done, int(saved[2]), folder.read_metrics(done, step_key="round", name=name))


def _write_rounds(folder: RunFolder, history: list[dict[str, Any]], private: bool) -> None:
    """metrics.csv (the released columns) and, for a DP run, not_for_release/ (the full rows)."""
    if private:
        folder.write_metrics(history, name=UNRELEASED_ROUNDS_FILE)
    folder.write_metrics([released(row, private) for row in history])


def _round_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    train = _scalars("", metrics["client_work"]["train"])
    row = {f"train_{k}": v for k, v in train.items() if k != "num_batches"}
    row.update(_scalars("aggregator", metrics.get("aggregator", {})))
    return row


def _fitted(population):
    """A table's preprocessing (privacy.preprocessing.Fitted), or None."""
    return getattr(population, "preprocessing", None)


def _final_report(config, dp, planned: int, progress: _Progress, population) -> dict[str, Any]:
    privacy = privacy_report(
        config, dp, planned, progress.empty_rounds, population.local_dp_report, _fitted(population)
    )
    privacy["stopped_early_for_budget"] = planned < config.rounds
    clips = [h[_CLIP_KEY] for h in progress.history if _CLIP_KEY in h]
    if clips:
        privacy["final_clip"] = clips[-1]  # adaptive clipping: where the clip ended up
    return privacy


_CLIP_KEY = "aggregator/dp_query_metrics/clip"


def _start_text(config, dp, population, done: int, planned: int) -> str:
    kind = f"DP-FedAvg aggregator={dp.aggregator} z={dp.noise_multiplier:.4g}" if dp.is_private else "FedAvg"
    rounds = f"rounds {done + 1}..{planned}" if done < planned else f"all {planned} rounds already done"
    return (
        f"{kind} on {population.name}: {population.num_clients} clients, "
        f"{config.clients_per_round}/round ({config.client_sampling}), {rounds}"
    )


def _round_text(row: dict[str, Any], planned: int, private: bool) -> str:
    parts = [f"round {row['round']}/{planned}"]
    if "clients" in row:  # a non-private run (a DP run does not release it)
        parts.append(f"clients={row['clients']}")
    if "train_loss" in row:
        parts.append(f"train_loss={row['train_loss']:.4f}")
    if "test_accuracy" in row:
        parts.append(f"test_acc={row['test_accuracy']:.4f}")
    elif "test_loss" in row:
        parts.append(f"test_loss={row['test_loss']:.4f}")
    if math.isfinite(row.get("test_auc", math.nan)):  # binary labels: accuracy alone hides a rare class
        parts.append(f"test_auc={row['test_auc']:.4f}")
    if _CLIP_KEY in row:
        parts.append(f"clip={row[_CLIP_KEY]:.4g}")
    if private:
        parts.append(f"eps={row['epsilon']:.3f}")
    return " ".join(parts)
