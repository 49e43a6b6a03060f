"""Canaries in a training run: insert them, observe them, and write the run's audit.json.

Two kinds (`privacy/auditing/canaries.py`), each canary inserted with probability 1/2 from a recorded
seed: `--audit_canaries=M` gradient canaries (Dirac centrally; spanning two tensors of the model's
update federated), observed at every step (white box, the bound
with power), and `--audit_example_canaries=K` out-of-distribution example canaries (centralized) or
`--audit_canary_clients=K` canary clients (federated), scored on the final model (black box).
Inserted canaries are training examples (users) for the accountant: N counts them, and they are
sampled like any other, so the guarantee claimed covers them. After training, the one-run lower
bound of each kind goes to `audit.json` beside `privacy.json`, with the claimed epsilon; a bound
above the claim prints a loud warning (evidence of a bug) and is marked in the file.

A canary is inserted or left out (add/remove). Under `--sampling=shuffle` the claim is made for
replace-one adjacency (sensitivity 2C per epoch); an inserted canary adds at most C to one batch
per epoch, a change within that sensitivity, so the claimed epsilon bounds what the audit can show
there too.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

import numpy as np

from data.datasets import Dataset
from privacy.auditing.canaries import ExampleCanaries, GradientCanaries, UpdateCanaries, audit_scores

AUDIT_FILE = "audit.json"
WHITE_BOX_STEPS = (
    "white-box: gradient (Dirac) canaries, score = sum over steps of the noisy update at the canary's "
    "coordinate"
)
WHITE_BOX_AGGREGATOR = (
    "white-box: canary users whose updates span two tensors of the model's update, through the run's DP "
    "aggregator (same factory, noise, clip, sampling and rounds), score = sum over rounds of the aggregate "
    "projected on the canary's direction"
)
BLACK_BOX_EXAMPLES = (
    "black-box: out-of-distribution example canaries, score = -loss of the final model on the canary's label"
)
BLACK_BOX_CLIENTS = (
    "black-box: canary clients holding out-of-distribution examples, score = -mean loss of the final "
    "model on the client's label"
)


@dataclasses.dataclass(frozen=True)
class RunCanaries:
    """A centralized run's audit canaries: inserted example canaries are rows appended to the training
    set; inserted gradient canaries are virtual examples after every row (unit indices num_rows...),
    sampled like the rest."""

    examples: ExampleCanaries | None
    gradients: GradientCanaries | None
    num_rows: int

    @property
    def num_units(self) -> int:
        """Training examples for the accountant: every row plus every inserted gradient canary."""
        return self.num_rows + (self.gradients.num_inserted if self.gradients else 0)

    def split(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A sampled batch of unit indices -> (row indices, mask of the gradient canaries in it)."""
        if self.gradients is None:
            return idx, None
        mask = np.zeros(len(self.gradients.inserted), np.float32)
        mask[np.flatnonzero(self.gradients.inserted)[idx[idx >= self.num_rows] - self.num_rows]] = 1.0
        return idx[idx < self.num_rows], mask


def insert_canaries(
    dataset: Dataset, num_gradient: int, num_example: int, seed: int, model, clip_norm: float
) -> tuple[Dataset, RunCanaries]:
    """The training set with the inserted example canaries appended, and the run's canaries.

    Gradient canaries take `num_gradient` distinct coordinates of `model`'s trainable parameters and
    norm C (`clip_norm`).
    """
    if dataset.task != "classification":
        raise ValueError("audit canaries need a classification dataset (canary scores are label losses)")
    examples = gradients = None
    if num_gradient:
        num_parameters = sum(v.shape.num_elements() for v in model.trainable_variables)
        gradients = GradientCanaries.make(num_gradient, num_parameters, clip_norm, seed)
    if num_example:
        examples = ExampleCanaries.make(num_example, dataset.input_shape, dataset.num_classes, seed)
        x = np.concatenate([dataset.x_train, examples.x_inserted.astype(dataset.x_train.dtype)])
        y = np.concatenate([dataset.y_train, examples.y_inserted.astype(dataset.y_train.dtype)])
        dataset = dataclasses.replace(dataset, x_train=x, y_train=y, client_ids=None)
    return dataset, RunCanaries(examples, gradients, dataset.num_train)


