"""The same command with the same --seed gives the same metrics; --secure_noise gives fresh noise."""

from __future__ import annotations

import numpy as np
import pytest

from training import centralized, federated


def _centralized(tmp_path, name: str, **kw):
    cfg = centralized.CentralizedConfig(
        epochs=4,
        batch_size=256,
        dp=True,
        target_epsilon=3.0,
        root_output_dir=str(tmp_path / name),  # the same command (experiment name) in another place
        **kw,
    )
    return centralized.run(cfg, verbose=False)


def test_centralized_dp_run_is_reproducible_and_secure_noise_is_not(tmp_path):
    a, b = _centralized(tmp_path, "a"), _centralized(tmp_path, "b")
    assert [r["test_loss"] for r in a.history] == [r["test_loss"] for r in b.history]
    assert a.privacy["randomness"]["mode"] == "seeded" and "secret" in a.privacy["randomness"]["note"]
    s1, s2 = _centralized(tmp_path, "s1", secure_noise=True), _centralized(tmp_path, "s2", secure_noise=True)
    assert s1.privacy["randomness"]["mode"] == "secure"
    assert [r["test_loss"] for r in s1.history] != [r["test_loss"] for r in s2.history]
    assert s1.privacy["epsilon"] == a.privacy["epsilon"]  # same mechanism, same accounting
    # another experiment (say, the same settings at another target) never shares the noise stream
    other = centralized.CentralizedConfig(seed=0, experiment_name="other")
    assert centralized.noise_seed(other) != centralized.noise_seed(centralized.CentralizedConfig(seed=0))


def _federated(tmp_path, name: str, digits, **kw):
    cfg = federated.FederatedConfig(
        num_clients=40,
        clients_per_round=8,
        rounds=3,
        partition="iid",
        client_epochs=1,
        eval_every=1,
        aggregator="adaptive",
        noise_multiplier=0.5,
        clipped_count_stddev=1.0,
        root_output_dir=str(tmp_path / name),  # the same command (experiment name) in another place
        **kw,
    )
    return federated.run(cfg, digits, verbose=False)


@pytest.mark.slow
def test_federated_dp_run_is_reproducible_and_secure_noise_is_not(tmp_path, digits):
    a, b = _federated(tmp_path, "a", digits), _federated(tmp_path, "b", digits)
    keys = ("clients", "train_loss", "test_loss", "aggregator/dp_query_metrics/clip")
    assert [[r[k] for k in keys] for r in a.unreleased_history] == [
        [r[k] for k in keys] for r in b.unreleased_history
    ]
    s1, s2 = (
        _federated(tmp_path, "s1", digits, secure_noise=True),
        _federated(tmp_path, "s2", digits, secure_noise=True),
    )
    assert s1.privacy["randomness"]["mode"] == "secure"
    assert not np.allclose([r["test_loss"] for r in s1.history], [r["test_loss"] for r in s2.history])
