"""A DP run's timings (epoch, round and arm durations, elapsed time, ETA) depend on its private data
(e.g. the Poisson batch sizes) and no guarantee covers them: they stay out of everything the run
prints or releases, and go to not_for_release/. Non-private runs keep their timed progress."""

from __future__ import annotations

import csv
import json
import os
import re

import pytest

from training import centralized, comparison
from training.comparison import records
from training.progress import Progress
from training.run_folder import RunFolder

SECONDS = re.compile(r"\d\.\d+s\b|\d+m\d\ds\b")  # what training.progress.duration prints


def test_untimed_progress_prints_no_elapsed_time_or_eta():
    lines: list[str] = []
    timed = Progress("x", 2, printer=lines.append)
    untimed = Progress("x", 2, timed=False, printer=lines.append)
    timed.step(1, "a")
    untimed.step(1, "b")
    assert "eta" in lines[0] and SECONDS.search(lines[0])
    assert lines[1] == "[x] b"


def _digits_config(tmp_path, name: str, **kw) -> centralized.CentralizedConfig:
    return centralized.CentralizedConfig(
        epochs=2, batch_size=256, root_output_dir=str(tmp_path), experiment_name=name, **kw
    )


def _epoch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[centralized] epoch")]


def _csv_columns(path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def test_dp_centralized_run_releases_no_timing(tmp_path, capsys):
    cfg = _digits_config(tmp_path, "dp", dp=True, noise_multiplier=1.0)
    result = centralized.run(cfg)
    lines = _epoch_lines(capsys.readouterr().out)
    assert len(lines) == 2
    for line in lines:
        assert "eta" not in line and not SECONDS.search(line), line
    assert all("epoch_time_s" not in row for row in result.history)
    assert all("epoch_time_s" in row for row in result.unreleased_history)
    out = tmp_path / "dp"
    assert "epoch_time_s" not in _csv_columns(out / RunFolder.METRICS)
    assert "epoch_time_s" in _csv_columns(out / centralized.UNRELEASED_EPOCHS_FILE)

    again = centralized.run(cfg)  # complete: read back, not redone
    assert again.history == result.history
    assert again.unreleased_history == result.unreleased_history


def test_nonprivate_centralized_run_keeps_timed_progress(tmp_path, capsys):
    result = centralized.run(_digits_config(tmp_path, "nondp"))
    lines = _epoch_lines(capsys.readouterr().out)
    assert lines and all("eta" in line for line in lines)
    assert all("epoch_time_s" in row for row in result.history)
    assert result.history == result.unreleased_history


def _event_bytes(folder: str) -> bytes:
    data = b""
    for root, _, files in os.walk(folder):
        for f in files:
            if f.startswith("events.out.tfevents"):
                with open(os.path.join(root, f), "rb") as fh:
                    data += fh.read()
    return data


def test_comparison_releases_no_timing_and_keeps_it_for_the_data_holder(
    tmp_path, comparison_config, fake_arms, fake_dataset
):
    cfg = comparison_config()
    log: list[str] = []
    res = comparison.run_comparison(
        cfg, dataset=fake_dataset(), run_arm=fake_arms().run, auditor=fake_arms().audit, log=log.append
    )
    grid = comparison.arm_grid(cfg)
    assert any(spec.is_dp for spec in grid)
    out = cfg.output_dir
    assert not [c for c in _csv_columns(os.path.join(out, "results.csv")) if "time" in c]
    md = open(os.path.join(out, "results.md")).read()
    assert "wall time (s)" not in md.lower() and "Wall time includes" not in md
    for spec in grid:
        record = json.load(open(records.arm_result_path(out, spec)))
        assert not [k for k in record["row"] if "time" in k], record["row"]
        assert record["history"] and not [k for h in record["history"] for k in h if "time" in k]
    assert b"_time_s" not in _event_bytes(os.path.join(out, "tensorboard"))  # no hparams metric, no history
    assert log and all("eta" not in line and not SECONDS.search(line) for line in log), log

    with open(os.path.join(out, records.TIMINGS_FILE), newline="") as f:
        timings = list(csv.DictReader(f))
    assert [t["arm_id"] for t in timings] == res.ran == [s.arm_id for s in grid]
    assert set(timings[0]) == {"arm_id", "train_time_s", "audit_time_s", "wall_time_s"}
    assert float(timings[0]["train_time_s"]) == 1.0  # the fake arms' wall time

    # an arm rerun (e.g. after a crash before its record) replaces its row, others stay
    records.write_arm_timings(out, {**timings[0], "train_time_s": 2.0})
    with open(os.path.join(out, records.TIMINGS_FILE), newline="") as f:
        again = list(csv.DictReader(f))
    assert len(again) == len(timings) and float(again[-1]["train_time_s"]) == 2.0


def test_nondp_only_comparison_keeps_timed_progress(tmp_path, comparison_config, fake_arms, fake_dataset):
    cfg = comparison_config(arms=("central_nondp", "fed_nondp"), target_epsilons=())
    log: list[str] = []
    comparison.run_comparison(
        cfg, dataset=fake_dataset(), run_arm=fake_arms().run, auditor=fake_arms().audit, log=log.append
    )
    assert log and all("eta" in line for line in log if line.startswith("[compare] 1/"))


def test_records_of_the_timed_version_are_refused(tmp_path, comparison_config, fake_arms, run_fake):
    cfg = comparison_config(arms=("central_nondp",))
    run_fake(cfg, fake_arms())
    spec = comparison.arm_grid(cfg)[0]
    path = records.arm_result_path(cfg.output_dir, spec)
    record = json.load(open(path))
    record["version"] = 5  # its row held train_time_s, audit_time_s and wall_time_s
    with open(path, "w") as f:
        json.dump(record, f)
    with pytest.raises(ValueError, match="another version"):
        run_fake(cfg, fake_arms())


def test_dp_federated_rounds_print_no_timing_nonprivate_ones_do(tmp_path, capsys):
    from data.datasets import load_digits
    from training import federated

    common = dict(num_clients=40, clients_per_round=8, rounds=2, partition="iid", client_epochs=1,
                  eval_every=2, root_output_dir=str(tmp_path))  # fmt: skip
    federated.run(
        federated.FederatedConfig(**common, aggregator="fixed", noise_multiplier=1.0, experiment_name="dp"),
        load_digits(),
    )
    dp_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[federated] round")]
    federated.run(federated.FederatedConfig(**common, experiment_name="nondp"), load_digits())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[federated] round")]
    assert len(dp_lines) == 2 and all("eta" not in line and not SECONDS.search(line) for line in dp_lines)
    assert lines and all("eta" in line for line in lines)
