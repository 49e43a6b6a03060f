"""Throughput of a FedAvg round vs centralized Keras training on the same examples, and TFF's fixed cost.

  python -m benchmarks.federated_vs_centralized                        # digits, 300 clients, 30/round
  python -m benchmarks.federated_vs_centralized --shape=emnist          # 3,400 EMNIST-shaped writers, CNN
  python -m benchmarks.federated_vs_centralized --output=json           # one JSON object

One run measures both. FedAvg: examples processed per second of a round (the round's clients'
examples x client_epochs, over the round's wall time, first rounds excluded: they trace and
compile). Centralized: `model.fit` of the same model on exactly the examples of those rounds, same
batch size, epochs and SGD learning rate. `ratio` is federated / centralized throughput.

`fixed_cost_per_client_s`: a round whose clients hold ONE example each, divided by the clients per
round: what TFF costs per client whatever the client holds. Every client-run setting (TFF's client
loop: iterator or reduce; tf.data's graph rewrites on client datasets: off or on) is timed side by
side in the same run (`variants`); the first is the pipeline's default, chosen as the fastest measured
(the README's table), and all compute the same thing.
`peak_memory_gb`: the largest resident memory of this process and its TFF worker together.
"""

from __future__ import annotations

import json
import tempfile
import time

import numpy as np
from absl import flags

from benchmarks._memory import PeakRss
from pipelines import _app

SHAPES = {  # per-shape defaults: (population, model, clients, per round, epochs, batch, timed rounds)
    "digits": dict(model="mlp", num_clients=300, clients_per_round=30, client_epochs=5, batch=10, rounds=8),
    "emnist": dict(model="cnn", num_clients=0, clients_per_round=100, client_epochs=1, batch=20, rounds=3),
}
VARIANTS = [("iterator", False), ("iterator", True), ("reduce", False), ("reduce", True)]  # first: default

_SHAPE = flags.DEFINE_enum("shape", "digits", list(SHAPES), "digits, or emnist (synthetic_emnist, CNN).")
_OUTPUT = flags.DEFINE_enum("output", "text", ["text", "json"], "text, or one JSON object.")
_CPR = flags.DEFINE_integer(
    "clients_per_round", None, "Clients per round (default by --shape).", lower_bound=1
)
_ROUNDS = flags.DEFINE_integer("rounds", None, "Timed rounds (default by --shape).", lower_bound=1)
_VARIANTS = flags.DEFINE_bool("variants", True, "Also time every client-run setting side by side.")
_WARMUP = 2


def _population(shape: dict):
    from data.clients import from_dataset
    from data.datasets import load_digits
    from data.synthetic_emnist import SyntheticEmnistPopulation

    if _SHAPE.value == "emnist":
        return SyntheticEmnistPopulation()
    return from_dataset(load_digits(), "dirichlet", shape["num_clients"], alpha=1.0, seed=0)


def _config(shape: dict, cpr: int, rounds: int, out: str, name: str, variant, **overrides):
    from training import federated

    settings = dict(
        dataset="synthetic_emnist" if _SHAPE.value == "emnist" else "digits",
        model=shape["model"], rounds=rounds, client_sampling="uniform", eval_every=rounds,
        num_clients=shape["num_clients"], clients_per_round=cpr,
        partition="natural" if _SHAPE.value == "emnist" else "dirichlet",
        client_epochs=shape["client_epochs"], client_batch_size=shape["batch"], checkpoint_every=rounds,
        root_output_dir=out, experiment_name=name, client_loop=variant[0],
        client_data_optimizations=variant[1],
    )  # fmt: skip
    return federated.FederatedConfig(**(settings | overrides))


def _tiny(pop, cpr: int):
    """`cpr` clients holding one example each (the first example of the first writers)."""
    from data.clients import ClientPopulation

    xs, ys = zip(*(pop.client_examples(c) for c in range(cpr)), strict=True)
    x, y = np.concatenate([a[:1] for a in xs]), np.concatenate([b[:1] for b in ys])
    return ClientPopulation(pop.name, x, y, [np.array([i]) for i in range(cpr)], pop.x_test, pop.y_test,
                            pop.num_classes)  # fmt: skip


def _timed(config, pop) -> list[dict]:
    from training import federated

    return federated.run(config, pop, verbose=False).unreleased_history[_WARMUP:]


def _centralized_seconds(tf, pop, shape: dict, x, y, learning_rate: float) -> float:
    """Keras fit of the same model on the same examples, same batch size, epochs and SGD rate."""
    from models.builders import build_model

    model = build_model(shape["model"], pop.input_shape, pop.num_classes, seed=0)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[: shape["batch"] * 4], y[: shape["batch"] * 4], batch_size=shape["batch"], verbose=0)
    t0 = time.time()
    model.fit(x, y, batch_size=shape["batch"], epochs=shape["client_epochs"], verbose=0, shuffle=True)
    return time.time() - t0


