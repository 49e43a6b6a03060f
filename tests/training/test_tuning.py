"""The private search end to end (library): what it releases, and the epsilon it states for it."""

from __future__ import annotations

import csv
import json
import os

import dp_accounting
import numpy as np
import pytest
from dp_accounting.dp_event import RepeatAndSelectDpEvent

from privacy import private_selection as ps
from privacy.accounting import dp_sgd_epsilon
from privacy.config import DpSgdConfig
from privacy.private_selection import RunsDistribution
from training import tuning

SPACE = tuning.SearchSpace(
    learning_rate=(0.1, 0.3), l2_norm_clip=(0.5, 1.0), batch_size=(256, 512), epochs=(3, 6)
)


def _files(root) -> dict[str, bytes]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return out


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    config = tuning.TuningConfig(
        target_epsilon=3.0,
        runs=RunsDistribution("geometric", 3.0),
        space=SPACE,
        seed=4,
        root_output_dir=str(root),
    )
    return config, tuning.run(config, verbose=False)


def test_reported_epsilon_is_repeat_and_select_from_the_recorded_parameters(search):
    config, result = search
    privacy = json.loads(open(os.path.join(result.output_dir, "privacy.json")).read())
    t, per_run = privacy["tuning"], privacy["tuning"]["per_run"]
    q = per_run["batch_size"] / per_run["num_examples"]
    gaussian = dp_accounting.GaussianDpEvent(per_run["noise_multiplier"])
    training = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, gaussian), per_run["steps"]
    )
    event = dp_accounting.ComposedDpEvent(
        [training, dp_accounting.GaussianDpEvent(per_run["score"]["noise_stddev"])]
    )
    accountant = dp_accounting.rdp.RdpAccountant([1 + x / 10 for x in range(1, 100)] + list(range(11, 64)))
    accountant.compose(RepeatAndSelectDpEvent(event, t["mean_runs"], t["shape"]))
    assert privacy["accountant"] == "rdp" and t["distribution"] == "geometric" and t["shape"] == 1.0
    assert privacy["epsilon"] <= config.target_epsilon
    assert privacy["epsilon"] == pytest.approx(accountant.get_epsilon(privacy["delta"]), rel=0.02)
    one_run = DpSgdConfig(
        per_run["num_examples"], per_run["batch_size"], per_run["epochs"], per_run["noise_multiplier"]
    )
    assert privacy["epsilon"] > dp_sgd_epsilon(one_run)  # the search costs more than the run it picked


def test_every_run_tried_is_dominated_and_only_the_best_is_released(search):
    config, result = search
    per_run = result.privacy["tuning"]["per_run"]
    ref = DpSgdConfig(
        per_run["num_examples"], per_run["batch_size"], per_run["epochs"], per_run["noise_multiplier"]
    )
    ref_rdp = ps.rdp_curve(ps.per_run_event(ref, config.score_noise))
    with open(os.path.join(result.output_dir, tuning.TRIALS_FILE), newline="") as f:
        rows = list(csv.DictReader(f))
    search_record = json.loads(open(os.path.join(result.output_dir, tuning.SEARCH_FILE)).read())
    assert len(rows) == search_record["runs_made"] >= 1  # K: in not_for_release/ only
    assert "runs_made" not in result.privacy["tuning"]
    for row in rows:
        dp = DpSgdConfig(
            ref.num_examples, int(row["batch_size"]), int(row["epochs"]), float(row["noise_multiplier"])
        )
        assert ps.dominates(ps.rdp_curve(ps.per_run_event(dp, config.score_noise)), ref_rdp), row
        assert float(row["learning_rate"]) in SPACE.learning_rate and int(row["epochs"]) in SPACE.epochs
    best = max(rows, key=lambda r: float(r["noisy_validation_accuracy"]))
    selected = json.loads(open(os.path.join(result.output_dir, tuning.RESULT_FILE)).read())["selected"]
    assert selected["noisy_validation_accuracy"] == pytest.approx(float(best["noisy_validation_accuracy"]))
    assert "trial" not in selected and 0 <= selected["test_accuracy"] <= 1  # no run index: it reveals K
    assert os.path.isdir(os.path.join(result.output_dir, "model"))
    assert not any(name.startswith("trial_") for name in os.listdir(result.output_dir))  # no other model


