"""The run-folder lock: one live run per folder, released on every exit, a dead holder's lock taken over."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adasparse.cli import main as cli_main
from adasparse.train.lock import LOCK_FILE, RunLock, RunLockedError
from adasparse.train.trainer import train

from .test_trainer import _toy_config, _toy_corpus

REPO = Path(__file__).resolve().parents[2]

_HOLD = textwrap.dedent(
    """
    import sys, time
    from adasparse.train.lock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


def _holder(run_dir: Path) -> subprocess.Popen:
    """A separate process holding the lock on ``run_dir`` (as a live ``adasparse train`` would)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_on_a_live_folder_fails_naming_the_holder(tmp_path, capsys):
    data = _toy_corpus(tmp_path / "data", n_train=40, n_valid=6)
    run = tmp_path / "run"
    train(_toy_config(data, max_steps=2, valid_every=2), run, quiet=True)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    proc = _holder(run)
    try:
        info = json.loads((run / LOCK_FILE).read_text())
        assert info["pid"] == proc.pid and info["host"]
        with pytest.raises(RunLockedError, match=f"in use by another training run \\(PID {proc.pid}"):
            RunLock(run).acquire()
        # --overwrite too: it must not delete the live run's checkpoints
        argv = ["train", "--data", str(data), "--src-lang", "in", "--tgt-lang", "out", "--out", str(run)]
        assert cli_main([*argv, "--overwrite", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"PID {proc.pid}" in err and "choose another --out" in err and "Traceback" not in err
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over_with_a_message(tmp_path, caplog):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: the file still names the dead process
    proc.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == proc.pid
    with caplog.at_level(logging.WARNING, logger="adasparse.train.lock"):
        with RunLock(tmp_path) as lock:
            assert lock.previous["pid"] == proc.pid
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of PID {proc.pid}" in caplog.text
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released cleanly: nothing stale for the next run
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adasparse.train.lock"), RunLock(tmp_path) as lock:
        assert lock.previous is None
    assert "taking over" not in caplog.text


def test_lock_is_exclusive_within_one_process_and_released_on_exceptions(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path).acquire()
    # a run that fails (here: no training data) releases the folder for the next one
    with pytest.raises(FileNotFoundError):
        train(_toy_config(tmp_path / "missing"), tmp_path / "run", quiet=True)
    with RunLock(tmp_path / "run"):
        pass


def test_lock_released_after_ctrl_c(tmp_path):
    """SIGINT during training: the CLI exits 130 and the folder can be locked again at once."""
    data = _toy_corpus(tmp_path / "data", n_train=40, n_valid=6)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_toy_config(data, max_steps=100_000, valid_every=1000).to_dict()))
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-X",
        "faulthandler",
        "-m",
        "adasparse",
        "train",
        "--config",
        str(cfg),
        "--out",
        str(run),
        "--quiet",
    ]
    err = tmp_path / "stderr.txt"  # a file, not a pipe: a pipe nobody drains blocks a chatty child
    with open(err, "w") as errf:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errf, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "log.jsonl").exists():
            time.sleep(0.05)
        with pytest.raises(RunLockedError):
            RunLock(run).acquire()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:  # hung: make faulthandler print every thread's stack, then fail with it
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=30)
            pytest.fail(f"train did not exit within 180 s of SIGINT; its stacks:\n{err.read_text()}")
        assert rc == 130, err.read_text()
    finally:
        proc.kill()
        proc.wait()
    with RunLock(run) as lock:
        assert lock.previous is None