def measure() -> dict:
    """Every number of the benchmark, in one dict (the JSON output)."""
    tf = _app.import_tensorflow()
    from privacy.sampling import sample_clients
    from training import federated

    shape = SHAPES[_SHAPE.value]
    cpr, rounds = _CPR.value or shape["clients_per_round"], _ROUNDS.value or shape["rounds"]
    pop = _population(shape)
    variants = VARIANTS if _VARIANTS.value else VARIANTS[:1]
    rows = []
    with tempfile.TemporaryDirectory() as out, PeakRss() as memory:
        for i, variant in enumerate(variants):
            cfg = _config(shape, cpr, _WARMUP + rounds, out, f"run{i}", variant)
            timed = _timed(cfg, pop)
            tiny_cfg = _config(shape, cpr, _WARMUP + rounds, out, f"tiny{i}", variant, num_clients=cpr,
                               partition="iid", client_epochs=1, dataset="digits")  # fmt: skip
            tiny = _timed(tiny_cfg, _tiny(pop, cpr))
            rows.append({
                "client_loop": variant[0],
                "client_data_optimizations": variant[1],
                "timed": timed,
                "fixed_cost_per_client_s": float(np.mean([r["round_time_s"] for r in tiny])) / cpr,
                "round_s": float(np.mean([r["round_time_s"] for r in timed])),
            })  # fmt: skip
            if i == 0:
                config = cfg
        peak = memory.peak
    best = rows[0]
    fed_examples = sum(r["train_num_examples"] for r in best["timed"])
    fed_time = sum(r["round_time_s"] for r in best["timed"])
    dp = federated.dp_config(config, pop.num_clients)
    clients = [c for r in range(_WARMUP, _WARMUP + rounds) for c in sample_clients(dp, r, config.seed)]
    xs, ys = zip(*(pop.client_examples(int(c)) for c in clients), strict=True)
    central_time = _centralized_seconds(tf, pop, shape, np.concatenate(xs), np.concatenate(ys),
                                        config.client_learning_rate)  # fmt: skip
    central_rate = sum(len(y) for y in ys) * shape["client_epochs"] / central_time
    return {
        "shape": _SHAPE.value,
        "model": shape["model"],
        "num_clients": pop.num_clients,
        "clients_per_round": cpr,
        "client_epochs": shape["client_epochs"],
        "client_batch_size": shape["batch"],
        "timed_rounds": rounds,
        "client_loop": best["client_loop"],
        "client_data_optimizations": best["client_data_optimizations"],
        "ratio": fed_examples / fed_time / central_rate,
        "round_s": fed_time / len(best["timed"]),
        "fixed_cost_per_client_s": best["fixed_cost_per_client_s"],
        "federated_examples_per_s": fed_examples / fed_time,
        "centralized_examples_per_s": central_rate,
        "peak_memory_gb": peak / 2**30,
        "variants": [
            {k: v for k, v in r.items() if k != "timed"} for r in rows
        ],
    }  # fmt: skip


def _text(m: dict) -> str:
    lines = [
        f"setting: {m['shape']}, {m['num_clients']} clients, {m['clients_per_round']}/round, "
        f"model {m['model']}, {m['client_epochs']} client epochs, batch {m['client_batch_size']}; "
        f"{m['timed_rounds']} timed rounds",
        f"federated:   {m['federated_examples_per_s']:9.0f} examples/s ({m['round_s']:.3f} s per round)",
        f"centralized: {m['centralized_examples_per_s']:9.0f} examples/s",
        f"ratio federated / centralized = {m['ratio']:.3f}",
        f"fixed cost per client per round: {1000 * m['fixed_cost_per_client_s']:.2f} ms; peak memory "
        f"(process + TFF worker) {m['peak_memory_gb']:.2f} GB",
        "client-run settings, side by side (first = the pipeline's default):",
    ]
    for v in m["variants"]:
        rewrites = "on" if v["client_data_optimizations"] else "off"
        lines.append(
            f"  loop={v['client_loop']:8s} tf.data rewrites={rewrites:3s}  fixed cost per client "
            f"{1000 * v['fixed_cost_per_client_s']:6.2f} ms  round {v['round_s']:.3f} s"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    result = measure()
    print(json.dumps(result) if _OUTPUT.value == "json" else _text(result))


if __name__ == "__main__":
    _app.run(main, __name__)