def test_rerunning_a_finished_search_changes_nothing(search):
    config, result = search
    before = _files(result.output_dir)
    again = tuning.run(config, verbose=False)
    assert _files(result.output_dir) == before and again.selected == result.selected


def test_bad_settings_fail_before_anything_is_written(tmp_path):
    runs = RunsDistribution("geometric", 3.0)
    cases = [
        (dict(space=dict(learning_rate=())), "search space is empty"),
        (dict(target_epsilon=0.01), "unreachable"),
        (dict(score_noise=0.0), "score_noise must be > 0"),
        (dict(model="cnn"), "width applies to the mlp model only"),
        (dict(space=dict(batch_size=(5000,))), "exceeds"),
        (dict(delta=0.01), "1/N"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            settings = dict(target_epsilon=3.0, runs=runs, root_output_dir=str(tmp_path / "runs")) | kwargs
            if "space" in kwargs:
                settings["space"] = tuning.SearchSpace(**kwargs["space"])
            tuning.prepare(tuning.TuningConfig(**settings))
    assert not (tmp_path / "runs").exists()


def test_the_validation_split_is_per_record_so_adding_one_moves_no_other():
    """Add/remove accounting of the two parts needs each record's side to depend on that record only."""
    from data.datasets import load_digits

    ds = load_digits()
    side = tuning.in_validation(ds.x_train, ds.y_train, 0.15, seed=3)
    grown = tuning.in_validation(ds.x_train[:-1], ds.y_train[:-1], 0.15, seed=3)  # one record removed
    assert np.array_equal(side[:-1], grown)
    assert 0.1 < side.mean() < 0.2  # Bernoulli(0.15) per record
    assert not np.array_equal(side, tuning.in_validation(ds.x_train, ds.y_train, 0.15, seed=4))


@pytest.mark.slow
def test_federated_search_states_a_user_level_epsilon_for_the_whole_search(tmp_path):
    """--pipeline=federated: DP-FedAvg runs (fixed clip, Poisson clients), scored on validation users."""
    from privacy.config import DpFedAvgConfig
    from training.federated.search import VALIDATION_EXAMPLES_PER_USER, FederatedSearchSpace

    space = FederatedSearchSpace(
        client_learning_rate=(0.1,), clip_norm=(0.5, 1.0), clients_per_round=(8, 12), rounds=(3, 5)
    )
    runs = RunsDistribution("geometric", 2.0)
    config = tuning.TuningConfig(target_epsilon=8.0, runs=runs, space=space, pipeline="federated",
                                 num_clients=80, seed=1, root_output_dir=str(tmp_path))  # fmt: skip
    result = tuning.run(config, verbose=False)
    privacy, per_run = result.privacy, result.privacy["tuning"]["per_run"]
    assert privacy["unit"] == "user" and privacy["adjacency"] == "add/remove one user"
    assert per_run["score"]["noise_stddev"] == 2.0 * VALIDATION_EXAMPLES_PER_USER  # default 2 x sensitivity
    step = dp_accounting.PoissonSampledDpEvent(
        per_run["clients_per_round"] / per_run["num_clients"],
        dp_accounting.GaussianDpEvent(per_run["noise_multiplier"]),
    )
    event = dp_accounting.ComposedDpEvent(
        [dp_accounting.SelfComposedDpEvent(step, per_run["rounds"]), dp_accounting.GaussianDpEvent(2.0)]
    )
    accountant = dp_accounting.rdp.RdpAccountant([1 + x / 10 for x in range(1, 100)] + list(range(11, 64)))
    accountant.compose(RepeatAndSelectDpEvent(event, 2.0, 1.0))
    assert privacy["epsilon"] <= 8.0
    assert privacy["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=0.02)
    ref = DpFedAvgConfig(
        per_run["num_clients"], per_run["clients_per_round"], per_run["rounds"], per_run["noise_multiplier"]
    )
    ref_rdp = ps.rdp_curve(ps.per_run_event(ref, 2.0))
    for row in result.trials:
        dp = DpFedAvgConfig(ref.num_clients, int(row["clients_per_round"]), int(row["rounds"]),
                            float(row["noise_multiplier"]), float(row["clip_norm"]))  # fmt: skip
        assert ps.dominates(ps.rdp_curve(ps.per_run_event(dp, 2.0)), ref_rdp), row
    assert 0 <= result.selected["test_accuracy"] <= 1 and os.path.isdir(
        os.path.join(result.output_dir, "model")
    )


def _released_files(run_dir: str) -> dict[str, bytes]:
    """Every file of a search's run folder outside not_for_release/ (the outputs a user publishes)."""
    return {k: v for k, v in _files(run_dir).items() if not k.startswith(tuning.NOT_FOR_RELEASE + os.sep)}


def _search_with_k(root, k: int, monkeypatch, capsys) -> tuple[str, str]:
    """The real centralized search with K forced to `k`: (run folder, stdout with paths neutralised)."""
    monkeypatch.setattr(RunsDistribution, "draw", lambda self, rng: k)
    space = tuning.SearchSpace(learning_rate=(0.1, 0.3), l2_norm_clip=(1.0,), batch_size=(256,),
                               epochs=(2,), width=(32,))  # fmt: skip
    config = tuning.TuningConfig(target_epsilon=3.0, runs=RunsDistribution("geometric", 3.0), space=space,
                                 seed=0, root_output_dir=str(root))  # fmt: skip
    capsys.readouterr()
    result = tuning.run(config, verbose=True)
    assert len(result.trials) == k  # the draw was forced
    return result.output_dir, capsys.readouterr().out.replace(str(root), "<root>")


def _fingerprint_without_weights(model_dir: str) -> dict:
    from tensorflow.core.protobuf import fingerprint_pb2

    fingerprint = fingerprint_pb2.FingerprintDef()
    with open(os.path.join(model_dir, "fingerprint.pb"), "rb") as f:
        fingerprint.ParseFromString(f.read())
    fields = ("saved_model_checksum", "graph_def_program_hash", "signature_def_hash")
    fields += ("saved_object_graph_hash",)  # not checkpoint_hash: that one hashes the weights
    return {name: getattr(fingerprint, name) for name in fields}


@pytest.mark.slow
def test_nothing_released_depends_on_the_number_of_runs(tmp_path, monkeypatch, capsys):
    """K must stay secret: outside not_for_release/, the folders of a K=1 and a K=5 search may differ
    only in the selected run's weights, configuration and scores (here one model shape for all runs)."""
    import tensorflow as tf

    one, out_one = _search_with_k(tmp_path / "k1", 1, monkeypatch, capsys)
    five, out_five = _search_with_k(tmp_path / "k5", 5, monkeypatch, capsys)
    dirs = (one, five)
    files = [_released_files(d) for d in dirs]
    assert sorted(files[0]) == sorted(files[1])
    models = [tf.keras.models.load_model(os.path.join(d, "model"), compile=False) for d in dirs]
    assert [layer.name for layer in models[0].layers] == [layer.name for layer in models[1].layers]
    assert [v.name for v in models[0].variables] == [v.name for v in models[1].variables]
    checkpoints = [tf.train.list_variables(os.path.join(d, "model", "variables", "variables")) for d in dirs]
    assert checkpoints[0] == checkpoints[1]  # the saved variables' names and shapes
    # privacy.json byte for byte (K is not in it), and the SavedModel's graph, without the weights
    for name in ("privacy.json", "run_config.json", "model/keras_metadata.pb", "model/saved_model.pb"):
        assert files[0][name] == files[1][name], name
    assert _fingerprint_without_weights(os.path.join(one, "model")) == _fingerprint_without_weights(
        os.path.join(five, "model")
    )
    results = [json.loads(f[tuning.RESULT_FILE]) for f in files]
    assert results[0]["note"] == results[1]["note"] and sorted(results[0]) == sorted(results[1])
    assert sorted(results[0]["selected"]) == sorted(results[1]["selected"])  # values: the selected run's
    shown = [[line for line in out.splitlines() if not line.startswith("[tune] released:")]
             for out in (out_one, out_five)]  # fmt: skip
    assert shown[0] == shown[1] and shown[0]  # stdout: no run count, no per-run lines
    for run_dir, k in ((one, 1), (five, 5)):  # K is kept, for the data holder only
        with open(os.path.join(run_dir, tuning.SEARCH_FILE)) as f:
            assert json.load(f)["runs_made"] == k
        with open(os.path.join(run_dir, tuning.PROGRESS_FILE)) as f:
            assert len(f.read().splitlines()) == k