def audit_seed(seed: int) -> int:
    """The canaries' seed (which are inserted, their inputs and coordinates), from the run seed even in
    --secure_noise runs: the auditor must know it, a resumed run must insert the same canaries, and
    the guarantee does not rely on it (the canaries are the auditor's own data; the noise and the
    sampling keep their own randomness). Recorded in audit.json."""
    return int(seed) + 0xA0D17


@dataclasses.dataclass
class WhiteBoxObserver:
    """Accumulates each white-box canary's score: the observed update along its direction, every step."""

    canaries: GradientCanaries | UpdateCanaries
    scores: np.ndarray = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.scores = np.zeros(len(self.canaries.inserted))

    def add(self, observed: Any) -> None:
        self.scores += np.asarray(observed, dtype=np.float64)


def audit_record(
    claimed_epsilon: float,
    delta: float,
    white_box: tuple[WhiteBoxObserver, str] | None,
    black_box: tuple[ExampleCanaries, np.ndarray, str] | None,
) -> dict[str, Any]:
    """audit.json: per kind, the one-run bound; on top, the white-box one (the one with power).

    `white_box` is (observer, mode); `black_box` is (canaries, final-model logits on them, mode).
    """
    claim = None if math.isinf(claimed_epsilon) else float(claimed_epsilon)
    record: dict[str, Any] = {"claimed_epsilon": claim, "delta": delta, "kinds": {}}
    if white_box is not None:
        observer, mode = white_box
        canaries = observer.canaries
        record["kinds"]["white_box"] = audit_scores(
            observer.scores, canaries.inserted, delta, claim, mode, canaries.seed
        )
    if black_box is not None:
        examples, logits, mode = black_box
        record["kinds"]["black_box"] = audit_scores(
            examples.scores(logits), examples.inserted, delta, claim, mode, examples.seed
        )
    primary = record["kinds"].get("white_box") or record["kinds"]["black_box"]
    record.update({k: primary[k] for k in PRIMARY_KEYS})
    record["exceeds_claim"] = any(k["exceeds_claim"] for k in record["kinds"].values())
    return record


PRIMARY_KEYS = (
    "epsilon_lower_bound",
    "epsilon_ceiling",
    "mode",
    "significance",
    "num_canaries",
    "guesses",
    "correct",
    "method",
)


def write_audit(folder, record: dict[str, Any], privacy: dict, tb, step: int, label: str) -> None:
    """audit.json in the run folder, its bound in privacy.json (`audit`) and TensorBoard, and the warning."""
    import tensorflow as tf

    folder.write_json(AUDIT_FILE, record)
    privacy["audit"] = summary(record)
    if tb is not None:
        with tb.as_default(step=step):
            for name, kind in record["kinds"].items():
                tf.summary.scalar(f"audit/{name}_epsilon_lower_bound", kind["epsilon_lower_bound"])
    warn_if_refuted(record, label)


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What privacy.json carries of the audit: the bound, the mode that produced it, the verdict."""
    return {k: record[k] for k in ("epsilon_lower_bound", "epsilon_ceiling", "mode", "exceeds_claim")}


def audit_text(record: dict[str, Any]) -> str:
    """One line for the console: the bound, its mode and confidence, against the claim."""
    kind = record["mode"].split(":")[0]
    claim = record["claimed_epsilon"]
    versus = "no claim (non-private)" if claim is None else f"claimed epsilon {claim:.3f}"
    verdict = " EXCEEDS THE CLAIM" if record["exceeds_claim"] else ""
    return (
        f"canary audit ({kind}, {record['num_canaries']} canaries, {record['correct']}/{record['guesses']} "
        f"correct guesses): epsilon lower bound {record['epsilon_lower_bound']:.3f} at "
        f"{1 - record['significance']:.0%} confidence vs {versus}{verdict}"
    )


def warn_if_refuted(record: dict[str, Any], label: str) -> None:
    """A lower bound above the claimed epsilon is evidence of a bug: say so, loudly."""
    for name, kind in record["kinds"].items():
        if kind["exceeds_claim"]:
            bound, claim = kind["epsilon_lower_bound"], kind["claimed_epsilon"]
            print(
                f"[{label}] WARNING: the {name} audit's epsilon lower bound {bound:.3f} EXCEEDS the "
                f"claimed epsilon {claim:.3f}: evidence that this run is not as private as reported "
                "(noise, clipping or accounting bug). Do not release it.",
                file=sys.stderr,
                flush=True,
            )
