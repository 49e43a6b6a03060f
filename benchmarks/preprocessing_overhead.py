"""How much a table's DP preprocessing adds to a run: fit + encode vs the training itself, side by side.

    python -m benchmarks.preprocessing_overhead [--rows=100000 --columns=50 --output=json]

Builds a generated table (numeric columns on scales from 1e-3 to 1e4 with 5% missing values, a fifth
of the columns categorical), loads it as a DP run on it would (`data.table_files`), then times in one
process: the private preprocessing (histograms, noise, bounds, partition selection, encoding of the
training and test rows) and a whole DP run on the table (reading it, preprocessing, DP-SGD with the
tabular recipe on a logistic model, evaluation, saving). Prints both and their ratio.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags

_ROWS = flags.DEFINE_integer("rows", 100_000, "Rows of the generated table.")
_COLUMNS = flags.DEFINE_integer("columns", 50, "Feature columns of the generated table.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Training epochs (default: the tabular recipe's).")
_OUTPUT = flags.DEFINE_enum("output", "text", ["text", "json"], "Output format.")


def generated_table(rows: int, columns: int, seed: int = 0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    data, signal = {}, np.zeros(rows)
    for j in range(columns):
        if j % 5 == 4:
            values = rng.choice(np.array([f"v{k}" for k in range(8)], dtype=object), rows)
            signal += (values == "v1") * 0.5
        else:
            scale = 10.0 ** rng.uniform(-3, 4)
            values = rng.normal(scale * 3, scale, rows)
            signal += (values - scale * 3) / scale * (0.3 if j % 2 else -0.2)
            values[rng.random(rows) < 0.05] = np.nan
        data[f"c{j}"] = values
    data["label"] = (signal + rng.normal(0, 1, rows) > 1.0).astype(int)
    return pd.DataFrame(data)


def measure(rows: int, columns: int, epochs: int | None) -> dict:
    from data.datasets import load_dataset
    from training import centralized, table_preprocessing

    folder = tempfile.mkdtemp(prefix="table-bench-")
    path = os.path.join(folder, "table.csv")
    generated_table(rows, columns).to_csv(path, index=False)
    config = centralized.CentralizedConfig(
        dataset="csv", model="logistic", dp=True, target_epsilon=3.0, epochs=epochs, root_output_dir=folder
    )
    start = time.perf_counter()
    loaded = load_dataset("csv", path)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    encoded, _ = table_preprocessing.fit_for_run(loaded, "private", True, None, 3.0, 1e-5, None, 0)
    preprocessing_s = time.perf_counter() - start
    start = time.perf_counter()
    result = centralized.run(
        config, load_dataset("csv", path), verbose=False
    )  # load + preprocess + train + save
    run_s = time.perf_counter() - start
    return {
        "rows": rows,
        "columns": columns,
        "encoded_features": int(encoded.x_train.shape[1]),
        "epochs": result.privacy["epochs"],
        "batch_size": result.privacy["batch_size"],
        "load_s": load_s,
        "preprocessing_s": preprocessing_s,
        "run_s": run_s,
        "ratio": preprocessing_s / run_s,
    }


def main(argv: list[str]) -> None:
    del argv
    from pipelines import _app

    _app.import_tensorflow()  # before anything else imports TF (see pipelines/_app.py)
    result = measure(_ROWS.value, _COLUMNS.value, _EPOCHS.value)
    if _OUTPUT.value == "json":
        print(json.dumps(result))
        return
    print(
        f"{result['rows']} rows x {result['columns']} columns ({result['encoded_features']} features): "
        f"preprocessing {result['preprocessing_s']:.2f} s of a {result['run_s']:.1f} s DP run "
        f"({result['epochs']} epochs, batch {result['batch_size']}; "
        f"reading the CSV: {result['load_s']:.1f} s): "
        f"ratio {result['ratio']:.3f}"
    )


if __name__ == "__main__":
    app.run(main)
