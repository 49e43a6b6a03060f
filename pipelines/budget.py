"""Epsilon for DP-SGD settings, or the noise for a target epsilon, without training.

  python -m pipelines.budget --num_examples=60000 --batch_size=256 --epochs=60 \
      --noise_multiplier=1.1 --delta=1e-5
  python -m pipelines.budget --num_examples=60000 --batch_size=256 --epochs=60 --target_epsilon=3

Imports neither TensorFlow nor TensorFlow Federated: it answers in about a second.
"""

from __future__ import annotations

import json

from absl import flags

from pipelines import _app, _flags
from privacy.config import EXAMPLE_SAMPLINGS
from privacy.report import budget_report

_BUDGET = _flags.define_budget_flags(
    noise_help="Noise stddev / clip norm.", target_help="Find the smallest noise meeting this epsilon."
)
flags.adopt_module_key_flags(_flags)  # the shared flags above are this binary's too (--help)
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "Training set size N.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Batch size (expected batch size q*N under Poisson sampling).", lower_bound=1
)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Number of epochs.", lower_bound=1)
_SAMPLING = flags.DEFINE_enum(
    "sampling", "poisson", EXAMPLE_SAMPLINGS, "poisson: amplification by sampling; shuffle: none."
)
_OUTPUT = flags.DEFINE_enum("output", "text", ["text", "json"], "Output format.")

flags.mark_flags_as_required(["num_examples", "batch_size", "epochs"])
flags.register_multi_flags_validator(
    ["noise_multiplier", "target_epsilon"],
    lambda f: (f["noise_multiplier"] is None) != (f["target_epsilon"] is None),
    "give exactly one of --noise_multiplier and --target_epsilon",
)
flags.register_multi_flags_validator(
    ["num_examples", "batch_size"],
    lambda f: f["num_examples"] is None or f["batch_size"] is None or f["batch_size"] <= f["num_examples"],
    "--batch_size must be <= --num_examples",
)


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    with _app.bad_input():
        report = budget_report(
            _NUM_EXAMPLES.value,
            _BATCH_SIZE.value,
            _EPOCHS.value,
            _BUDGET.noise_multiplier.value,
            _BUDGET.target_epsilon.value,
            _BUDGET.delta.value,
            _BUDGET.accountant.value,
            _SAMPLING.value,
        )
    if _OUTPUT.value == "json":
        print(json.dumps(report, allow_nan=False))
    else:
        if _BUDGET.target_epsilon.value is not None:
            target, z = _BUDGET.target_epsilon.value, report["noise_multiplier"]
            print(f"noise multiplier for epsilon <= {target}: {z:.4f}")
        print(report["statement"])


def run() -> None:
    _app.run(main, __name__)


if __name__ == "__main__":
    run()
