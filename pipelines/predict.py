"""Answer queries to a trained model with prediction-level DP, under a persisted total budget.

    python -m pipelines.predict --model_dir=runs/exp/model --dataset=digits --num_queries=100 \\
        --release=label --prediction_epsilon=0.5 --prediction_budget=100 --output_file=answers.csv

Each query costs --prediction_epsilon (basic composition). The ledger
<model_dir>/../prediction_ledger.json fixes the total budget on first use; a batch that
would take the total past it is refused as a whole (no query answered) with exit code 3 and one
line. Charge first: the batch's cost is committed to the ledger before any answer exists outside
this process, and only then are the answers written (to --output_file, atomically, or to stdout as
CSV, with the summary on stderr). So a run killed or stalled at any point never leaves an uncharged
answer. If writing fails after the charge, one line says the budget was charged but the answers were
not delivered (exit code 4): an undelivered answer loses budget, never privacy. On standard output
that includes a reader that closes the pipe early (`predict ... | head -c 3000`): the one line says
how many answers it read in full before closing and how many were charged but not delivered (exit
code 4, no traceback). Answers that fit in the pipe's buffer (about 64 KiB) all reach the pipe before
the reader can close it, so that case cannot be told from a full read: it exits 0.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from pipelines import _app

EXIT_BUDGET_EXCEEDED = 3
EXIT_NOT_DELIVERED = 4  # charged, but the answers (all or some) were not delivered

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Keras SavedModel folder (a run's model/).", required=True
)
_DATASET = flags.DEFINE_string("dataset", None, "Answer queries from this dataset's test split.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset cache folder, or the CSV file/folder.")
_INPUT_FILE = flags.DEFINE_string(
    "input_file", None, "Queries from a .npy or .csv file (optional 'label' column)."
)
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 100, "Queries to answer in this run.", lower_bound=1)
_RELEASE = flags.DEFINE_enum(
    "release", "label", ["label", "scores"], "Release a label or noisy class scores."
)
_MECHANISM = flags.DEFINE_string(
    "mechanism",
    None,
    "label: exponential (default) | noisy_max_laplace | randomized_response; "
    "scores: laplace (default) | gaussian.",
)
_EPSILON = flags.DEFINE_float("prediction_epsilon", 1.0, "Epsilon spent per query.")
_DELTA = flags.DEFINE_float("prediction_delta", 1e-8, "Delta per query (Gaussian score release only).")
_BUDGET = flags.DEFINE_float(
    "prediction_budget", None, "Total epsilon for this model's answers; fixed by the ledger on first use."
)
_DELTA_BUDGET = flags.DEFINE_float(
    "prediction_delta_budget", None, "Total delta (Gaussian scores); fixed on first use (default 0 then)."
)
_OUTPUT_FILE = flags.DEFINE_string(
    "output_file", None, "CSV of the released answers (one row per query), written after the charge."
)
_SEED = flags.DEFINE_integer(
    "seed", None, "Noise seed, FOR TESTS ONLY: predictable noise can be subtracted. Default: OS entropy."
)
_DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Seed of the dataset's train/test split.")

flags.register_validator("prediction_epsilon", lambda v: v > 0, message="--prediction_epsilon must be > 0")
flags.register_validator(
    "prediction_budget", lambda v: v is None or v > 0, message="--prediction_budget must be > 0"
)
flags.register_multi_flags_validator(
    ["dataset", "input_file"],
    lambda f: (f["dataset"] is None) != (f["input_file"] is None),
    message="give exactly one of --dataset or --input_file",
)


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    import numpy as np

    from privacy.prediction_ledger import BudgetExceededError, PredictionLedger, ledger_path
    from privacy.prediction_release import PredictionConfig
    from training import prediction

    mechanism = _MECHANISM.value or ("exponential" if _RELEASE.value == "label" else "laplace")
    with _app.bad_input():
        config = PredictionConfig(
            release=_RELEASE.value,
            mechanism=mechanism,
            epsilon=_EPSILON.value,
            delta=_DELTA.value if (_RELEASE.value == "scores" and mechanism == "gaussian") else 0.0,
        )
        prediction.check_model_dir(_MODEL_DIR.value)
        delivery = prediction.Delivery(_OUTPUT_FILE.value)
        ledger = PredictionLedger(ledger_path(_MODEL_DIR.value))
        try:
            ledger.check(_NUM_QUERIES.value, config, _BUDGET.value, _DELTA_BUDGET.value)  # before heavy work
            queries = (_NUM_QUERIES.value, _DATASET.value, _DATA_DIR.value, _INPUT_FILE.value)
            x, labels = prediction.load_queries(*queries, seed=_DATA_SEED.value, model_dir=_MODEL_DIR.value)
            rng = None
            if _SEED.value is not None:
                print("predict: warning: --seed makes the noise predictable (tests only)", file=sys.stderr)
                rng = np.random.default_rng(_SEED.value)
            result = prediction.answer_queries(
                _MODEL_DIR.value, x, labels, config, _BUDGET.value, _DELTA_BUDGET.value, rng, delivery
            )
        except BudgetExceededError as e:
            raise _app.Exit(str(e), code=EXIT_BUDGET_EXCEEDED) from None
        except prediction.NotDeliveredError as e:
            raise _app.Exit(str(e), code=EXIT_NOT_DELIVERED) from None
    # the summary goes to stderr when the answers themselves went to stdout (all of them: if some were
    # not delivered, NotDeliveredError above said so in one line instead)
    state = result.ledger
    lines = [
        f"answered {len(result.released)} queries: {config.describe()}",
        f"prediction budget: spent epsilon {float(state.epsilon_spent):.6g} "
        f"of {float(state.epsilon_budget):.6g}"
        + (
            f", delta {float(state.delta_spent):.3g} of {float(state.delta_budget):.3g}"
            if config.uses_delta
            else ""
        )
        + f" ({state.queries_answered} queries in total; {state.affordable_queries(config)} more affordable)",
    ]
    if result.accuracy is not None:
        lines.append(f"accuracy of released labels vs true labels: {result.accuracy:.4f}")
    if _OUTPUT_FILE.value:
        lines.append(f"released answers written to {_OUTPUT_FILE.value}")
    _print_summary(lines, sys.stdout if _OUTPUT_FILE.value else sys.stderr)


def _print_summary(lines: list[str], out) -> None:
    """The summary, to a stream whose reader may be gone (`| head -1`): the answers were delivered, so
    that is no failure; the stream then points at /dev/null, so the exit's flush does not fail on it."""
    try:
        out.write("".join(line + "\n" for line in lines))
        out.flush()
    except BrokenPipeError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, out.fileno())
        os.close(null)


def run() -> None:
    _app.run(main, __name__)


if __name__ == "__main__":
    run()
