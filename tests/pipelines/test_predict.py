"""The predict binary: over budget exits 3 with one line, bad input exits 2, budgets hold across runs,
a reader that closes standard output early gets exit 4 and one line with what was delivered."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest

from privacy import prediction_ledger as led
from privacy import prediction_release as rel


@pytest.fixture
def predict(run_binary):
    return functools.partial(run_binary, "predict", timeout=300)


def _fake_model_dir(tmp_path) -> str:
    model = tmp_path / "run" / "model"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"")  # never loaded: the budget check comes first
    return str(model)


def test_binary_refuses_over_budget_with_exit_3_and_one_line(tmp_path, predict):
    model = _fake_model_dir(tmp_path)
    ledger = led.PredictionLedger(led.ledger_path(model))
    ledger.spend(9, rel.PredictionConfig("label", "exponential", 0.1), epsilon_budget=1.0)
    out = predict(f"--model_dir={model}", "--dataset=digits", "--num_queries=2", "--prediction_epsilon=0.1")
    assert out.returncode == pred_exit_budget()
    assert "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and "prediction budget exceeded" in line and "at most 1 more" in line
    assert Fraction(json.loads(open(led.ledger_path(model)).read())["epsilon_spent"]) == Fraction(9, 10)


def test_binary_bad_input_exits_2_without_traceback(tmp_path, predict):
    model = _fake_model_dir(tmp_path)
    cases = [
        ("--model_dir=/nonexistent/model", "--dataset=digits", "--prediction_budget=1"),
        (f"--model_dir={model}", "--dataset=digits"),  # no ledger yet and no budget
        (f"--model_dir={model}", "--dataset=digits", "--prediction_budget=1", "--mechanism=gaussian"),
    ]
    for args in cases:
        out = predict(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.startswith("predict: error:"), out.stderr


def pred_exit_budget() -> int:
    from pipelines.predict import EXIT_BUDGET_EXCEEDED

    return EXIT_BUDGET_EXCEEDED


@pytest.mark.slow
def test_binary_budget_holds_across_process_restarts(saved_digits_model, tmp_path, predict):
    saved_model = saved_digits_model
    model = saved_model
    common = [f"--model_dir={model}", "--prediction_epsilon=0.25", "--seed=0"]
    out1 = tmp_path / "a.csv"
    r1 = predict(
        *common, "--dataset=digits", "--num_queries=2", "--prediction_budget=1", f"--output_file={out1}"
    )
    assert r1.returncode == 0, r1.stderr
    assert "accuracy of released labels vs true labels" in r1.stdout
    assert "spent epsilon 0.5 of 1" in r1.stdout
    assert out1.read_text().splitlines()[0] == "query,label" and len(out1.read_text().splitlines()) == 3

    # A new process: 3 more would make 1.25 > 1. Refused whole, nothing written.
    out2 = tmp_path / "b.csv"
    r2 = predict(*common, "--dataset=digits", "--num_queries=3", f"--output_file={out2}")
    assert r2.returncode == 3 and "Traceback" not in r2.stderr and not out2.exists()

    # Exactly the rest of the budget, from a CSV with a label column, releasing noisy scores.
    from data.datasets import load_digits

    d = load_digits()
    csv = tmp_path / "queries.csv"
    header = ",".join(f"f{i}" for i in range(64)) + ",label"
    rows = [",".join(map(str, x.ravel())) + f",{y}" for x, y in zip(d.x_test[:2], d.y_test[:2], strict=True)]
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    out3 = tmp_path / "c.csv"
    r3 = predict(
        *common, f"--input_file={csv}", "--num_queries=2", "--release=scores", f"--output_file={out3}"
    )
    assert r3.returncode == 0, r3.stderr
    assert out3.read_text().splitlines()[0].startswith("query,score_0,") and "accuracy" in r3.stdout

    r4 = predict(*common, "--dataset=digits", "--num_queries=1")
    assert r4.returncode == 3 and "at most 0 more" in r4.stderr

    data = json.loads(open(led.ledger_path(model)).read())
    assert Fraction(data["epsilon_spent"]) == 1 == Fraction(data["epsilon_budget"])
    assert data["queries_answered"] == 4 and len(data["entries"]) == 2


def _waiting_for(lock_path: str) -> set[int]:
    """PIDs blocked in flock() on `lock_path`: the kernel lists waiters in /proc/locks after '->'."""
    inode = os.stat(lock_path).st_ino
    pids = set()
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            if "->" in parts:  # "N: -> FLOCK ADVISORY WRITE <pid> <maj:min:inode> <start> <end>"
                pid, device = parts[parts.index("->") + 4 : parts.index("->") + 6]
                if int(device.rsplit(":", 1)[1]) == inode:
                    pids.add(int(pid))
    return pids


def _entries(ledger_file: str) -> list[dict]:
    return json.loads(open(ledger_file).read())["entries"] if os.path.exists(ledger_file) else []


def _rows_on_disk(folder: str) -> int:
    """Answer rows in every file of `folder`, staged or final (a header line is not an answer)."""
    if not os.path.isdir(folder):
        return 0
    return sum(max(0, len(open(os.path.join(folder, n)).read().splitlines()) - 1) for n in os.listdir(folder))


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists("/proc/locks"), reason="needs Linux /proc/locks to see a blocked flock"
)
def test_killing_predict_at_any_point_never_leaves_an_uncharged_answer(
    saved_digits_model, tmp_path, binary_env, repo
):
    # Four predict processes on one model, each held at the ledger's lock by this test (anyone who
    # can run predict can hold it). While they wait, no answer may exist anywhere. Then: one is
    # SIGKILLed while blocked, one loses its output folder (the write after the charge fails), one
    # is SIGKILLed as soon as its charge is in the ledger, one finishes. Whenever an answer row is
    # on disk, the ledger holds the spend of that process.
    model = tmp_path / "run" / "model"
    shutil.copytree(saved_digits_model, model)  # a fresh ledger: other tests spend on the shared model
    ledger_file = led.ledger_path(str(model))
    lock_path = led.PredictionLedger(ledger_file).lock_path
    n = 50
    roles = ["killed_blocked", "folder_removed", "killed_after_charge", "finishes"]
    folders = {role: tmp_path / role for role in roles}
    procs: dict[str, subprocess.Popen] = {}
    lock = open(lock_path, "a")
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    try:
        for role in roles:
            folders[role].mkdir()
            procs[role] = subprocess.Popen(
                [sys.executable, "-m", "pipelines.predict", f"--model_dir={model}", "--dataset=digits",
                 f"--num_queries={n}", "--prediction_epsilon=0.1", "--prediction_budget=1000",
                 f"--output_file={folders[role] / 'answers.csv'}"],
                cwd=repo, env=binary_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        deadline = time.monotonic() + 240
        while _waiting_for(lock_path) != {p.pid for p in procs.values()}:
            exited = {r: p.communicate()[1] for r, p in procs.items() if p.poll() is not None}
            assert not exited, f"predict exited before reaching the ledger: {exited}"
            assert time.monotonic() < deadline, "predict never blocked on the ledger's lock"
            time.sleep(0.2)
        for role in roles:  # blocked at the charge: no answer exists, staged or final
            assert os.listdir(folders[role]) == [], (role, os.listdir(folders[role]))
        assert _entries(ledger_file) == []

        procs["killed_blocked"].kill()
        procs["killed_blocked"].wait()
        shutil.rmtree(folders["folder_removed"])
        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        target = procs["killed_after_charge"].pid
        deadline = time.monotonic() + 120
        while not any(e["pid"] == target for e in _entries(ledger_file)):
            assert procs["killed_after_charge"].poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        os.kill(target, signal.SIGKILL)
        outputs = {role: p.communicate(timeout=240) for role, p in procs.items()}
    finally:
        lock.close()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()

    entries = _entries(ledger_file)
    charged = {role: sum(e["num_queries"] for e in entries if e["pid"] == p.pid) for role, p in procs.items()}
    for role in roles:
        rows = _rows_on_disk(str(folders[role]))
        assert rows == 0 or charged[role] == n, f"{role}: {rows} answer rows on disk, {charged[role]} charged"
    assert charged == {"killed_blocked": 0, "folder_removed": n, "killed_after_charge": n, "finishes": n}
    assert procs["finishes"].returncode == 0, outputs["finishes"][1]
    assert _rows_on_disk(str(folders["finishes"])) == n
    assert procs["killed_blocked"].returncode == -signal.SIGKILL
    # On a loaded machine the charged process can finish its few rows before the kill lands; either
    # way the invariant above held (its rows, if any, were charged first).
    assert procs["killed_after_charge"].returncode in (-signal.SIGKILL, 0), outputs["killed_after_charge"][1]
    if procs["killed_after_charge"].returncode == 0:
        assert _rows_on_disk(str(folders["killed_after_charge"])) == n
    err = outputs["folder_removed"][1].strip()
    assert procs["folder_removed"].returncode == pred_exit_not_delivered(), err
    assert "\n" not in err and "charged" in err and "not delivered" in err and "Traceback" not in err, err
    assert json.loads(open(ledger_file).read())["queries_answered"] == 3 * n


def pred_exit_not_delivered() -> int:
    from pipelines.predict import EXIT_NOT_DELIVERED

    return EXIT_NOT_DELIVERED


def _predict_popen(model, queries, n: int, *more: str, binary_env, repo) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.predict", f"--model_dir={model}", f"--input_file={queries}",
         f"--num_queries={n}", "--release=scores", "--prediction_epsilon=0.01", "--prediction_budget=1000",
         *more],
        cwd=repo, env=binary_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
    )  # fmt: skip


def _model_and_queries(saved_digits_model, tmp_path, n: int):
    model = tmp_path / "run" / "model"
    shutil.copytree(saved_digits_model, model)  # a fresh ledger: other tests spend on the shared model
    queries = tmp_path / "queries.npy"
    np.save(queries, np.random.default_rng(0).random((n, 8, 8), dtype=np.float32) * 16)
    return model, queries


@pytest.mark.slow
def test_reader_closing_stdout_early_gets_exit_4_and_one_line_with_the_delivered_count(
    saved_digits_model, tmp_path, binary_env, repo
):
    # `predict ... | head -c 3000`: the answers (~200 bytes a row of scores, far more than a pipe's
    # 64 KiB) are charged first; the reader takes 3000 bytes and closes the pipe. predict must not
    # claim it answered them all: one line with how many the reader got in full and how many were
    # charged but not delivered, exit 4, no traceback, no "Exception ignored" at shutdown.
    n = 2000
    model, queries = _model_and_queries(saved_digits_model, tmp_path, n)
    proc = _predict_popen(model, queries, n, binary_env=binary_env, repo=repo)
    try:
        got = b""
        while len(got) < 3000:  # unbuffered: exactly what was read from the pipe, no read-ahead
            chunk = proc.stdout.read(3000 - len(got))
            assert chunk, f"stdout ended after {len(got)} bytes: {proc.communicate(timeout=60)[1]!r}"
            got += chunk
        err = _close_and_wait(proc)
    finally:
        _kill(proc)
    assert proc.returncode == pred_exit_not_delivered(), err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("predict: error: "), err
    found = re.search(r"(\d+) delivered before the reader closed standard output; (\d+) charged but not", err)
    assert found and f"answered {n} queries (charged" in err, err
    delivered, undelivered = int(found[1]), int(found[2])
    assert delivered + undelivered == n and delivered < n, err
    assert got.startswith(b"query,score_0,")
    rows_read = got.count(b"\n") - 1  # whole rows the reader got (the header is not an answer)
    if sys.platform == "linux":  # what was left unread in the pipe is known there: the count is exact
        assert delivered == rows_read, (delivered, rows_read, err)
    else:
        assert delivered >= rows_read, (delivered, rows_read, err)
    data = json.loads(open(led.ledger_path(str(model))).read())
    assert data["queries_answered"] == n and [e["num_queries"] for e in data["entries"]] == [n]


def _close_and_wait(proc) -> str:
    """Closes our end of the binary's stdout (the reader goes away) and returns its stderr."""
    proc.stdout.close()
    return proc.communicate(timeout=240)[1].decode()


def _kill(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_reader_gone_before_the_summary_leaves_the_answer_file_and_exit_0(
    saved_digits_model, tmp_path, binary_env, repo
):
    # With --output_file the answers are written atomically and the summary goes to stdout; a reader
    # that closed (`| true`) loses only the summary: exit 0, the file complete, no traceback.
    n = 50
    model, queries = _model_and_queries(saved_digits_model, tmp_path, n)
    answers = tmp_path / "answers.csv"
    proc = _predict_popen(model, queries, n, f"--output_file={answers}", binary_env=binary_env, repo=repo)
    try:
        err = _close_and_wait(proc)
    finally:
        _kill(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err and err == "", err
    assert len(answers.read_text().splitlines()) == n + 1
    assert json.loads(open(led.ledger_path(str(model))).read())["queries_answered"] == n
