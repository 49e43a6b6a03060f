"""The federated side of the private search (`training/tuning.py`, `pipelines.tune --pipeline=federated`).

The privacy unit is a user (a client's whole data). Users are split per user into training and
validation users (a keyed hash of the user's own examples decides, so adding or removing one user
moves no other); every run is a DP-FedAvg run (fixed clipping, Poisson client sampling: add/remove
one user) through `training.federated` over the training users; its score counts correct predictions
on at most `VALIDATION_EXAMPLES_PER_USER` examples of each validation user, so one user changes the
count by at most that much: the Gaussian score noise is scaled by it (`score_scale`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from data.clients import ClientPopulation
from data.datasets import Dataset
from privacy.config import DpFedAvgConfig
from training.search_space import SpaceSampling
from training.tuning import trial_run_id

VALIDATION_EXAMPLES_PER_USER = 5  # the sensitivity of the score's count under add/remove one user


@dataclasses.dataclass(frozen=True)
class FederatedSearchSpace(SpaceSampling):
    """Values each federated run samples from, uniformly and independently."""

    client_learning_rate: tuple[float, ...] = (0.05, 0.1)
    clip_norm: tuple[float, ...] = (0.5, 1.0)
    clients_per_round: tuple[int, ...] = (30,)
    rounds: tuple[int, ...] = (50,)


class FederatedSide:
    """What the search needs from the federated pipeline: split, reference, candidates, trials."""

    unit = "user"
    score_scale = VALIDATION_EXAMPLES_PER_USER

    def split(self, dataset: Dataset, config, in_validation) -> tuple[ClientPopulation, tuple, int]:
        """(training users as a population, capped validation examples, number of users in all)."""
        from data.clients import from_dataset

        population = from_dataset(dataset, "dirichlet", config.num_clients, alpha=1.0, seed=config.seed)
        firsts = [population.client_examples(c) for c in range(population.num_clients)]
        digests_x = np.stack([x.reshape(len(x), -1).sum(axis=0) for x, _ in firsts])  # one row per user
        digests_y = np.array([np.bincount(y, minlength=dataset.num_classes) for _, y in firsts])
        val = in_validation(digests_x, digests_y, config.validation_fraction, config.seed)
        if val.sum() < 1 or (~val).sum() < 2:
            raise ValueError(
                f"validation_fraction {config.validation_fraction} leaves no validation or training users"
            )
        cap = VALIDATION_EXAMPLES_PER_USER
        x_val = np.concatenate([firsts[c][0][:cap] for c in np.flatnonzero(val)])
        y_val = np.concatenate([firsts[c][1][:cap] for c in np.flatnonzero(val)])
        train = [population.client_indices[c] for c in np.flatnonzero(~val)]
        part = ClientPopulation(population.name, population.x, population.y, train, dataset.x_test,
                                dataset.y_test, dataset.num_classes)  # fmt: skip
        return part, (x_val, y_val), population.num_clients

    def reference(self, config, num_users: int) -> DpFedAvgConfig:
        space = config.space
        if max(space.clients_per_round) > num_users:
            raise ValueError(
                f"clients per round {max(space.clients_per_round)} exceed the {num_users} training users"
            )
        return DpFedAvgConfig(
            num_users, max(space.clients_per_round), max(space.rounds), 1.0, 1.0, config.delta
        )

    def candidate(self, config, hparams: dict[str, Any], num_users: int) -> DpFedAvgConfig:
        return DpFedAvgConfig(num_users, hparams["clients_per_round"], hparams["rounds"], 1.0,
                              hparams["clip_norm"], config.delta)  # fmt: skip

    def trial(self, config, hparams: dict[str, Any], dp: DpFedAvgConfig, index: int, root: str, part):
        """Validates the run now (nothing written) and returns the function that trains it."""
        from training import federated

        run_config = federated.FederatedConfig(
            dataset=config.dataset, model=config.model, model_init=config.model_init, partition="iid",
            num_clients=part.num_clients, clients_per_round=dp.clients_per_round, rounds=dp.rounds,
            client_learning_rate=hparams["client_learning_rate"], aggregator="fixed",
            clip_norm=dp.clip_norm, noise_multiplier=dp.noise_multiplier, delta=dp.delta,
            client_sampling="poisson", seed=config.seed, secure_noise=config.secure_noise,
            run_id=trial_run_id(config, index),
            eval_every=dp.rounds, checkpoint_every=dp.rounds, root_output_dir=root,
            experiment_name=f"trial_{index:03d}",
        )  # fmt: skip
        plan = federated.plan_run(run_config, part)
        accounted = ("num_clients", "clients_per_round", "rounds", "noise_multiplier", "clip_norm", "delta",
                     "client_sampling", "aggregator")  # fmt: skip
        if any(getattr(plan.dp, f) != getattr(dp, f) for f in accounted) or plan.rounds != dp.rounds:
            raise RuntimeError(
                f"trial {index}: planned {plan.dp}, accounted {dp}"
            )  # must train what is accounted

        def train():
            import tensorflow as tf

            # a trial that diverges only scores badly: stopping the search would reveal it (and K)
            result = federated.launch(plan, verbose=False, stop_on_divergence=False)
            model = tf.keras.models.load_model(os.path.join(result.output_dir, "model"), compile=False)
            loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            model.compile(loss=loss, metrics=["accuracy"])  # as the centralized runs' models are
            return model

        return train

    def per_run_details(self, ref: DpFedAvgConfig) -> dict[str, Any]:
        return {"num_clients": ref.num_clients, "clients_per_round": ref.clients_per_round,
                "rounds": ref.rounds, "steps": ref.rounds, "noise_multiplier": ref.noise_multiplier,
                "aggregator": "fixed", "sampling": "poisson",
                "validation_examples_per_user": VALIDATION_EXAMPLES_PER_USER}  # fmt: skip

    @staticmethod
    def steps(ref: DpFedAvgConfig) -> int:
        return ref.rounds
