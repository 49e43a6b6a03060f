"""Throughput of a FedAvg round vs centralized Keras training on the same examples.

  python -m benchmarks.federated_vs_centralized                     # digits, floor setting
  python -m benchmarks.federated_vs_centralized --partition=iid --num_clients=30

One run measures both. FedAvg: examples processed per second of a round (the round's
clients' examples x client_epochs, over the round's wall time, first rounds excluded:
they trace and compile). Centralized: `model.fit` of the same model on exactly the
examples of those rounds, same batch size, epochs and SGD learning rate. The printed ratio
is federated / centralized throughput.

It also times a round whose clients hold ONE example each: that is TFF's fixed per-round
cost (serializing the datasets and the model into the computation, the gRPC trip to the
worker, running the federated graph), which dominates when clients are small.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
from absl import flags

from pipelines import _app

_NUM_CLIENTS = flags.DEFINE_integer("num_clients", 300, "Simulated clients.", lower_bound=1)
_CPR = flags.DEFINE_integer("clients_per_round", 30, "Clients per round.", lower_bound=1)
_PARTITION = flags.DEFINE_enum("partition", "dirichlet", ["iid", "dirichlet"], "Client partition.")
_EPOCHS = flags.DEFINE_integer("client_epochs", 5, "Local epochs.", lower_bound=1)
_BATCH = flags.DEFINE_integer("client_batch_size", 10, "Local batch size.", lower_bound=1)
_MODEL = flags.DEFINE_enum("model", "mlp", ["logistic", "mlp", "cnn"], "Model.")
_ROUNDS = flags.DEFINE_integer("rounds", 8, "Timed rounds.", lower_bound=1)
_WARMUP = 2


def _federated(ds, pop, out: str):
    """(config, timed rounds, fixed per-round cost) of FedAvg on `pop`, and of one-example clients."""
    from data.clients import ClientPopulation
    from training import federated

    rounds = _WARMUP + _ROUNDS.value
    common = dict(model=_MODEL.value, rounds=rounds, client_sampling="uniform", eval_every=rounds)
    config = federated.FederatedConfig(
        **common,
        num_clients=_NUM_CLIENTS.value,
        clients_per_round=_CPR.value,
        partition=_PARTITION.value,
        client_epochs=_EPOCHS.value,
        client_batch_size=_BATCH.value,
        checkpoint_every=rounds,
        root_output_dir=out,
        experiment_name="bench",
    )
    timed = federated.run(config, pop).history[_WARMUP:]
    # One example per client: the fixed cost of a round.
    tiny = ClientPopulation(
        "digits", ds.x_train, ds.y_train, [np.array([i]) for i in range(_CPR.value)], ds.x_test, ds.y_test, 10
    )
    tiny_cfg = federated.FederatedConfig(
        **common,
        num_clients=_CPR.value,
        clients_per_round=_CPR.value,
        partition="iid",
        client_epochs=1,
        checkpoint_every=rounds,
        root_output_dir=out,
        experiment_name="tiny",
    )
    tiny_rounds = federated.run(tiny_cfg, tiny).history[_WARMUP:]
    return config, timed, float(np.mean([r["round_time_s"] for r in tiny_rounds]))


def _centralized_seconds(tf, ds, x, y, client_learning_rate: float) -> float:
    """Keras fit of the same model on the same examples, same batch size, epochs and SGD rate."""
    from models.builders import build_model

    model = build_model(_MODEL.value, ds.input_shape, ds.num_classes, seed=0)
    model.compile(
        optimizer=tf.keras.optimizers.SGD(client_learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[: _BATCH.value * 4], y[: _BATCH.value * 4], batch_size=_BATCH.value, verbose=0)  # warm-up
    t0 = time.time()
    model.fit(x, y, batch_size=_BATCH.value, epochs=_EPOCHS.value, verbose=0, shuffle=True)
    return time.time() - t0


def main(argv: list[str]) -> None:
    del argv
    from pipelines._app import import_tensorflow

    tf = import_tensorflow()  # before anything imports TF inside main() (see pipelines/_app.py)
    from data.clients import from_dataset
    from data.datasets import load_digits
    from privacy.sampling import sample_clients
    from training import federated

    ds = load_digits()
    pop = from_dataset(ds, _PARTITION.value, _NUM_CLIENTS.value, alpha=1.0, seed=0)
    with tempfile.TemporaryDirectory() as out:
        config, timed, overhead = _federated(ds, pop, out)
    fed_examples = sum(r["train_num_examples"] for r in timed)
    fed_time = sum(r["round_time_s"] for r in timed)
    # Centralized: the same examples (the timed rounds' clients), same batches and epochs.
    dp = federated.dp_config(config, pop.num_clients)
    rounds = range(_WARMUP, _WARMUP + _ROUNDS.value)
    idx = np.concatenate([pop.client_indices[c] for r in rounds for c in sample_clients(dp, r, config.seed)])
    central_time = _centralized_seconds(tf, ds, ds.x_train[idx], ds.y_train[idx], config.client_learning_rate)
    central_examples = len(idx) * _EPOCHS.value

    fed_rate = fed_examples / fed_time
    central_rate = central_examples / central_time
    per_round = fed_time / len(timed)
    print(
        f"setting: digits, {_NUM_CLIENTS.value} {_PARTITION.value} clients, {_CPR.value}/round, "
        f"model {_MODEL.value}"
    )
    print(f"  {_EPOCHS.value} client epochs, batch {_BATCH.value}; {len(timed)} timed rounds")
    print(f"federated:   {fed_examples:8.0f} examples in {fed_time:6.2f} s = {fed_rate:9.0f} examples/s")
    print(
        f"centralized: {central_examples:8.0f} examples in {central_time:6.2f} s = "
        f"{central_rate:9.0f} examples/s"
    )
    print(f"ratio federated / centralized = {fed_rate / central_rate:.3f}")
    print(
        f"where a round's {per_round:.3f} s go: {overhead:.3f} s is TFF's fixed per-round cost (a round of "
        f"{_CPR.value} one-example clients); the rest, {max(per_round - overhead, 0):.3f} s, is client "
        f"compute, which centralized Keras does in {central_time / len(timed):.3f} s per round's worth."
    )


if __name__ == "__main__":
    _app.run(main, __name__)
