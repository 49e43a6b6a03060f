"""DP-SGD step time / non-private step time, per model and engine, measured side by side.

  python -m benchmarks.dp_overhead --input_shape=28,28,1 --models=mlp,cnn --output=json
  python -m benchmarks.dp_overhead --input_shape=32,32,3 --models=cnn
  python -m benchmarks.dp_overhead --input_shape=8,8,1 --engines=auto,reference   # the digits shape

Inputs are synthetic at the given shape (10 classes; speed does not depend on the pixel values).
Every repeat times every variant back to back on the same batches (interleaved, so machine load hits
all of them alike); the median per-step time over the repeats is reported, with the ratio to the
non-private step of the same model. Full steps: clipping, noise and the optimizer update, exactly what
`training.centralized` runs. `auto` is measured as its own row (the engine it resolves to is named).
"""

from __future__ import annotations

import json
import statistics
import time

from absl import flags

from pipelines import _app

ENGINES = ("auto", "ghost", "fast", "vectorized", "reference")
_SHAPE = flags.DEFINE_list("input_shape", ["28", "28", "1"], "Input shape, e.g. 28,28,1 (MNIST) or 32,32,3.")
_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"], "Models (builders of models/builders.py).")
_ENGINES = flags.DEFINE_list(
    "engines", ["auto", "ghost", "fast", "vectorized"], f"DP engines, from {ENGINES} (reference is slow)."
)
_BATCH = flags.DEFINE_integer("batch_size", 256, "Batch size.", lower_bound=1)
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timing.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved repeats; the median is reported.", lower_bound=1)
_OUTPUT = flags.DEFINE_enum("output", "text", ["text", "json"], "A table, or one JSON object per line.")
flags.register_validator("engines", lambda v: set(v) <= set(ENGINES), f"engines must be from {ENGINES}")


def _variants(name: str, shape: tuple[int, ...], engines: list[str], batch_size: int, x, y) -> dict:
    """{label: (compiled train step, engine it runs)}: the non-private step and each supported engine."""
    import tensorflow as tf

    from models.builders import build_model
    from privacy.clipping import ENGINES as TABLE
    from privacy.clipping import resolve_engine
    from privacy.config import DpSgdConfig
    from training.train_steps import make_train_steps

    dp = DpSgdConfig(num_examples=100 * batch_size, batch_size=batch_size, epochs=1, noise_multiplier=1.0)
    probe = build_model(name, shape, 10)
    variants = {}
    for engine in ["non-private", *engines]:
        if engine not in ("non-private", "auto") and TABLE[engine].unsupported(probe) is not None:
            continue  # e.g. TF-Privacy's fast engine has no Conv2D
        model = build_model(name, shape, 10)
        step, _ = make_train_steps(
            model, "classification", shape, tf.int32, tf.keras.optimizers.SGD(0.01),
            None if engine == "non-private" else dp, engine, seed=0,
        )  # fmt: skip
        step(x[0], y[0])  # trace and warm up
        resolved = "none" if engine == "non-private" else resolve_engine(engine, probe)
        variants[engine] = (step, resolved)
    return variants


def measure(
    models: list[str], shape: tuple[int, ...], engines: list[str], batch_size: int, steps: int, repeats: int
):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.random((batch_size, *shape), dtype=np.float32)) for _ in range(steps)]
    ys = [tf.constant(rng.integers(0, 10, batch_size).astype(np.int32)) for _ in range(steps)]
    rows = []
    for name in models:
        variants = _variants(name, shape, engines, batch_size, xs, ys)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for label, (step, _) in variants.items():
                t0 = time.perf_counter()
                for x, y in zip(xs, ys):
                    step(x, y)
                times[label].append((time.perf_counter() - t0) / steps)
        base = statistics.median(times["non-private"])
        for label, ts in times.items():
            med = statistics.median(ts)
            rows.append(
                {
                    "model": name,
                    "engine": label,
                    "runs_as": variants[label][1],
                    "input_shape": list(shape),
                    "batch_size": batch_size,
                    "ms_per_step": round(1e3 * med, 3),
                    "non_private_ms_per_step": round(1e3 * base, 3),
                    "ratio": round(med / base, 3),
                    "steps": steps,
                    "repeats": repeats,
                }
            )
    return rows


def main(argv: list[str]) -> None:
    del argv
    _app.import_tensorflow()
    with _app.bad_input():
        shape = tuple(int(v) for v in _SHAPE.value)
    rows = measure(_MODELS.value, shape, _ENGINES.value, _BATCH.value, _STEPS.value, _REPEATS.value)
    if _OUTPUT.value == "json":
        for r in rows:
            print(json.dumps(r))
        return
    print(f"input {shape}, batch {_BATCH.value}, {_STEPS.value} steps x {_REPEATS.value} interleaved repeats")
    print(f"{'model':6} {'engine':12} {'runs as':11} {'ms/step':>9} {'DP / non-private':>17}")
    for r in rows:
        print(
            f"{r['model']:6} {r['engine']:12} {r['runs_as']:11} {r['ms_per_step']:9.2f} {r['ratio']:16.2f}x"
        )


if __name__ == "__main__":
    _app.run(main, __name__)
