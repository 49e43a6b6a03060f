"""The one privacy report: a run's `Guarantee` -> the `privacy.json` dict and its statement text.

Every run that states an epsilon (centralized, federated, the budget calculator, the comparison,
the private search) builds its report here, so every `privacy.json` has the same keys with the
same meaning:

  dp                   true when a DP mechanism ran (false: no guarantee at all)
  epsilon              a number, or null when infinite (then `epsilon_is_infinite` is true)
  epsilon_is_infinite  true for non-private runs and for noise multiplier 0
  delta, accountant    the accountant (rdp or pld) and the delta the epsilon is stated at
  unit, adjacency      "example" or "user"; the neighbouring relation in words
  sampling             poisson, shuffle, uniform or epoch: what the accountant assumed
  noise_multiplier     z: Gaussian noise stddev / l2_norm_clip
  l2_norm_clip         C: the L2 bound on one unit's contribution (gradient or model update)
  steps                steps (centralized) or rounds (federated) accounted
  statement            one sentence saying all of the above, and that the number of units N
                       (num_examples / num_clients, released exactly) is treated as public

Pipelines add their own details (engine, clients_per_round, ...) as extra keys.
Infinity is never written as a bare `Infinity` (which is not JSON).
"""

from __future__ import annotations

import math
from typing import Any

from privacy.accounting import Guarantee

NON_PRIVATE_STATEMENT = "Non-private {what}: no differential-privacy guarantee."


def statement(guarantee: Guarantee, epsilon: float) -> str:
    """The one-sentence privacy statement of a private run."""
    eps = "inf" if math.isinf(epsilon) else f"{epsilon:.4g}"
    text = (
        f"({eps}, {guarantee.delta:g})-DP at the {guarantee.unit} level, "
        f"{guarantee.accountant.upper()} accountant, {guarantee.sampling} sampling, adjacency: "
        f"{guarantee.adjacency_text}, noise multiplier {guarantee.noise_multiplier:.4g}, "
        f"{guarantee.steps} steps."
    )
    public = (
        f"The number of {guarantee.unit}s (and what follows from it: sampling rate, steps, noise "
        "calibration) is treated as public."
    )
    return " ".join([text, *guarantee.notes, public])


def epsilon_fields(epsilon: float) -> dict[str, Any]:
    """`epsilon` as valid JSON: a number, or null plus `epsilon_is_infinite: true`."""
    infinite = math.isinf(epsilon)
    return {"epsilon": None if infinite else float(epsilon), "epsilon_is_infinite": infinite}


def privacy_report(guarantee: Guarantee, what: str = "training", **details: Any) -> dict[str, Any]:
    """The privacy.json dict of a run (see the module docstring for the keys).

    `what` names the run in the non-private statement; `details` are pipeline-specific keys
    added next to the common ones.
    """
    if not guarantee.is_private:
        return {
            "dp": False,
            **epsilon_fields(math.inf),
            "delta": None,
            "accountant": None,
            "unit": guarantee.unit,
            "adjacency": None,
            "sampling": guarantee.sampling,
            "noise_multiplier": 0.0,
            "l2_norm_clip": None,
            "steps": guarantee.steps,
            **details,
            "statement": NON_PRIVATE_STATEMENT.format(what=what),
        }
    epsilon = guarantee.epsilon()
    return {
        "dp": True,
        **epsilon_fields(epsilon),
        "delta": guarantee.delta,
        "accountant": guarantee.accountant,
        "unit": guarantee.unit,
        "adjacency": guarantee.adjacency_text,
        "sampling": guarantee.sampling,
        "noise_multiplier": guarantee.noise_multiplier,
        "l2_norm_clip": guarantee.l2_norm_clip,
        "steps": guarantee.steps,
        **details,
        "statement": statement(guarantee, epsilon),
    }


def reported_epsilon(report: dict[str, Any]) -> float:
    """The epsilon of a privacy.json dict as a float (inf when infinite)."""
    if report.get("epsilon_is_infinite") or report.get("epsilon") is None:
        return math.inf
    return float(report["epsilon"])


def randomness_report(secure: bool) -> dict[str, Any]:
    """privacy.json's `randomness`: where the noise and the sampling the guarantee relies on came from."""
    if secure:
        return {
            "mode": "secure",
            "note": "DP noise, batch/client sampling and local-DP noise were drawn from OS entropy and "
            "not recorded (the generators are TensorFlow's and numpy's, seeded from OS entropy).",
        }
    return {
        "mode": "seeded",
        "note": "DP noise and sampling were drawn from the run's --seed (reproducible). The guarantee "
        "assumes the adversary knows neither: it holds only while the seed stays secret; use "
        "--secure_noise for a release.",
    }


def budget_report(
    num_examples: int,
    batch_size: int,
    epochs: int,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    delta: float = 1e-5,
    accountant: str = "rdp",
    sampling: str = "poisson",
) -> dict[str, Any]:
    """The epsilon of DP-SGD settings (or the noise for a target) without training: privacy.json's
    keys plus the target. One function for `pipelines.budget` and the Python API (`ppml.budget`)."""
    from privacy import accounting
    from privacy.config import DpSgdConfig

    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("give exactly one of noise_multiplier and target_epsilon")
    if batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds num_examples {num_examples}")
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
    report = privacy_report(
        accounting.dp_sgd_guarantee(config),
        sampling_rate=config.sampling_rate,
        epochs=epochs,
        num_examples=num_examples,
        target_epsilon=target_epsilon,
    )
    del report["l2_norm_clip"]  # epsilon depends on z alone; no clip was given
    return report
