"""The one privacy report: the same keys for every run, valid JSON, one key per quantity."""

import json
import math

import pytest

from privacy import accounting
from privacy.config import DpFedAvgConfig, DpSgdConfig
from privacy.report import privacy_report, reported_epsilon

COMMON = {
    "dp",
    "epsilon",
    "epsilon_is_infinite",
    "delta",
    "accountant",
    "unit",
    "adjacency",
    "sampling",
    "noise_multiplier",
    "l2_norm_clip",
    "steps",
    "statement",
}
SGD = DpSgdConfig(num_examples=1000, batch_size=100, epochs=3, noise_multiplier=1.1, l2_norm_clip=0.7)
FED = DpFedAvgConfig(num_clients=500, clients_per_round=50, rounds=20, noise_multiplier=1.0, clip_norm=0.3)


@pytest.mark.parametrize(
    "guarantee",
    [
        accounting.dp_sgd_guarantee(SGD),
        accounting.dp_sgd_guarantee(SGD.replace(noise_multiplier=0.0)),
        accounting.fedavg_guarantee(FED),
        accounting.fedavg_guarantee(FED.replace(aggregator="none")),
        accounting.non_private_guarantee("example", "shuffle", 5),
    ],
    ids=["dp_sgd", "dp_sgd_noise0", "fedavg", "fedavg_nondp", "nondp"],
)
def test_every_report_has_the_common_keys_and_is_strict_json(guarantee):
    report = privacy_report(guarantee, extra_detail=1)
    assert COMMON <= set(report) and report["extra_detail"] == 1
    json.dumps(report, allow_nan=False)  # no bare Infinity/NaN anywhere
    assert report["epsilon_is_infinite"] == (report["epsilon"] is None)
    assert "clip" not in report and "clip_norm" not in report  # one key per quantity


def test_values_come_from_the_config_and_the_accountant():
    report = privacy_report(accounting.dp_sgd_guarantee(SGD, epochs=2))
    assert report["epsilon"] == pytest.approx(accounting.dp_sgd_epsilon(SGD, epochs=2))
    assert report["steps"] == 20 and report["l2_norm_clip"] == 0.7 and report["noise_multiplier"] == 1.1
    assert report["adjacency"] == "add/remove one example" and report["unit"] == "example"
    assert f"({report['epsilon']:.4g}, 1e-05)-DP at the example level" in report["statement"]
    fed = privacy_report(accounting.fedavg_guarantee(FED, rounds=7))
    assert fed["l2_norm_clip"] == 0.3 and fed["steps"] == 7 and fed["unit"] == "user"
    assert fed["epsilon"] == pytest.approx(accounting.fedavg_epsilon(FED, rounds=7))


def test_infinite_epsilon_is_null_and_reads_back_as_inf():
    report = privacy_report(accounting.dp_sgd_guarantee(SGD.replace(noise_multiplier=0.0)))
    assert report["dp"] is True and report["epsilon"] is None and report["epsilon_is_infinite"]
    assert "(inf, 1e-05)-DP" in report["statement"]
    assert reported_epsilon(report) == math.inf
    nondp = privacy_report(accounting.non_private_guarantee("user", "poisson", 3), what="federated averaging")
    assert nondp["dp"] is False and reported_epsilon(nondp) == math.inf
    assert nondp["statement"] == "Non-private federated averaging: no differential-privacy guarantee."
    assert reported_epsilon({"epsilon": 2.5, "epsilon_is_infinite": False}) == 2.5


def test_the_statement_says_the_number_of_units_is_public():
    """The accounting treats N as public (privacy.json releases it exactly): the statement must say so."""
    central = privacy_report(accounting.dp_sgd_guarantee(DpSgdConfig(1000, 100, 2, 1.0)))
    federated = privacy_report(accounting.fedavg_guarantee(DpFedAvgConfig(100, 10, 5, noise_multiplier=1.0)))
    assert "number of examples" in central["statement"] and "treated as public" in central["statement"]
    assert "number of users" in federated["statement"] and "treated as public" in federated["statement"]
