"""Faults of the machine, not of the input (issue "Hostile inputs, faults"): a disk that fills while a
run saves (a file size limit, the portable stand-in for a full disk, and a real full tmpfs where the
machine allows mounting one), and an earlier run's files that a rerun could not replace. Each ends
with one line (exit 1 for the machine, 2 for the folder's contents), no traceback, no half-folder,
and earlier results byte-identical. Also: a killed run's TensorBoard events are not shown beside the
rerun's."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from tests.pipelines.test_bad_input import _one_line_error, _snapshot

_RUN = ["--epochs=1", "--experiment_name=exp"]


def _limit_file_size(max_bytes: int):
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG ("File too large"), as a
    # write to a full disk fails with ENOSPC
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


@pytest.fixture
def earlier(tmp_path, run_binary):
    """A finished run beside the one that will fail: it must survive byte for byte."""
    root = tmp_path / "runs"
    proc = run_binary(
        "train_centralized", f"--root_output_dir={root}", "--epochs=1", "--experiment_name=done"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def test_a_disk_that_fills_while_the_model_is_saved_leaves_no_half_folder(earlier, run_binary):
    before = _snapshot(earlier)
    proc = run_binary(
        "train_centralized", f"--root_output_dir={earlier}", *_RUN, preexec_fn=_limit_file_size(20_000)
    )
    line = _one_line_error(proc, code=1)
    assert "File too large" in line and str(earlier / "exp") in line, line
    assert "bug" not in line
    assert not (earlier / "exp").exists()  # the folder this run created is gone again
    assert _snapshot(earlier) == before


def test_a_full_tmpfs(tmp_path, run_binary):
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mount)],
                          capture_output=True, check=False)  # fmt: skip
    if made.returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs (needs root); the file-size limit test stands in")
    try:
        proc = run_binary("train_centralized", f"--root_output_dir={mount}", *_RUN)
        line = _one_line_error(proc, code=1)
        assert "No space left on device" in line, line
        assert os.listdir(mount) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_file_the_rerun_replaces_that_is_a_folder_is_refused_before_anything_changes(tmp_path, run_binary):
    root = tmp_path / "runs"
    assert run_binary("train_centralized", f"--root_output_dir={root}", *_RUN).returncode == 0
    run = root / "exp"
    (run / "privacy.json").unlink()  # as a run killed before its end leaves it: the rerun redoes it
    (run / "metrics.csv").unlink()
    (run / "metrics.csv").mkdir()
    before = _snapshot(root)
    line = _one_line_error(run_binary("train_centralized", f"--root_output_dir={root}", *_RUN))
    assert "metrics.csv is not a regular file" in line, line
    assert _snapshot(root) == before


def test_a_rerun_of_a_killed_run_shows_only_its_own_events(tmp_path, run_binary):
    import tensorflow as tf

    root = tmp_path / "runs"
    assert run_binary("train_centralized", f"--root_output_dir={root}", *_RUN).returncode == 0
    run = root / "exp"
    (run / "privacy.json").unlink()  # killed before its end
    with tf.summary.create_file_writer(str(run / "tensorboard")).as_default(step=1):
        tf.summary.scalar("stale_epoch_1", 1.0)  # e.g. another noise draw's test accuracy
    (run / ".tmp-k1ll3d_xprivacy.json").write_text("half")
    (run / ".tmp-ledger-abcd1234").write_text("the prediction ledger's: not the run's to remove")
    proc = run_binary("train_centralized", f"--root_output_dir={root}", *_RUN)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(events[0])) for v in e.summary.value}
    assert "stale_epoch_1" not in tags and "test_accuracy" in tags
    assert not (run / ".tmp-k1ll3d_xprivacy.json").exists()
    assert (run / ".tmp-ledger-abcd1234").exists()


@pytest.mark.parametrize(
    "error, expected",
    [
        (OSError(28, "No space left on device", "/x/model"), "at /x/model: No space left on device"),
        (OSError(27, "File too large"), "File too large"),
        (OSError(30, "Read-only file system", "/x/p.json"), "at /x/p.json: Read-only file system"),
        (OSError(13, "Permission denied", "/x/privacy.json"), None),  # probed before; later: maybe a bug
        (OSError(2, "No such file or directory"), None),  # a missing file mid-run: a bug, traceback
        (ValueError("No space left on device"), None),  # only OSError and TensorFlow's own errors
        (RuntimeError("boom"), None),
    ],
)
def test_environment_failures_are_told_apart_from_bugs(error, expected):
    from training.run_folder import environment_failure

    line = environment_failure(error)
    assert (line is None) == (expected is None)
    if expected is not None:
        assert expected in line and "\n" not in line


def test_tensorflow_errors_of_a_full_disk_are_environment_failures():
    import tensorflow as tf

    from training.run_folder import environment_failure

    error = tf.errors.ResourceExhaustedError(
        None,
        None,
        "{{function_node __wrapped__SaveV2}} /x/variables.tempstate1; No space left on device [Op:SaveV2]",
    )
    line = environment_failure(error)
    assert line is not None and "/x/variables.tempstate1; No space left on device" in line
    assert "{{" not in line and "[Op:" not in line
    assert environment_failure(tf.errors.InvalidArgumentError(None, None, "shapes differ")) is None


def test_python_ignores_sigxfsz_so_the_size_limit_is_an_error_not_a_kill(tmp_path):
    code = "open(r'%s', 'wb').write(b'x' * 100_000)" % (tmp_path / "f")
    proc = subprocess.run([sys.executable, "-c", code], preexec_fn=_limit_file_size(1000),
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 1 and "File too large" in proc.stderr
