"""The epsilon of a private search: RepeatAndSelect accounting, calibration, K draws and domination."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.dp_event import RepeatAndSelectDpEvent

from privacy import private_selection as ps
from privacy.accounting import dp_sgd_epsilon
from privacy.config import DpSgdConfig

BASE = DpSgdConfig(num_examples=1150, batch_size=512, epochs=20, noise_multiplier=8.0, l2_norm_clip=1.0)
RUNS = [
    ps.RunsDistribution("poisson", 10.0),
    ps.RunsDistribution("geometric", 10.0),
    ps.RunsDistribution("truncated_negative_binomial", 10.0, 0.5),
]


def _independent_epsilon(
    dp: DpSgdConfig, score_noise: float, runs: ps.RunsDistribution, delta: float
) -> float:
    """RdpAccountant on a RepeatAndSelectDpEvent built here from the recorded parameters."""
    steps = dp.epochs * math.ceil(dp.num_examples / dp.batch_size)
    gaussian = dp_accounting.GaussianDpEvent(dp.noise_multiplier)
    step = dp_accounting.PoissonSampledDpEvent(dp.batch_size / dp.num_examples, gaussian)
    training = dp_accounting.SelfComposedDpEvent(step, steps)
    per_run = dp_accounting.ComposedDpEvent([training, dp_accounting.GaussianDpEvent(score_noise)])
    shape = {"poisson": math.inf, "geometric": 1.0}.get(runs.name, runs.eta)
    accountant = dp_accounting.rdp.RdpAccountant([1 + x / 10 for x in range(1, 100)] + list(range(11, 64)))
    accountant.compose(RepeatAndSelectDpEvent(per_run, runs.mean, shape))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("runs", RUNS, ids=lambda r: r.name)
def test_search_epsilon_matches_an_independent_accountant_and_exceeds_one_run(runs):
    eps = ps.search_epsilon(ps.per_run_event(BASE, 5.0), runs, 1e-5)
    # the project's orders include 128..1024 too: its epsilon can only be lower (a finer minimum)
    assert eps <= _independent_epsilon(BASE, 5.0, runs, 1e-5) + 1e-9
    assert eps == pytest.approx(_independent_epsilon(BASE, 5.0, runs, 1e-5), rel=0.02)
    assert eps > dp_sgd_epsilon(BASE) * 1.2  # the search costs clearly more than the run it picked


@pytest.mark.parametrize("runs", RUNS, ids=lambda r: r.name)
@pytest.mark.parametrize("target", [2.0, 5.0])
def test_calibration_never_overshoots_and_is_tight(runs, target):
    ref = ps.calibrate_reference(BASE, 5.0, runs, target)
    assert ps.search_epsilon(ps.per_run_event(ref, 5.0), runs, BASE.delta) <= target
    slightly_less = ref.replace(noise_multiplier=ref.noise_multiplier * 0.99)
    assert ps.search_epsilon(ps.per_run_event(slightly_less, 5.0), runs, BASE.delta) > target


def test_unreachable_target_is_a_clear_error():
    with pytest.raises(ValueError, match="unreachable"):
        ps.calibrate_reference(BASE, 0.5, RUNS[0], 0.05)  # the score release alone costs more


@pytest.mark.parametrize("runs", RUNS, ids=lambda r: r.name)
def test_k_has_the_requested_mean(runs):
    draws = np.array([runs.draw(np.random.default_rng(seed)) for seed in range(4000)])
    assert draws.mean() == pytest.approx(runs.mean, rel=0.06)
    if runs.name != "poisson":
        assert draws.min() >= 1


@pytest.mark.parametrize(
    "batch_size, epochs, clip", [(512, 20, 1.0), (256, 20, 0.5), (128, 10, 2.0), (512, 5, 1.0), (64, 20, 1.0)]
)
def test_every_configuration_is_dominated_by_the_reference_at_every_order(batch_size, epochs, clip):
    ref_rdp = ps.rdp_curve(ps.per_run_event(BASE, 5.0))
    candidate = DpSgdConfig(1150, batch_size, epochs, 1.0, clip)
    dp = ps.dominating_noise(candidate, 5.0, ref_rdp)
    assert ps.dominates(ps.rdp_curve(ps.per_run_event(dp, 5.0)), ref_rdp)
    lower = dp.replace(noise_multiplier=dp.noise_multiplier * 0.99)
    assert not ps.dominates(ps.rdp_curve(ps.per_run_event(lower, 5.0)), ref_rdp)  # and it is the smallest


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="poisson", mean=0.0), "mean_runs must be > 1"),
        (dict(name="geometric", mean=-3.0), "mean_runs must be > 1"),
        (dict(name="truncated_negative_binomial", mean=5.0, eta=0.0), "tnb_eta"),
        (dict(name="truncated_negative_binomial", mean=5.0, eta=math.inf), "tnb_eta"),
        (dict(name="uniform", mean=5.0), "one of"),
    ],
)
def test_bad_distributions(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ps.RunsDistribution(**kwargs)


@pytest.mark.parametrize(
    "runs, expected",
    [
        (ps.RunsDistribution("poisson", 10.0), 6.38),
        (ps.RunsDistribution("geometric", 10.0), 5.52),
        (ps.RunsDistribution("truncated_negative_binomial", 10.0, 0.5), 5.14),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_pinned_to_the_values_measured_in_the_issue(runs, expected):
    """Issue 12 (and the field notes): digits DP-SGD, q = 512/1437, z = 9.7, 300 steps: one run 2.86."""
    from privacy.accounting import dp_sgd_event, epsilon_of

    one_run = dp_sgd_event(DpSgdConfig(1437, 512, 100, 9.7))
    assert epsilon_of(one_run, "rdp", "add_or_remove_one", 1e-5) == pytest.approx(2.86, abs=0.005)
    assert ps.search_epsilon(one_run, runs, 1e-5) == pytest.approx(expected, abs=0.005)


def test_federated_runs_are_accounted_only_where_the_event_is_add_remove():
    from privacy.config import DpFedAvgConfig

    fixed = DpFedAvgConfig(300, 30, 50, 1.0)
    assert ps.search_epsilon(ps.per_run_event(fixed, 2.0), RUNS[1], 1e-5) > 0
    for other in (fixed.replace(aggregator="adaptive"), fixed.replace(client_sampling="uniform")):
        with pytest.raises(ValueError, match="fixed clipping and Poisson"):
            ps.per_run_event(other, 2.0)
    ref_rdp = ps.rdp_curve(ps.per_run_event(fixed, 2.0))
    dp = ps.dominating_noise(DpFedAvgConfig(300, 20, 40, 1.0), 2.0, ref_rdp)
    assert ps.dominates(ps.rdp_curve(ps.per_run_event(dp, 2.0)), ref_rdp) and dp.noise_multiplier < 1.0
