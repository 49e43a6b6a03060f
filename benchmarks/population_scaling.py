"""Round time and peak memory of the federated pipeline vs the size of the client population.

  python -m benchmarks.population_scaling                       # 1,000 vs 10,000 clients, 100/round
  python -m benchmarks.population_scaling --populations=1000,10000,50000 --rounds=10

Each population is synthetic (20 features, 4 classes, `--examples_per_client` each), runs
through the real `training.federated.run` (uniform sampling of `--clients_per_round`), and
reports the median round time (first round of each run excluded: it traces the computation) and the peak
resident memory of this process plus its TFF worker, sampled every 50 ms. Client datasets
are built lazily, so the round time should not grow with the population, and memory only
by the (small) numpy arrays of the population.
"""

from __future__ import annotations

import tempfile

import numpy as np
from absl import flags

from benchmarks._memory import PeakRss
from pipelines import _app

_POPULATIONS = flags.DEFINE_list("populations", ["1000", "10000"], "Population sizes to compare.")
_CPR = flags.DEFINE_integer("clients_per_round", 100, "Clients per round.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 6, "Rounds per population (the first is not timed).", lower_bound=2)
_EXAMPLES = flags.DEFINE_integer("examples_per_client", 20, "Examples per client.", lower_bound=1)
_REPEATS = flags.DEFINE_integer(
    "repeats",
    2,
    "Runs per population, interleaved (1k, 10k, 1k, 10k) so machine load hits both.",
    lower_bound=1,
)
_MEMORY_LIMIT_GB = 3.0


def synthetic_population(num_clients: int, per_client: int, seed: int = 0):
    from data.clients import ClientPopulation

    rng = np.random.default_rng(seed)
    n = num_clients * per_client
    w = rng.normal(size=(20, 4)).astype(np.float32)
    x = rng.normal(size=(n, 20)).astype(np.float32)
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(n, 4)), axis=1).astype(np.int32)
    x_test = rng.normal(size=(2000, 20)).astype(np.float32)
    y_test = np.argmax(x_test @ w, axis=1).astype(np.int32)
    parts = np.arange(n).reshape(num_clients, per_client)
    return ClientPopulation("synthetic", x, y, list(parts), x_test, y_test, num_classes=4)


def main(argv: list[str]) -> None:
    del argv
    from pipelines._app import import_tensorflow

    import_tensorflow()  # before anything imports TF inside main() (see pipelines/_app.py)
    from training import federated

    sizes = [int(p) for p in _POPULATIONS.value]
    times: dict[int, list[float]] = {size: [] for size in sizes}
    peaks: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as out, PeakRss() as rss:
        populations = {size: synthetic_population(size, _EXAMPLES.value) for size in sizes}
        for rep in range(_REPEATS.value):
            for size in sizes:
                config = federated.FederatedConfig(
                    dataset="synthetic_classification",
                    model="mlp",
                    num_clients=size,
                    clients_per_round=_CPR.value,
                    rounds=_ROUNDS.value,
                    partition="iid",
                    client_sampling="uniform",
                    client_epochs=1,
                    eval_every=_ROUNDS.value,
                    checkpoint_every=_ROUNDS.value,
                    seed=rep,
                    root_output_dir=out,
                    experiment_name=f"pop{size}_{rep}",
                )
                result = federated.run(config, populations[size])
                times[size].extend(r["round_time_s"] for r in result.unreleased_history[1:])
                peaks[size] = rss.peak
                print(
                    f"population {size} (run {rep + 1}): median round {np.median(times[size]):.3f} s",
                    flush=True,
                )
    print(
        "\npopulation  clients/round  median round time (s)  [p25, p75]   "
        "peak RSS so far (GB, process + worker)"
    )
    for size in sizes:
        t = np.array(times[size])
        p25, p75 = np.percentile(t, [25, 75])
        print(
            f"{size:10d}  {_CPR.value:13d}  {np.median(t):12.3f}  [{p25:.3f}, {p75:.3f}]  "
            f"{peaks[size] / 1e9:10.2f}"
        )
    ratio = np.median(times[sizes[-1]]) / np.median(times[sizes[0]])
    peak_gb = rss.peak / 1e9
    print(f"\nmedian round time ratio {sizes[-1]} vs {sizes[0]} clients: {ratio:.2f}x")
    print(
        f"peak RSS {peak_gb:.2f} GB "
        f"({'under' if peak_gb < _MEMORY_LIMIT_GB else 'OVER'} {_MEMORY_LIMIT_GB} GB)"
    )


if __name__ == "__main__":
    _app.run(main, __name__)
