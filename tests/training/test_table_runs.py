"""Tables end to end: the minimal command trains, DP preprocessing is inside the epsilon, the saved
model takes raw rows (strings, missing values) and answers as the in-memory model does."""

from __future__ import annotations

import json
import math
import os

import dp_accounting
import numpy as np
import pandas as pd
import pytest

from privacy import accounting
from training.centralized import CentralizedConfig, ConfigError, prepare, run


@pytest.fixture(scope="module")
def breast_cancer_csv(tmp_path_factory) -> str:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    df = bunch.data.copy()
    df["label"] = bunch.target
    path = tmp_path_factory.mktemp("bc") / "bc.csv"
    df.to_csv(path, index=False)
    return str(path)


def credit_table(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """A credit-risk-like table: "Yes"/"No" label with about 4% positives, a categorical column with
    missing values, numeric columns in the thousands with missing values."""
    rng = np.random.default_rng(seed)
    student = rng.choice(["Yes", "No"], n, p=[0.3, 0.7]).astype(object)
    balance = rng.gamma(2.0, 400.0, n)
    income = rng.normal(35_000, 12_000, n)
    score = -7.5 + 0.0045 * balance - 0.4 * (student == "Yes") + rng.normal(0, 0.5, n)
    default = np.where(rng.random(n) < 1 / (1 + np.exp(-score)), "Yes", "No")
    student[rng.random(n) < 0.05] = None
    balance[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({"student": student, "balance": balance, "income": income, "default": default})


@pytest.fixture(scope="module")
def credit_csv(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("credit") / "credit.csv"
    credit_table().to_csv(path, index=False)
    return str(path)


def test_breast_cancer_minimal_command_trains_and_the_dp_run_composes_its_parts(breast_cancer_csv, tmp_path):
    plain = run(
        CentralizedConfig(
            dataset="csv", data_dir=breast_cancer_csv, model="logistic", root_output_dir=str(tmp_path)
        ),
        verbose=False,
    )
    assert plain.test_accuracy >= 0.93
    config = CentralizedConfig(
        dataset="csv",
        data_dir=breast_cancer_csv,
        model="logistic",
        dp=True,
        target_epsilon=1.0,
        root_output_dir=str(tmp_path),
        experiment_name="dp",
    )
    result = run(config, verbose=False)
    privacy = result.privacy
    assert privacy["epsilon"] <= 1.0
    pre = privacy["preprocessing"]
    assert pre["mode"] == "private" and pre["covered"] and pre["histograms"] == 31  # 30 columns + label
    assert "included in this epsilon" in privacy["statement"]
    # independent composition of the recorded parts: the Gaussian release, then Poisson DP-SGD
    acc = dp_accounting.rdp.RdpAccountant(accounting.RDP_ORDERS)
    acc.compose(dp_accounting.GaussianDpEvent(pre["noise_multiplier"]))
    step = dp_accounting.PoissonSampledDpEvent(
        privacy["sampling_rate"], dp_accounting.GaussianDpEvent(privacy["noise_multiplier"])
    )
    acc.compose(dp_accounting.SelfComposedDpEvent(step, privacy["steps"]))
    assert privacy["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert pre["epsilon_alone"] < privacy["epsilon"]
    assert result.test_accuracy >= 0.85
    schema = json.load(open(os.path.join(result.output_dir, "schema.json")))
    assert len(schema["columns"]) == 30 and schema["classes"] == ["0", "1"]


def test_the_statistics_share_is_measured_under_the_runs_adjacency(breast_cancer_csv, tmp_path):
    """Shuffled batches are replace-one: the release moves twice as far, so its noise doubles to keep
    the statistics at their share of the target (an add/remove calibration would spend twice it)."""
    config = CentralizedConfig(
        dataset="csv", data_dir=breast_cancer_csv, model="logistic", dp=True, target_epsilon=2.0,
        sampling="shuffle", preprocessing_share=0.25, epochs=2, root_output_dir=str(tmp_path),
    )  # fmt: skip
    privacy = run(config, verbose=False).privacy
    pre = privacy["preprocessing"]
    assert "replac" in privacy["adjacency"]
    replace = dp_accounting.NeighboringRelation.REPLACE_ONE
    acc = dp_accounting.rdp.RdpAccountant(accounting.RDP_ORDERS, replace)
    acc.compose(dp_accounting.GaussianDpEvent(pre["noise_multiplier"] / 2))
    alone = acc.get_epsilon(1e-5)
    assert alone == pytest.approx(0.25 * 2.0, rel=0.02) and pre["epsilon_alone"] == pytest.approx(alone)
    assert privacy["epsilon"] <= 2.0


@pytest.mark.parametrize("adjacency, epsilon", [("add_or_remove_one", 1.0), ("replace_one", 2.0)])
def test_the_default_share_puts_the_count_noise_at_a_tenth_of_the_rows(adjacency, epsilon):
    """Between its bounds the auto share's noise gives counts a stddev of N/10 (replace-one costs about
    twice as much); a small table takes the upper bound, a large one the lower."""
    from training import table_preprocessing as tp

    share = tp.auto_share(455, 31, epsilon, 1e-5, adjacency)
    assert tp.AUTO_SHARE_RANGE[0] < share < tp.AUTO_SHARE_RANGE[1]
    z = tp.noise_for(share, epsilon, 1e-5, adjacency)
    assert z * math.sqrt(31) == pytest.approx(45.5, rel=0.01)  # count stddev = 455 / 10
    assert tp.auto_share(100, 31, epsilon, 1e-5, adjacency) == tp.AUTO_SHARE_RANGE[1]
    assert tp.auto_share(1_000_000, 31, epsilon, 1e-5, adjacency) == tp.AUTO_SHARE_RANGE[0]
    assert tp.auto_share(455, 31, 4 * epsilon, 1e-5, adjacency) < share  # a larger target: a smaller share


def test_a_table_with_strings_and_missing_values_trains_reports_auc_and_its_model_takes_raw_rows(
    credit_csv, tmp_path
):
    import tensorflow as tf

    from models.table_encoding import raw_inputs
    from privacy.preprocessing import encode
    from training.prediction import load_queries, model_probabilities

    config = CentralizedConfig(
        dataset="csv",
        data_dir=credit_csv,
        label_column="default",
        dp=True,
        target_epsilon=3.0,
        root_output_dir=str(tmp_path),
    )
    plan = prepare(config)
    assert plan.dataset.class_names == ("No", "Yes")
    assert 0 < plan.fitted.positive_fraction < 0.2
    vocab = plan.fitted.categorical[0].vocabulary
    assert set(vocab) == {"", "No", "Yes"}
    from training.centralized import launch

    result = launch(plan, verbose=False)
    assert "test_auc" in result.history[-1] and result.history[-1]["test_auc"] > 0.8
    # the saved model on raw rows == the trained model on the encoded rows
    frame = credit_table(50, seed=9).drop(columns=["default"])
    raw_csv = tmp_path / "raw.csv"
    frame.to_csv(raw_csv, index=False)
    x, labels = load_queries(50, input_file=str(raw_csv), model_dir=os.path.join(result.output_dir, "model"))
    assert labels is None and set(x) == {"numeric", "categorical"}
    saved = model_probabilities(os.path.join(result.output_dir, "model"), x)
    columns = {"student": x["categorical"][:, 0], "balance": x["numeric"][:, 0], "income": x["numeric"][:, 1]}
    encoded = encode(plan.fitted, columns)
    keras_model = tf.keras.models.load_model(os.path.join(result.output_dir, "model"), compile=False)
    logits = keras_model(raw_inputs(["balance", "income"], ["student"], columns)).numpy()
    probs = tf.nn.softmax(logits).numpy()
    np.testing.assert_allclose(saved, probs, atol=1e-6)
    assert encoded.shape[1] == plan.fitted.width
    assert np.isnan(x["numeric"]).any() and (x["categorical"] == "").any()  # raw rows really had gaps


def test_declared_schema_mode_costs_nothing_and_reads_no_statistics(breast_cancer_csv, tmp_path):
    from data.schema import TableSchema

    df = pd.read_csv(breast_cancer_csv)
    cols = [
        {
            "name": c,
            "kind": "numeric",
            "lower": 0.0,
            "upper": float(10 ** math.ceil(math.log10(df[c].max() + 1e-9))),
        }
        for c in df.columns
        if c != "label"
    ]
    schema = {"label": "label", "task": "classification", "classes": ["0", "1"], "columns": cols}
    TableSchema.from_json(schema)  # the format is the schema module's
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    plan = prepare(
        CentralizedConfig(
            dataset="csv",
            data_dir=breast_cancer_csv,
            schema_file=str(path),
            dp=True,
            preprocessing="schema",
            target_epsilon=1.0,
            root_output_dir=str(tmp_path),
        )
    )
    assert plan.fitted.mode == "schema" and plan.fitted.cost.noise_multiplier == 0
    assert plan.dp.preprocessing_noise_multiplier == 0
    assert plan.fitted.numeric[0].upper == cols[0]["upper"]


def test_schema_mode_without_declared_bounds_is_refused(breast_cancer_csv, tmp_path):
    with pytest.raises(ConfigError, match="must declare bounds"):
        prepare(
            CentralizedConfig(
                dataset="csv",
                data_dir=breast_cancer_csv,
                dp=True,
                preprocessing="schema",
                target_epsilon=1.0,
                root_output_dir=str(tmp_path),
            )
        )


def test_non_private_preprocessing_is_stated_as_not_covered(breast_cancer_csv, tmp_path):
    plan = prepare(
        CentralizedConfig(
            dataset="csv",
            data_dir=breast_cancer_csv,
            dp=True,
            epochs=1,
            preprocessing="non_private",
            target_epsilon=1.0,
            root_output_dir=str(tmp_path),
        )
    )
    from training.centralized import _report

    report = _report(plan, 1)
    assert report["preprocessing"]["covered"] is False
    assert "NOT covered" in report["statement"]


def _record_fit_weights(monkeypatch) -> list:
    """The row weights every preprocessing fit is given (privacy.preprocessing.fit's 6th argument)."""
    from training import table_preprocessing

    calls = []
    real_fit = table_preprocessing.preprocessing.fit
    monkeypatch.setattr(
        table_preprocessing.preprocessing, "fit", lambda *a, **k: calls.append(a[5]) or real_fit(*a, **k)
    )
    return calls


@pytest.mark.slow
def test_federated_table_statistics_are_user_level_and_composed(tmp_path, monkeypatch):
    from training import federated

    df = credit_table(3000, seed=3).drop(columns=["student"])  # undeclared categories: refused (below)
    df["branch"] = np.random.default_rng(4).integers(0, 60, len(df)).astype(str)
    path = tmp_path / "clients.csv"
    df.to_csv(path, index=False)
    common = dict(
        dataset="csv",
        data_dir=str(path),
        label_column="default",
        client_id_column="branch",
        partition="natural",
        num_clients=0,
        clients_per_round=20,
        rounds=3,
        eval_every=3,
    )
    config = federated.FederatedConfig(
        **common, aggregator="fixed", target_epsilon=5.0, root_output_dir=str(tmp_path / "runs")
    )
    population, dp, _ = federated.prepare(config)
    assert population.preprocessing.schema.client_id == "branch" and dp.preprocessing_noise_multiplier > 0
    # user-level: a user's rows weigh 1/rows (each user's weights sum to 1), so removing one user moves
    # each histogram by at most 1

    calls = _record_fit_weights(monkeypatch)
    federated.prepare(config)
    (weights,) = calls
    assert weights.max() < 1 and weights.sum() == pytest.approx(population.num_clients)
    result = federated.run(config, verbose=False)
    privacy = result.privacy
    assert privacy["unit"] == "user" and privacy["preprocessing"]["mode"] == "private"
    acc = dp_accounting.rdp.RdpAccountant(accounting.RDP_ORDERS)
    acc.compose(dp_accounting.GaussianDpEvent(privacy["preprocessing"]["noise_multiplier"]))
    step = dp_accounting.PoissonSampledDpEvent(
        privacy["sampling_rate"], dp_accounting.GaussianDpEvent(privacy["noise_multiplier"])
    )
    acc.compose(dp_accounting.SelfComposedDpEvent(step, privacy["steps"]))
    sel = privacy["preprocessing"]["selection_delta"]
    assert privacy["epsilon"] == pytest.approx(acc.get_epsilon(1e-5 - sel) - math.log1p(-sel), rel=1e-9)
    assert privacy["epsilon"] <= 5.0
    assert os.path.exists(os.path.join(result.output_dir, "schema.json"))
    from training.prediction import load_queries, model_probabilities

    x, labels = load_queries(
        20, dataset="csv", data_dir=str(path), model_dir=os.path.join(result.output_dir, "model")
    )
    assert model_probabilities(os.path.join(result.output_dir, "model"), x).shape == (20, 2)


def test_a_simulated_partition_of_a_table_weighs_each_users_rows_one_in_total(tmp_path, monkeypatch):
    from training import federated

    path = tmp_path / "t.csv"
    credit_table(1200, seed=5).to_csv(path, index=False)
    config = federated.FederatedConfig(
        dataset="csv",
        data_dir=str(path),
        label_column="default",
        num_clients=40,
        clients_per_round=10,
        rounds=2,
        aggregator="fixed",
        target_epsilon=5.0,
    )
    with pytest.raises(ValueError, match="categories declared"):
        federated.prepare(config)
    credit_table(1200, seed=5).drop(columns=["student"]).to_csv(path, index=False)
    calls = _record_fit_weights(monkeypatch)
    population, dp, _ = federated.prepare(config)
    (weights,) = calls
    sizes = population.client_sizes
    sizes = sizes() if callable(sizes) else sizes
    assert weights.sum() == pytest.approx(40) and weights.max() == pytest.approx(1 / min(sizes))
    assert dp.preprocessing_noise_multiplier > 0


def test_canary_clients_keep_the_tables_preprocessing_and_its_cost(tmp_path):
    # the audit's canary clients wrap the population; its fitted preprocessing (whose DP cost the
    # training noise is calibrated around, and whose layers the released model needs) must survive
    from training import federated

    path = tmp_path / "t.csv"
    credit_table(1200, seed=5).drop(columns=["student"]).to_csv(path, index=False)
    common = dict(dataset="csv", data_dir=str(path), label_column="default", num_clients=40,
                  clients_per_round=10, rounds=2, aggregator="fixed", target_epsilon=5.0)  # fmt: skip
    plain, dp_plain, _ = federated.prepare(federated.FederatedConfig(**common))
    audited, dp_audited, canaries = federated.prepare(
        federated.FederatedConfig(**common, audit_canary_clients=5)
    )
    assert canaries is not None
    assert audited.num_clients == plain.num_clients + int(canaries.inserted.sum())
    assert audited.preprocessing is not None and audited.preprocessing.schema.label == "default"
    assert dp_audited.preprocessing_noise_multiplier == pytest.approx(dp_plain.preprocessing_noise_multiplier)
    assert dp_audited.preprocessing_noise_multiplier > 0


@pytest.mark.slow
def test_compare_on_a_table_audits_raw_column_models_and_leads_with_the_released_auc(tmp_path):
    # the arms' models take raw columns (a categorical one among them); the membership audit feeds them
    # the rows, and --metric=auto reads the DP arm's released positive fraction (about 4%: AUC)
    from training import comparison

    path = tmp_path / "credit.csv"
    credit_table(2000, seed=1).rename(columns={"default": "label"}).to_csv(path, index=False)
    config = comparison.ComparisonConfig(
        dataset="csv", data_dir=str(path), arms=("central_nondp", "central_dp"), target_epsilons=(3.0,),
        audit_reference_models=0, audit_canaries=50, audit_example_canaries=0,
        root_output_dir=str(tmp_path / "runs"), central_epochs=2,
    )  # fmt: skip
    result = comparison.run_comparison(config, log=lambda _: None)
    assert result.metric == "test_auc"
    rows = {r["arm"]: r for r in result.rows}
    for arm in ("central_nondp", "central_dp"):
        assert 0.0 <= float(rows[arm]["attack_auc"]) <= 1.0
    arm_dir = tmp_path / "runs" / "comparison" / "arms" / "central_dp_eps3_seed0"
    assert 0 < json.loads((arm_dir / "preprocessing.json").read_text())["positive_fraction"] < 0.2
