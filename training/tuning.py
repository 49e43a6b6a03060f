"""Private hyperparameter search for DP-SGD: an epsilon that covers the search (library; no FLAGS).

TuningConfig (frozen) -> prepare() (loads data, calibrates, draws K and the K configurations, checks
every trial; writes nothing) -> launch() (trains the K runs, releases the best) -> RunFolder outputs.

The mechanism (`privacy/private_selection.py`, Papernot & Steinke 2022): K ~ the chosen distribution,
drawn before the data is touched; each run trains a configuration sampled uniformly from the search
space with DP-SGD on the training part, then releases a noisy count of its correct predictions on a
validation split carved from the same private data (Gaussian noise, `score_noise` times the count's
sensitivity: 1 example centrally, a user's capped predictions federated);
only the best run's model and score are released. Every run's noise multiplier is the smallest whose
per-run RDP curve is dominated by the reference event's (largest batch size, most epochs), whose noise
is calibrated so that RepeatAndSelect(reference) meets `target_epsilon` for the whole search.

Not covered by the guarantee (kept for the data holder in not_for_release/, README): the table of
all runs (their noisy scores and configurations), K itself and the search's wall time (search.json),
the per-run progress lines (progress.log); and the test accuracy (the test split took no part in the
search, as elsewhere in this project it is reported without noise).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from typing import Any

import numpy as np

from data.datasets import Dataset
from privacy import private_selection
from privacy.accounting import Guarantee
from privacy.config import DP_SGD_ENGINES, DpSgdConfig, check_delta
from privacy.private_selection import RunsDistribution
from privacy.randomness import derive_seed
from privacy.report import privacy_report, randomness_report
from training.atomic_files import csv_text, save_model_in_fresh_process
from training.centralized_config import check_run_settings, check_search_space
from training.progress import Progress
from training.run_folder import RunFolder, write_scalars
from training.search_space import (
    SEARCH_SEED_SALT,
    SearchSpace,
    in_validation,
    split_validation,
)

RESULT_FILE = "result.json"
# Everything about the runs tried (their configurations, noisy scores, K, HParams logs, the per-run
# progress lines, the search's wall time) goes here: for the data holder, NOT covered by the guarantee
# (releasing it reveals K and every score). Everything else the search writes or prints is independent
# of K, except the selected run's configuration, weights and scores.
NOT_FOR_RELEASE = RunFolder.NOT_FOR_RELEASE
TRIALS_FILE = os.path.join(NOT_FOR_RELEASE, "trials.csv")
SEARCH_FILE = os.path.join(NOT_FOR_RELEASE, "search.json")  # K (runs_made) and the wall time
PROGRESS_FILE = os.path.join(NOT_FOR_RELEASE, "progress.log")  # one line per run
# score noise in units of the score's sensitivity (1 example; federated: one user's capped predictions)
DEFAULT_SCORE_NOISE = {"centralized": 10.0, "federated": 2.0}
DEFAULT_VALIDATION_FRACTION = 0.15
DEFAULT_RUNS = ("truncated_negative_binomial", 3.0, 0.1)  # RunsDistribution(name, mean, eta)
PIPELINES = ("centralized", "federated")


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    target_epsilon: float
    runs: RunsDistribution
    space: Any = SearchSpace()  # SearchSpace, or training.federated.search.FederatedSearchSpace
    pipeline: str = "centralized"  # or "federated": DP-FedAvg runs, user-level (README)
    num_clients: int = 300  # federated: users the training split is partitioned into (Dirichlet(1))
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    label_column: str = "label"
    image_size: int | None = None  # image_folder: resize to NxN; None: the images' own size
    color_mode: str | None = None  # image_folder: "grayscale" or "rgb"; None: inferred
    model: str = "mlp"  # a model spec (models/specs.py): built-in name, PATH.py:FUNCTION, PATH.keras
    model_init: str = "fresh"  # "fresh": initialized from the seed; "pretrained": a .keras's saved weights
    delta: float = 1e-5
    score_noise: float | None = None  # noise multiplier of the score release; None: DEFAULT_SCORE_NOISE
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    engine: str = "auto"
    seed: int = 0
    secure_noise: bool = False
    run_id: str = ""  # the search among runs released together (the comparison's arm)
    root_output_dir: str = "runs"
    experiment_name: str = "tune"

    def __post_init__(self) -> None:
        if self.score_noise is None and self.pipeline in PIPELINES:
            object.__setattr__(
                self, "score_noise", DEFAULT_SCORE_NOISE[self.pipeline]
            )  # frozen: resolve once
        check_run_settings(
            self.seed, self.root_output_dir, self.experiment_name, target_epsilon=self.target_epsilon,
            delta=self.delta, score_noise=self.score_noise, validation_fraction=self.validation_fraction,
        )  # fmt: skip
        check_search_space(self.space)
        checks = [
            (self.target_epsilon > 0, f"target_epsilon must be > 0, got {self.target_epsilon}"),
            (0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta}"),
            (0 < self.validation_fraction < 1, "validation_fraction must be in (0, 1)"),
            (self.engine in DP_SGD_ENGINES, f"engine must be one of {DP_SGD_ENGINES}"),
            (
                self.score_noise is not None and self.score_noise > 0,
                f"score_noise must be > 0 (0 would release the exact validation score of private data), "
                f"got {self.score_noise}",
            ),
            (
                self.model == "mlp" or not getattr(self.space, "width", ()),
                "width applies to the mlp model only: give no --widths for this model",
            ),
            (self.pipeline in PIPELINES, f"pipeline must be one of {PIPELINES}"),
            (
                (self.pipeline == "federated") != isinstance(self.space, SearchSpace),
                "the search space does not match the pipeline (federated runs need FederatedSearchSpace)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclasses.dataclass
class Trial:
    index: int
    hparams: dict[str, Any]
    dp: Any  # the accounted run: DpSgdConfig, or DpFedAvgConfig
    train: Any  # () -> the trained Keras model (validated in prepare, nothing written before)
    noisy_score: float | None = None  # noisy validation accuracy (the released selection score)


@dataclasses.dataclass
class SearchPlan:
    config: TuningConfig
    dataset: Dataset  # the test split is the full dataset's; the search never sees it
    validation: tuple[np.ndarray, np.ndarray]
    reference: Any  # DpSgdConfig, or DpFedAvgConfig
    side: Any  # _CentralizedSide or training.federated.search.FederatedSide
    runs_made: int
    trials: list[Trial]
    folder: RunFolder
    fingerprint: dict[str, Any]


@dataclasses.dataclass
class TuningResult:
    output_dir: str
    privacy: dict[str, Any]
    selected: dict[str, Any] | None  # the released run: its configuration, noisy score, test accuracy
    trials: list[dict[str, Any]]  # every run tried: not for release (their number is K)
    wall_time_s: float  # grows with K: not for release (not_for_release/search.json)


def search_rng(config: TuningConfig, stream: int) -> np.random.Generator:
    """Stream 1: K and the configurations; stream 2: the score noise. From the seed (recorded), or
    from OS entropy under secure_noise."""
    if config.secure_noise:
        return np.random.default_rng(None)
    seed = derive_seed(config.seed, "search", config.run_id)
    return np.random.default_rng([seed, SEARCH_SEED_SALT, stream])


def trial_run_id(config: TuningConfig, index: int) -> str:
    """The identity of trial `index` of this search: its noise and sampling seed derive from it."""
    return f"{config.run_id}/search/trial_{index:03d}"


class _CentralizedSide:
    """What the search needs from the centralized pipeline (the federated one: federated/search.py)."""

    unit, score_scale = "example", 1  # one record changes the count of correct predictions by <= 1

    def split(self, dataset: Dataset, config: TuningConfig, _in_validation) -> tuple[Dataset, tuple, int]:
        part, validation = split_validation(dataset, config.validation_fraction, config.seed)
        return part, validation, dataset.num_train

    def reference(self, config: TuningConfig, num_examples: int) -> DpSgdConfig:
        """The reference run: largest batch, most epochs (its noise is calibrated afterwards)."""
        batch = max(config.space.batch_size)
        if batch > num_examples:
            raise ValueError(f"batch size {batch} exceeds the {num_examples} training examples")
        return DpSgdConfig(num_examples, batch, max(config.space.epochs), 1.0, 1.0, config.delta)

    def candidate(self, config: TuningConfig, hparams: dict[str, Any], n: int) -> DpSgdConfig:
        return DpSgdConfig(
            n, hparams["batch_size"], hparams["epochs"], 1.0, hparams["l2_norm_clip"], config.delta
        )

    def trial(
        self, config: TuningConfig, hparams: dict[str, Any], dp: DpSgdConfig, index: int, root: str, part
    ):
        from training import centralized

        trial_config = centralized.CentralizedConfig(
            dataset=config.dataset, model=config.model, model_init=config.model_init, dp=True,
            noise_multiplier=dp.noise_multiplier,
            delta=config.delta, engine=config.engine, seed=config.seed,
            secure_noise=config.secure_noise, run_id=trial_run_id(config, index), root_output_dir=root,
            experiment_name=f"trial_{index:03d}",
            **hparams,
        )  # fmt: skip
        plan = centralized.prepare(trial_config, part)
        if plan.dp != dp:  # the run must train exactly the configuration accounted for
            raise RuntimeError(f"trial {index}: planned {plan.dp}, accounted {dp}")
        return lambda: centralized.fit(plan)

    def per_run_details(self, ref: DpSgdConfig) -> dict[str, Any]:
        names = ("num_examples", "batch_size", "epochs", "steps", "noise_multiplier")
        return {name: getattr(ref, name) for name in names} | {"sampling": "poisson"}

    @staticmethod
    def steps(ref: DpSgdConfig) -> int:
        return ref.steps


def side_of(config: TuningConfig):
    if config.pipeline == "federated":
        from training.federated.search import FederatedSide

        return FederatedSide()
    return _CentralizedSide()


def reference_config(config: TuningConfig, num_units: int, side=None):
    """The reference run with the smallest noise whose *search* epsilon meets the target."""
    side = side or side_of(config)
    check_delta(config.delta, num_units, side.unit)
    base = side.reference(config, num_units)
    return private_selection.calibrate_reference(base, config.score_noise, config.runs, config.target_epsilon)


def check_settings(config: TuningConfig, num_train: int) -> None:
    """The checks of `prepare` that need only the number of training examples (ValueError)."""
    check_delta(config.delta, num_train, "example")
    reference_config(config, int(num_train * (1 - config.validation_fraction)))


def prepare(config: TuningConfig, dataset: Dataset | None = None) -> SearchPlan:
    """Everything before the first write: data, calibration, K, the K configurations, each trial's plan.

    `dataset` (already loaded, e.g. by the comparison) is used as given."""
    from training.inputs import load_training_data

    folder = RunFolder(config.root_output_dir, config.experiment_name)
    folder.check()
    if dataset is None:
        dataset, _ = load_training_data(
            config.dataset, config.data_dir, seed=config.seed, download=config.download,
            label_column=config.label_column, image_size=config.image_size, color_mode=config.color_mode,
        )  # fmt: skip
    if (
        getattr(dataset, "table", None) is not None
    ):  # each trial's statistics would be a release the search does not account
        raise ValueError(
            "the private search does not take raw tables yet: train on the table with train_centralized or "
            "train_federated, or search over numeric features (arrays)"
        )
    if dataset.task != "classification":
        raise ValueError(
            f"the search scores runs by validation accuracy: {dataset.name} is not a classification task"
        )
    side = side_of(config)
    part, validation, num_units = side.split(dataset, config, in_validation)
    # every unit, in training or validation, is a privacy unit: delta < 1/N for all N of them
    check_delta(config.delta, num_units, side.unit)
    n_train = part.num_train if side.unit == "example" else part.num_clients
    reference = reference_config(config, n_train, side)
    reference_rdp = private_selection.rdp_curve(
        private_selection.per_run_event(reference, config.score_noise)
    )
    rng = search_rng(config, 1)
    runs_made = config.runs.draw(rng)
    trials = []
    root = folder.file(os.path.join(NOT_FOR_RELEASE, "runs"))
    for i in range(runs_made):
        hparams = config.space.sample(rng)
        candidate = side.candidate(config, hparams, n_train)
        dp = private_selection.dominating_noise(candidate, config.score_noise, reference_rdp)
        trials.append(Trial(i, hparams, dp, side.trial(config, hparams, dp, i, root, part)))
    fingerprint = dataclasses.asdict(config) | {"reference_noise_multiplier": reference.noise_multiplier}
    for name in ("root_output_dir", "data_dir", "download"):
        fingerprint.pop(name)
    if config.model_init == "fresh":  # the default: left out, as in searches made before it existed
        fingerprint.pop("model_init")
    folder.check_same_run(fingerprint)
    return SearchPlan(config, dataset, validation, reference, side, runs_made, trials, folder, fingerprint)


def guarantee(plan: SearchPlan) -> Guarantee:
    """The guarantee of the whole search: RepeatAndSelect over the reference per-run event."""
    config, ref = plan.config, plan.reference
    per_run = private_selection.per_run_event(ref, config.score_noise)
    return Guarantee(
        event=private_selection.search_event(per_run, config.runs),
        accountant="rdp",
        delta=config.delta,
        unit=plan.side.unit,
        adjacency="add_or_remove_one",
        sampling="poisson",
        noise_multiplier=ref.noise_multiplier,
        l2_norm_clip=None,  # each run has its own clip; the noise multiplier is relative to it
        steps=plan.side.steps(ref),
        notes=(
            f"Private hyperparameter search (Papernot & Steinke 2022): a random number of runs K "
            f"({config.runs.name}, mean {config.runs.mean:g}), only the best run released; every run's "
            "RDP is at most the reference run's (noise multiplier and steps above).",
        ),
    )


def privacy_json(plan: SearchPlan) -> dict[str, Any]:
    config, ref = plan.config, plan.reference
    tuning = config.runs.report() | {  # no K: this file is published beside the model
        "runs_made_note": "K, the number of runs made, is internal randomness of the mechanism that the "
        f"guarantee needs secret: it is only in {SEARCH_FILE}, which, like the table of all runs "
        f"({TRIALS_FILE}), is not covered by the guarantee.",
        "search_space": dataclasses.asdict(config.space),
        "per_run": plan.side.per_run_details(ref) | {
            "score": {
                "mechanism": "gaussian on the count of correct validation predictions, sensitivity "
                f"{plan.side.score_scale} (one {plan.side.unit})",
                "noise_stddev": config.score_noise * plan.side.score_scale,
                "validation_examples": len(plan.validation[1]),
            },
        },
    }  # fmt: skip
    details = {"tuning": tuning, "randomness": randomness_report(config.secure_noise)}
    return privacy_report(guarantee(plan), what="search", **details)


def run(
    config: TuningConfig,
    dataset: Dataset | None = None,
    flags: dict[str, Any] | None = None,
    verbose: bool = True,
) -> TuningResult:
    return launch(prepare(config, dataset), flags, verbose)


def launch(plan: SearchPlan, flags: dict[str, Any] | None = None, verbose: bool = True) -> TuningResult:
    """Creates the run folder, trains the K runs, releases the best: model, score, privacy.json.

    stdout shows nothing that depends on K (no per-run lines, no run count, no search time): those go
    to not_for_release/progress.log, since a console log is easily published with the results."""
    start = time.time()
    console = Progress("tune", 1, enabled=verbose)
    folder = plan.folder
    if _complete(plan):
        console.note(f"{folder.path} already holds this search, complete: nothing to do")
        return _read_result(plan)
    folder.create()
    if flags is not None:
        folder.write_flags(flags)
    folder.write_json(RunFolder.RUN_CONFIG, plan.fingerprint)
    os.makedirs(folder.file(NOT_FOR_RELEASE), exist_ok=True)
    log_path = folder.file(PROGRESS_FILE)
    console.note(f"searching; the runs' progress and scores (not for release, not covered): {log_path}")
    runs_log = Progress("tune", max(1, plan.runs_made), max_lines=1000, printer=_appender(log_path))
    rng = search_rng(plan.config, 2)
    models = {}
    for trial in plan.trials:
        models[trial.index] = _run_trial(plan, trial, rng)
        runs_log.step(trial.index + 1, _trial_text(trial, plan.runs_made))
    selected = _release(plan, models, start)
    console.note("released: " + ("nothing" if selected is None else _selected_text(selected)))
    return TuningResult(folder.path, folder.read_json(RunFolder.PRIVACY), selected, _trial_rows(plan),
                        time.time() - start)  # fmt: skip


def _appender(path: str):
    """A Progress printer that appends each line to `path` (kept across resumed searches)."""

    def write(line: str) -> None:
        with open(path, "a") as f:
            f.write(line + "\n")

    return write


def _run_trial(plan: SearchPlan, trial: Trial, rng: np.random.Generator):
    model = trial.train()
    x_val, y_val = plan.validation
    logits = model.predict(x_val, batch_size=1024, verbose=0)
    correct = float(np.sum(np.argmax(logits, axis=1) == y_val))
    noisy = correct + rng.normal(0.0, plan.config.score_noise * plan.side.score_scale)
    trial.noisy_score = noisy / len(y_val)
    _write_hparams(plan, trial)
    return model


def _release(plan: SearchPlan, models: dict, start: float) -> dict[str, Any] | None:
    """Writes the released outputs (the best run only), not_for_release/ and privacy.json (last)."""
    folder = plan.folder
    selected = None
    if plan.trials:
        best = max(plan.trials, key=lambda t: t.noisy_score)
        model = models[best.index]
        evals = model.evaluate(plan.dataset.x_test, plan.dataset.y_test, verbose=0, batch_size=1024,
                               return_dict=True)  # fmt: skip
        selected = {  # no run index: it would reveal part of K, which the guarantee needs secret
            **best.hparams,
            "noise_multiplier": best.dp.noise_multiplier,
            "noisy_validation_accuracy": best.noisy_score,
            "test_accuracy": float(evals["accuracy"]),
            "test_loss": float(evals["loss"]),
        }
        # from a fresh process: saved_model.pb's function names carry TF's process-wide trace
        # counter, which every run trained here advances (saved here, the model would reveal K)
        save_model_in_fresh_process(model, folder.file(RunFolder.MODEL), folder.file(NOT_FOR_RELEASE))
    folder.write_json(RESULT_FILE, {"selected": selected, "note": _RESULT_NOTE})
    os.makedirs(folder.file(NOT_FOR_RELEASE), exist_ok=True)
    folder.write_text(TRIALS_FILE, csv_text(_trial_rows(plan)))
    folder.write_json(SEARCH_FILE, {"runs_made": plan.runs_made, "wall_time_s": time.time() - start,
                                    "note": _SEARCH_NOTE})  # fmt: skip
    folder.write_privacy(privacy_json(plan))
    return selected


_RESULT_NOTE = (
    "The selected run's configuration and noisy validation accuracy are covered by privacy.json's "
    "epsilon (with its model). test_accuracy is measured on the test split, which took no part in the "
    "search, without noise. not_for_release/ (every run's score, K) is not covered."
)
_SEARCH_NOTE = (
    "runs_made is K, which the guarantee needs secret; the wall time grows with K. Not covered: do not "
    "publish this file."
)


def _trial_rows(plan: SearchPlan) -> list[dict[str, Any]]:
    return [
        {"trial": t.index, **t.hparams, "noise_multiplier": t.dp.noise_multiplier,
         "steps": plan.side.steps(t.dp), "noisy_validation_accuracy": t.noisy_score}
        for t in plan.trials
    ]  # fmt: skip


def _write_hparams(plan: SearchPlan, trial: Trial) -> None:
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    logdir = plan.folder.file(
        os.path.join(NOT_FOR_RELEASE, RunFolder.TENSORBOARD, f"trial_{trial.index:03d}")
    )
    with tf.summary.create_file_writer(logdir).as_default():
        hp.hparams(
            {**trial.hparams, "noise_multiplier": trial.dp.noise_multiplier},
            trial_id=f"trial_{trial.index:03d}",
        )
    writer = tf.summary.create_file_writer(logdir)
    write_scalars(writer, 0, {"noisy_validation_accuracy": trial.noisy_score})
    writer.flush()


def _complete(plan: SearchPlan) -> bool:
    folder = plan.folder
    return os.path.exists(folder.file(RunFolder.PRIVACY)) and os.path.exists(
        folder.file(RunFolder.RUN_CONFIG)
    )


def _read_result(plan: SearchPlan) -> TuningResult:
    result = plan.folder.read_json(RESULT_FILE)
    rows = []
    if os.path.exists(plan.folder.file(TRIALS_FILE)):
        with open(plan.folder.file(TRIALS_FILE), newline="") as f:
            rows = list(csv.DictReader(f))
    search = plan.folder.file(SEARCH_FILE)
    wall_time = plan.folder.read_json(SEARCH_FILE)["wall_time_s"] if os.path.exists(search) else 0.0
    return TuningResult(
        plan.folder.path, plan.folder.read_json(RunFolder.PRIVACY), result["selected"], rows, wall_time
    )


def _hparams_text(hparams: dict[str, Any]) -> str:
    short = {"learning_rate": "lr", "l2_norm_clip": "clip", "batch_size": "batch"}
    return " ".join(f"{short.get(k, k)}={v:g}" for k, v in hparams.items())


def _trial_text(trial: Trial, total: int) -> str:
    return (
        f"run {trial.index + 1}/{total}: {_hparams_text(trial.hparams)} "
        f"noise={trial.dp.noise_multiplier:.3g} "
        f"-> noisy validation accuracy {trial.noisy_score:.3f}"
    )


def _selected_text(selected: dict[str, Any]) -> str:
    skip = ("noise_multiplier", "noisy_validation_accuracy", "test_accuracy", "test_loss")
    hparams = {k: v for k, v in selected.items() if k not in skip}
    return (
        f"{_hparams_text(hparams)}: noisy validation accuracy "
        f"{selected['noisy_validation_accuracy']:.3f}, test accuracy {selected['test_accuracy']:.4f}"
    )
