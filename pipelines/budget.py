"""Epsilon for DP-SGD settings, or the noise for a target epsilon, without training.

  python -m pipelines.budget --num_examples=60000 --batch_size=256 --epochs=60 \
      --noise_multiplier=1.1 --delta=1e-5
  python -m pipelines.budget --num_examples=60000 --batch_size=256 --epochs=60 --target_epsilon=3

Imports neither TensorFlow nor TensorFlow Federated: it answers in about a second.
"""

from __future__ import annotations

import json

from absl import app, flags

from pipelines import cli
from privacy.config import ACCOUNTANTS, EXAMPLE_SAMPLINGS

_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", None, "Training set size N.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Batch size (expected batch size q*N under Poisson sampling).", lower_bound=1
)
_EPOCHS = flags.DEFINE_integer("epochs", None, "Number of epochs.", lower_bound=1)
_NOISE = flags.DEFINE_float("noise_multiplier", None, "Noise stddev / clip norm.", lower_bound=0.0)
_TARGET = flags.DEFINE_float("target_epsilon", None, "Find the smallest noise meeting this epsilon.")
_DELTA = flags.DEFINE_float("delta", 1e-5, "Target delta.")
_ACCOUNTANT = flags.DEFINE_enum("accountant", "rdp", ACCOUNTANTS, "Privacy accountant.")
_SAMPLING = flags.DEFINE_enum(
    "sampling", "poisson", EXAMPLE_SAMPLINGS, "poisson: amplification by sampling; shuffle: none."
)
_OUTPUT = flags.DEFINE_enum("output", "text", ["text", "json"], "Output format.")

flags.mark_flags_as_required(["num_examples", "batch_size", "epochs"])
flags.register_validator("target_epsilon", lambda v: v is None or v > 0, "--target_epsilon must be > 0")
flags.register_validator("delta", lambda v: 0 < v < 1, "--delta must be in (0, 1)")
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


def compute(
    num_examples: int,
    batch_size: int,
    epochs: int,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float,
    accountant: str,
    sampling: str,
) -> dict:
    """The budget report as a plain dict (the library half of this binary)."""
    from privacy import accounting
    from privacy.config import DpSgdConfig

    config = DpSgdConfig(
        num_examples=num_examples,
        batch_size=batch_size,
        epochs=epochs,
        noise_multiplier=noise_multiplier or 0.0,
        delta=delta,
        accountant=accountant,
        sampling=sampling,
    )
    if target_epsilon is not None:
        config = accounting.calibrate_dp_sgd(config, target_epsilon)
    st = accounting.dp_sgd_statement(config)
    return {
        "epsilon": st.epsilon,
        "delta": st.delta,
        "noise_multiplier": config.noise_multiplier,
        "accountant": st.accountant,
        "sampling": st.sampling,
        "sampling_rate": config.sampling_rate,
        "steps": st.steps,
        "epochs": epochs,
        "adjacency": st.adjacency,
        "target_epsilon": target_epsilon,
        "statement": st.as_text(),
    }


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        report = compute(
            _NUM_EXAMPLES.value,
            _BATCH_SIZE.value,
            _EPOCHS.value,
            _NOISE.value,
            _TARGET.value,
            _DELTA.value,
            _ACCOUNTANT.value,
            _SAMPLING.value,
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if _OUTPUT.value == "json":
        print(json.dumps(report))
    else:
        if _TARGET.value is not None:
            print(f"noise multiplier for epsilon <= {_TARGET.value}: {report['noise_multiplier']:.4f}")
        print(report["statement"])


def run() -> None:
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
