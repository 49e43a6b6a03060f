"""One run per folder at a time: the folder's lock, the same-run check redone under it, and the
binaries' one line when another process holds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from training.run_folder import FolderInUse, RunFolder, lock_folder, release_folders

_HOLD = """
import sys, time
from training.run_folder import lock_folder
lock_folder(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def _holder(folder, repo) -> subprocess.Popen:
    """Another process that takes `folder`'s lock and keeps it."""
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], cwd=repo, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def held_by_another_process(tmp_path, repo):
    proc = _holder(tmp_path / "exp", repo)
    yield tmp_path / "exp"
    proc.kill()
    proc.wait()


def test_a_folder_another_process_holds_is_refused(held_by_another_process):
    with pytest.raises(FolderInUse, match="in use by another run"):
        RunFolder(str(held_by_another_process.parent), "exp").create()


def test_the_lock_goes_with_the_process(tmp_path, repo):
    """A killed run never blocks its resume: the kernel drops the lock with the process."""
    proc = _holder(tmp_path / "exp", repo)
    proc.kill()
    proc.wait()
    try:
        RunFolder(str(tmp_path), "exp").create()  # no FolderInUse
    finally:
        release_folders()


def test_the_same_run_check_is_redone_under_the_lock(tmp_path):
    """Two runs that checked an empty folder at the same moment: the later `create` sees the other's
    run_config.json and refuses, instead of writing a different run into its folder."""
    folder = RunFolder(str(tmp_path), "exp")
    folder.check_same_run({"seed": 1})  # the folder is empty: passes
    os.makedirs(folder.path)
    (tmp_path / "exp" / RunFolder.RUN_CONFIG).write_text(json.dumps({"seed": 2}))  # the other run
    with pytest.raises(FolderInUse, match="another run wrote to the folder meanwhile"):
        folder.create()
    release_folders()


def test_one_process_may_reopen_its_own_folder(tmp_path):
    try:
        RunFolder(str(tmp_path), "exp").create()
        RunFolder(str(tmp_path), "exp").create()  # the Python API's sequential runs, one process
        lock_folder(str(tmp_path / "exp"))
    finally:
        release_folders()


def test_a_binary_into_a_held_folder_gets_one_line(held_by_another_process, run_binary):
    before = sorted(os.listdir(held_by_another_process))
    start = time.time()
    root = held_by_another_process.parent
    proc = run_binary("train_centralized", "--epochs=1", f"--root_output_dir={root}", "--experiment_name=exp",
                      timeout=300)  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "in use by another run" in lines[0] and "Traceback" not in proc.stderr
    assert sorted(os.listdir(held_by_another_process)) == before  # nothing written
    assert time.time() - start < 300


def test_an_unchanged_folder_passes_and_a_checkpoint_written_meanwhile_is_refused(tmp_path):
    """A resume whose checked files did not change takes the lock; a federated run that found no
    checkpoint is refused if another run wrote one before the lock was taken."""
    folder = RunFolder(str(tmp_path), "exp")
    os.makedirs(folder.path)
    (tmp_path / "exp" / RunFolder.RUN_CONFIG).write_text(json.dumps({"seed": 1}))
    folder.check_same_run({"seed": 1})
    try:
        folder.create()  # unchanged since the check
    finally:
        release_folders()
    other = RunFolder(str(tmp_path), "exp")
    other.watch(os.path.join("checkpoints", RunFolder.RUN_CONFIG))  # absent when checked
    os.makedirs(tmp_path / "exp" / "checkpoints")
    (tmp_path / "exp" / "checkpoints" / RunFolder.RUN_CONFIG).write_text("{}")
    with pytest.raises(FolderInUse, match="checkpoints/run_config.json"):
        RunFolder(str(tmp_path), "exp").create()  # another instance, the same folder
    release_folders()
