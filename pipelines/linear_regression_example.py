"""The seed's linear regression (y = 3x + noise) done right: DP-SGD vs the seed's noisy loop.

    python -m pipelines.linear_regression_example --epsilons=0.5,1,3,8 --seeds=0,1,2

Prints, per seed, the learned slope and intercept (truth: 3, 0) for DP-SGD at each target
epsilon (delta 1e-5, Poisson sampling, RDP accountant), non-private SGD, and the seed's
"gradient + noise, no clipping" loop, whose epsilon is "no guarantee".
"""

from __future__ import annotations

import math

from absl import flags

from pipelines import _app, _flags

_NUM_EXAMPLES = flags.DEFINE_integer(
    "num_examples", 10_000, "Examples generated (80% train, 20% test).", lower_bound=100
)
_EPSILONS = _flags.define_list(
    "epsilons", [0.5, 1.0, 3.0, 8.0], "Target epsilons for DP-SGD.", check=lambda e: 0 < e < math.inf
)
_DELTA = flags.DEFINE_float("delta", 1e-5, "Target delta.", lower_bound=0.0, upper_bound=1.0)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 800, "Expected Poisson batch size.", lower_bound=1)
_EPOCHS = flags.DEFINE_integer("epochs", 10, "Epochs (steps = epochs * N / batch_size).", lower_bound=1)
_CLIP = flags.DEFINE_float("l2_norm_clip", 1.0, "Per-example gradient clip norm C.", lower_bound=0.0)
_LR = flags.DEFINE_float("learning_rate", 1.0, "Learning rate for every method.", lower_bound=0.0)
_SEED_NOISE = flags.DEFINE_float(
    "seed_loop_noise_std", 0.1, "Noise std the seed's loop adds to each gradient.", lower_bound=0.0
)
_ACCOUNTANT = flags.DEFINE_enum("accountant", "rdp", ["rdp", "pld"], "Privacy accountant.")
_SEEDS = _flags.define_list(
    "seeds", [0, 1, 2], "Data/training seeds; one table per seed.", int, lambda s: s >= 0
)
flags.adopt_module_key_flags(_flags)  # the shared flags above are this binary's too (--help)


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    from training import linear_regression as lr

    with _app.bad_input():
        config = lr.ExampleConfig(
            num_examples=_NUM_EXAMPLES.value,
            epsilons=tuple(_flags.parse_list(_EPSILONS.value, float)),
            delta=_DELTA.value,
            batch_size=_BATCH_SIZE.value,
            epochs=_EPOCHS.value,
            l2_norm_clip=_CLIP.value,
            learning_rate=_LR.value,
            seed_loop_noise_std=_SEED_NOISE.value,
            accountant=_ACCOUNTANT.value,
        )
    errors: dict[str, list[float]] = {}
    for seed in _flags.parse_list(_SEEDS.value, int):
        results = lr.run_example(config, seed=seed)
        print(
            f"\nseed {seed}: N = {config.num_examples} ({int(0.8 * config.num_examples)} train), "
            "truth slope 3, intercept 0"
        )
        print(lr.format_table(results))
        for r in results:
            key = r.method if r.target_epsilon is None else f"DP-SGD eps={r.target_epsilon:g}"
            errors.setdefault(key, []).append(r.slope_error)
    print(f"\n|slope - 3| over seeds {','.join(_SEEDS.value)}:  {'mean':>7} {'worst':>7}")
    for key, errs in errors.items():
        print(f"  {key:<62} {sum(errs) / len(errs):>7.4f} {max(errs):>7.4f}")
    print(f"\nseed's loop: {lr.SEED_LOOP_GUARANTEE}.")


def run() -> None:
    _app.run(main, __name__)


if __name__ == "__main__":
    run()
