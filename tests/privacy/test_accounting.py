"""Accounting pinned against independent values, plus calibration and ledger properties."""

import math

import dp_accounting
import numpy as np
import pytest
from scipy.stats import norm

from privacy import accounting
from privacy.config import DpFedAvgConfig, DpSgdConfig
from privacy.report import privacy_report

TUTORIAL = DpSgdConfig(num_examples=60_000, batch_size=256, epochs=60, noise_multiplier=1.1, delta=1e-5)


def test_tf_privacy_tutorial_setting_poisson_rdp():
    # TF-Privacy's tutorial README setting; current Poisson RDP gives ~2.60.
    assert accounting.dp_sgd_epsilon(TUTORIAL) == pytest.approx(2.60, abs=0.01)
    assert TUTORIAL.steps == 60 * math.ceil(60_000 / 256)


@pytest.mark.parametrize("acc", ["rdp", "pld"])
def test_matches_dp_accounting_called_directly(acc):
    q, steps = 256 / 60_000, 60 * math.ceil(60_000 / 256)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(1.1)), steps
    )
    direct = (
        dp_accounting.rdp.RdpAccountant()
        if acc == "rdp"
        else dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    )
    direct.compose(event)
    ours = accounting.dp_sgd_epsilon(TUTORIAL.replace(accountant=acc))
    assert ours == pytest.approx(direct.get_epsilon(1e-5), rel=0.02)
    if acc == "pld":  # PLD is tighter than RDP for the same mechanism
        assert ours < accounting.dp_sgd_epsilon(TUTORIAL)


def test_single_gaussian_matches_analytic_formula():
    """One epoch of shuffled batches = one Gaussian mechanism of sensitivity 2C (replace-one): with
    noise multiplier z, the Gaussian of Balle & Wang (2018) with sigma = z / 2."""
    z = 4.0
    sigma = z / 2
    cfg = DpSgdConfig(
        num_examples=1000,
        batch_size=100,
        epochs=1,
        noise_multiplier=z,
        accountant="pld",
        sampling="shuffle",
    )
    eps = accounting.dp_sgd_epsilon(cfg)

    def exact_delta(e):
        return norm.cdf(-e * sigma + 1 / (2 * sigma)) - math.exp(e) * norm.cdf(-e * sigma - 1 / (2 * sigma))

    # The PLD epsilon is a valid (slightly pessimistic) bound: the exact delta there is <= 1e-5 ...
    assert exact_delta(eps) <= 1e-5
    # ... and tight: slightly smaller epsilons already violate delta.
    assert exact_delta(eps * 0.98) > 1e-5


def test_shuffle_never_reports_the_poisson_number():
    cfg = DpSgdConfig(num_examples=1437, batch_size=128, epochs=20, noise_multiplier=1.0)
    poisson = privacy_report(accounting.dp_sgd_guarantee(cfg))
    shuffle = privacy_report(accounting.dp_sgd_guarantee(cfg.replace(sampling="shuffle")))
    assert shuffle["epsilon"] > 2 * poisson["epsilon"]
    assert "no privacy amplification" in shuffle["statement"]
    assert shuffle["sampling"] == "shuffle" and poisson["sampling"] == "poisson"
    # a data-independent permutation keeps a REPLACED example in its batch; an added one would shift
    # every later batch boundary, so add/remove is not what shuffling gives
    assert poisson["adjacency"] == "add/remove one example"
    assert shuffle["adjacency"] == "replace one example" and "sensitivity 2C" in shuffle["statement"]


@pytest.mark.parametrize("acc", ["rdp", "pld"])
@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_calibration_is_tight_and_never_overshoots(acc, target):
    base = DpSgdConfig(num_examples=1437, batch_size=128, epochs=20, noise_multiplier=0.0, accountant=acc)
    cal = accounting.calibrate_dp_sgd(base, target)
    assert accounting.dp_sgd_epsilon(cal) <= target
    smaller = cal.replace(noise_multiplier=cal.noise_multiplier * 0.99)
    assert accounting.dp_sgd_epsilon(smaller) > target * 0.97


def test_calibration_unreachable_target_is_clear():
    base = DpSgdConfig(num_examples=100, batch_size=100, epochs=10_000, noise_multiplier=0.0)
    with pytest.raises(ValueError, match="unreachable"):
        accounting.calibrate_noise(lambda z: 1e9, 1e-3)
    with pytest.raises(ValueError, match="> 0"):
        accounting.calibrate_dp_sgd(base, -1.0)


def test_ledger_is_monotone_and_ends_at_total():
    cfg = DpSgdConfig(num_examples=1437, batch_size=128, epochs=15, noise_multiplier=1.5)
    for acc in ("rdp", "pld"):
        ledger = accounting.dp_sgd_epsilon_per_epoch(cfg.replace(accountant=acc))
        assert len(ledger) == 15 and np.all(np.diff(ledger) > 0)
        assert ledger[-1] == pytest.approx(accounting.dp_sgd_epsilon(cfg.replace(accountant=acc)), rel=1e-3)
        assert ledger[4] == pytest.approx(accounting.dp_sgd_epsilon(cfg.replace(accountant=acc), 5), rel=1e-3)
    assert accounting.last_affordable(ledger, ledger[6]) == 7
    assert accounting.last_affordable(ledger, ledger[0] / 2) == 0


def test_fedavg_events_and_adjacency():
    cfg = DpFedAvgConfig(num_clients=10_000, clients_per_round=100, rounds=1000, noise_multiplier=1.0)
    # Field notes value for the same event (dp_accounting 0.4.3): RDP 2.101, PLD 1.828.
    assert accounting.fedavg_epsilon(cfg) == pytest.approx(2.101, abs=0.01)
    assert accounting.fedavg_epsilon(cfg.replace(accountant="pld")) == pytest.approx(1.828, abs=0.02)
    uniform = accounting.fedavg_guarantee(cfg.replace(client_sampling="uniform"))
    assert uniform.adjacency_text == "replace one user" and uniform.unit == "user"
    # Replace-one doubles the sensitivity: it must cost more than add/remove at the same noise.
    assert uniform.epsilon() > accounting.fedavg_epsilon(cfg)
    tree = accounting.fedavg_guarantee(cfg.replace(aggregator="tree", rounds=50))
    assert tree.adjacency_text.startswith("replace one user with a special")
    ledger = accounting.fedavg_epsilon_per_round(cfg.replace(rounds=30))
    assert np.all(np.diff(ledger) > 0) and ledger[-1] == pytest.approx(
        accounting.fedavg_epsilon(cfg.replace(rounds=30)), rel=1e-6
    )


def test_fedavg_impossible_settings_are_clear():
    with pytest.raises(ValueError, match="at most once"):
        DpFedAvgConfig(
            num_clients=100, clients_per_round=10, rounds=11, noise_multiplier=1.0, aggregator="tree"
        )
    with pytest.raises(ValueError, match="RDP only"):
        DpFedAvgConfig(
            num_clients=100, clients_per_round=10, rounds=5, noise_multiplier=1, client_sampling="uniform",
            accountant="pld",
        )  # fmt: skip
    with pytest.raises(ValueError, match="clients_per_round"):
        DpFedAvgConfig(num_clients=10, clients_per_round=20, rounds=5, noise_multiplier=1.0)


def test_non_private_has_infinite_epsilon():
    cfg = DpSgdConfig(num_examples=100, batch_size=10, epochs=1, noise_multiplier=0.0)
    assert accounting.dp_sgd_epsilon(cfg) == math.inf
