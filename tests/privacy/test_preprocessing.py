"""The DP preprocessing statistics: their noise scale, their sensitivity, the declared mode reading
nothing, and the run's epsilon as an independent composition of the listed parts."""

from __future__ import annotations

import math
import types

import dp_accounting
import numpy as np
import pytest

from privacy import accounting
from privacy import preprocessing as P
from privacy.config import DpSgdConfig


def _schema(numeric=("a", "b"), categorical=("c",), declared=False):
    col = lambda n, kind: types.SimpleNamespace(  # noqa: E731
        name=n,
        kind=kind,
        lower=0.0 if declared and kind == "numeric" else None,
        upper=10.0 if declared and kind == "numeric" else None,
        categories=("x", "y") if declared and kind == "categorical" else None,
    )
    nums = [col(n, "numeric") for n in numeric]
    cats = [col(n, "categorical") for n in categorical]
    return types.SimpleNamespace(
        numeric=lambda: nums,
        categorical=lambda: cats,
        task="classification",
        classes=("0", "1"),
        label="label",
    )


def _table(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(300.0, 50.0, n)
    a[:100] = np.nan
    b = rng.uniform(0.02, 0.09, n)
    c = rng.choice(np.array(["x", "y", "z"], dtype=object), n, p=[0.5, 0.45, 0.05])
    y = (rng.random(n) < 0.1).astype(np.int32)
    return {"a": a, "b": b, "c": c}, y


class _RecordingRng:
    """numpy's Generator that records every normal() draw's scale and size."""

    def __init__(self, seed=0):
        self.rng, self.calls = np.random.default_rng(seed), []

    def normal(self, loc, scale, size):
        self.calls.append((loc, scale, size))
        return self.rng.normal(loc, scale, size)


class _RecordingNoise(_RecordingRng):
    """Keeps the noise itself (loc is 0: what normal() returns is the noise added to the counts)."""

    def __init__(self, seed):
        super().__init__(seed)
        self.draws = []

    def normal(self, loc, scale, size):
        self.draws.append(super().normal(loc, scale, size))
        return self.draws[-1]


def test_every_noisy_count_has_the_stated_stddev_and_the_release_sensitivity_one():
    schema = _schema()
    cols, y = _table()
    config = P.PreprocessingConfig("private", noise_multiplier=3.0, selection_delta=1e-7)
    rng = _RecordingRng()
    fitted = P.fit(schema, cols, y, config, rng)
    m = P.released_histograms(schema)
    assert m == 4 and fitted.cost.histograms == 4  # a, b, c, the label
    assert fitted.cost.count_stddev == pytest.approx(3.0 * math.sqrt(m))
    assert [c[1] for c in rng.calls] == [pytest.approx(3.0 * 2.0)] * 4
    # one row's whole contribution, each histogram scaled by 1/sqrt(m): L2 norm exactly 1
    assert math.sqrt(m * (1 / math.sqrt(m)) ** 2) == pytest.approx(1.0)


def test_the_noise_really_has_that_scale_empirically():
    schema = _schema(numeric=("a",), categorical=())
    cols, y = _table(500)
    config = P.PreprocessingConfig("private", noise_multiplier=2.0)
    exact = np.bincount(P.bin_index(cols["a"]), minlength=P.NUM_BINS)
    noise = []
    for seed in range(200):
        rng = _RecordingNoise(seed)
        P.fit(schema, cols, y, config, rng)
        noise.append(rng.draws[0])
    noise = np.concatenate(noise)
    assert np.std(noise) == pytest.approx(2.0 * math.sqrt(2), rel=0.05)
    assert abs(np.mean(noise)) < 0.1
    assert exact.sum() == 500


def test_one_row_more_moves_each_histogram_by_at_most_one():
    cols, y = _table(300)
    extra = {k: np.append(v, v[:1]) for k, v in cols.items()}
    for name in ("a", "b"):
        h0 = np.bincount(P.bin_index(cols[name]), minlength=P.NUM_BINS)
        h1 = np.bincount(P.bin_index(extra[name]), minlength=P.NUM_BINS)
        assert np.abs(h1 - h0).sum() == 1
    # user-level weights: a user's rows weigh 1/rows, so removing the user moves a histogram by <= 1 in L1
    owner = np.repeat(np.arange(30), 10)
    w = 1.0 / np.bincount(owner)[owner]
    with_user = np.bincount(P.bin_index(cols["a"]), weights=w, minlength=P.NUM_BINS)
    keep = owner != 7
    without = np.bincount(P.bin_index(cols["a"][keep]), weights=w[keep], minlength=P.NUM_BINS)
    assert np.abs(with_user - without).sum() == pytest.approx(1.0)


def test_declared_mode_reads_nothing_from_the_rows():
    schema = _schema(declared=True)
    cols, y = _table(300, seed=1)
    other, y2 = _table(50, seed=2)
    other["a"] = other["a"] * 1000
    f1 = P.fit(schema, cols, y, P.PreprocessingConfig("schema"), np.random.default_rng(0))
    f2 = P.fit(schema, other, y2, P.PreprocessingConfig("schema"), np.random.default_rng(1))
    assert f1 == f2 and f1.cost.noise_multiplier == 0
    assert f1.numeric[0].lower == 0.0 and f1.numeric[0].upper == 10.0
    with pytest.raises(P.PreprocessingError, match="must declare bounds"):
        P.fit(_schema(), cols, y, P.PreprocessingConfig("schema"), np.random.default_rng(0))


def test_private_bounds_contain_the_bulk_and_rare_categories_are_not_selected():
    schema = _schema()
    cols, y = _table(20_000)
    cols["c"][:1] = "only-once"
    fitted = P.fit(schema, cols, y, P.PreprocessingConfig("private", 1.0, 1e-6), np.random.default_rng(0))
    a, b = fitted.numeric
    assert a.lower <= 200 and a.upper >= 400 and a.upper / a.lower < 1000 and a.indicator
    assert b.lower <= 0.02 and b.upper >= 0.09 and not b.indicator
    vocab = fitted.categorical[0].vocabulary
    assert "x" in vocab and "y" in vocab and "only-once" not in vocab and vocab[0] == P.MISSING
    assert fitted.positive_fraction == pytest.approx(np.mean(y), abs=0.02)
    assert fitted.cost.selection_delta == pytest.approx(1e-6)


def test_partition_selection_threshold_has_the_stated_delta():
    from scipy.stats import norm

    cut = P.selection_threshold(10.0, 1e-6)
    assert norm.sf((cut - 1.0) / 10.0) == pytest.approx(1e-6, rel=1e-6)


def test_encode_one_hot_puts_other_first_and_imputes_missing():
    f = P.Fitted(
        "private",
        (P.NumericTransform("a", 0, 10, 5, 5, 5, True),),
        (P.CategoricalTransform("c", ("", "x")),),
        P.Cost(1.0, 2, 0.0, ()),
        None,
    )
    out = P.encode(f, {"a": np.array([np.nan, 20.0]), "c": np.array(["x", "q"], dtype=object)})
    np.testing.assert_allclose(out, [[0, 1, 0, 0, 1], [1, 0, 1, 0, 0]])
    assert f.width == 5


@pytest.mark.parametrize("accountant,sampling", [("rdp", "poisson"), ("pld", "poisson"), ("rdp", "shuffle")])
def test_run_epsilon_is_the_independent_composition_of_the_parts(accountant, sampling):
    cfg = DpSgdConfig(
        num_examples=455,
        batch_size=32,
        epochs=20,
        noise_multiplier=3.0,
        accountant=accountant,
        sampling=sampling,
        preprocessing_noise_multiplier=12.0,
        preprocessing_delta=2e-7,
    )
    # rebuilt by hand from the recorded parameters, with dp_accounting only
    z_pre = 12.0 if sampling == "poisson" else 6.0
    if sampling == "poisson":
        train = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(32 / 455, dp_accounting.GaussianDpEvent(3.0)), 20 * 15
        )
        rel = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    else:
        train = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.5), 20)
        rel = dp_accounting.NeighboringRelation.REPLACE_ONE
    acc = (
        dp_accounting.rdp.RdpAccountant(accounting.RDP_ORDERS, neighboring_relation=rel)
        if accountant == "rdp"
        else dp_accounting.pld.PLDAccountant(rel, value_discretization_interval=1e-3)
    )
    acc.compose(dp_accounting.GaussianDpEvent(z_pre))
    acc.compose(train)
    expected = acc.get_epsilon(1e-5 - 2e-7) - math.log1p(-2e-7)
    assert accounting.dp_sgd_epsilon(cfg) == pytest.approx(expected, rel=1e-9)
    assert accounting.dp_sgd_epsilon_per_epoch(cfg)[-1] == pytest.approx(expected, rel=1e-6)
    assert accounting.dp_sgd_guarantee(cfg).epsilon() == pytest.approx(expected, rel=1e-9)
    alone = accounting.dp_sgd_epsilon(
        cfg.replace(preprocessing_noise_multiplier=0.0, preprocessing_delta=0.0)
    )
    assert accounting.dp_sgd_epsilon(cfg) > alone


def test_calibration_composes_the_preprocessing():
    base = DpSgdConfig(
        num_examples=455, batch_size=32, epochs=20, noise_multiplier=0.0, preprocessing_noise_multiplier=15.0
    )
    cal = accounting.calibrate_dp_sgd(base, 1.0)
    assert accounting.dp_sgd_epsilon(cal) <= 1.0
    assert accounting.dp_sgd_epsilon(cal.replace(noise_multiplier=cal.noise_multiplier * 0.99)) > 1.0
    plain = accounting.calibrate_dp_sgd(base.replace(preprocessing_noise_multiplier=0.0), 1.0)
    assert cal.noise_multiplier > plain.noise_multiplier


def test_the_missing_token_is_the_tables_one():
    from data.table_files import MISSING

    assert P.MISSING == MISSING
