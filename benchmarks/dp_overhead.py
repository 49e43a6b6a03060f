"""DP-SGD step time / non-private step time, per model and engine, measured side by side.

  .venv/bin/python -m benchmarks.dp_overhead [--batch_size=256] [--steps=50] [--repeats=5]

Each repeat times every variant back to back on the same batches (digits, the embedded
default), so machine load hits all of them alike; we report the median per-step time and
the ratio to the non-private step of the same model. Full steps: clipping, noise and the
optimizer update, exactly what pipelines.centralized runs.
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch_size", 256, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 30, "Steps per timing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved repeats; the median is reported.")
_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"], "Models to measure.")


def measure(models: list[str], batch_size: int, steps: int, repeats: int) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    from data.datasets import load_digits
    from models.builders import build_model
    from pipelines.centralized import make_train_steps
    from privacy import dp_sgd
    from privacy.config import DpSgdConfig

    data = load_digits()
    rng = np.random.default_rng(0)
    batches = [rng.choice(data.num_train, batch_size, replace=False) for _ in range(steps)]
    xs = [tf.constant(data.x_train[b]) for b in batches]
    ys = [tf.constant(data.y_train[b]) for b in batches]
    dp = DpSgdConfig(num_examples=data.num_train, batch_size=batch_size, epochs=1, noise_multiplier=1.0)
    rows = []
    for name in models:
        variants = {}
        probe = build_model(name, data.input_shape, 10)
        engines = ["reference", "vectorized"]
        engines += ["fast"] if dp_sgd.fast_clipping_supported(probe) else []
        engines += ["ghost"] if dp_sgd.ghost_clipping_supported(probe) else []
        for engine in ["non-private", *engines]:
            model = build_model(name, data.input_shape, 10)
            opt = tf.keras.optimizers.SGD(0.1)
            step, _ = make_train_steps(
                model, "classification", data.input_shape, tf.int32, opt,
                None if engine == "non-private" else dp, engine, seed=0,
            )  # fmt: skip
            step(xs[0], ys[0])  # trace and warm up
            variants[engine] = step
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for engine, step in variants.items():
                t0 = time.perf_counter()
                for x, y in zip(xs, ys):
                    step(x, y)
                times[engine].append((time.perf_counter() - t0) / steps)
        base = statistics.median(times["non-private"])
        for engine, ts in times.items():
            med = statistics.median(ts)
            rows.append({"model": name, "engine": engine, "ms_per_step": 1e3 * med, "ratio": med / base})
    return rows


def main(argv: list[str]) -> None:
    del argv
    from pipelines.absl_tf import import_tensorflow

    import_tensorflow()  # see pipelines/absl_tf.py
    rows = measure(_MODELS.value, _BATCH.value, _STEPS.value, _REPEATS.value)
    print(f"batch {_BATCH.value}, {_STEPS.value} steps x {_REPEATS.value} interleaved repeats (median)")
    print(f"{'model':6} {'engine':12} {'ms/step':>9} {'DP / non-private':>17}")
    # CNN: Conv2D is not in TF-Privacy's fast-clipping registry, so fast/ghost do not apply.
    for r in rows:
        print(f"{r['model']:6} {r['engine']:12} {r['ms_per_step']:9.2f} {r['ratio']:16.2f}x")


if __name__ == "__main__":
    app.run(main)
