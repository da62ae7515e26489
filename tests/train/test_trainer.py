"""The training loop end to end: train → checkpoint → translate → evaluate, exact resume after SIGKILL, DDP."""

import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from adasparse.cli import main as cli_main
from adasparse.train.checkpoint import CheckpointManager, load_checkpoint
from adasparse.train.config import TrainConfig
from adasparse.train.loading import load_model
from adasparse.train.logger import read_log
from adasparse.train.trainer import _param_groups, _Trainer, train

ROOT = Path(__file__).resolve().parents[2]
MULTI30K = ROOT / ".." / "shared" / "data" / "multi30k"


def _toy_corpus(folder: Path, n_train=240, n_valid=24, seed=0) -> Path:
    """A reverse-the-symbols task as a corpus folder (train/valid/test, languages 'in'/'out')."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghij"

    def pairs(n):
        out = []
        for _ in range(n):
            w = [rng.choice(letters) for _ in range(rng.randint(2, 7))]
            out.append((" ".join(w), " ".join(reversed(w))))
        return out

    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_valid)):
        p = pairs(n)
        (folder / f"{split}.in").write_text("".join(s + "\n" for s, _ in p))
        (folder / f"{split}.out").write_text("".join(t + "\n" for _, t in p))
    return folder


def _toy_config(data: Path, **kw) -> TrainConfig:
    base = dict(
        data_dir=str(data),
        src_lang="in",
        tgt_lang="out",
        tokenizer="whitespace",
        preset="tiny",
        attention="learned",
        model={"dropout": 0.1, "max_len": 32},
        lr=3e-3,
        warmup_steps=10,
        batch_tokens=120,
        max_steps=12,
        valid_every=4,
        valid_max_sentences=8,
        metric="wer",
        log_every=2,
        keep_last=5,
        seed=3,
        num_threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).model_state


def test_train_logs_alpha_and_checkpoints(tmp_path):
    data = _toy_corpus(tmp_path / "data")
    res = train(_toy_config(data), tmp_path / "run", quiet=True)
    assert res.step == 12
    log = read_log(tmp_path / "run" / "log.jsonl")
    train_recs = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in train_recs] == [2, 4, 6, 8, 10, 12]
    for r in train_recs:  # every head's α at every logging step
        assert set(r["alpha"]) == {"enc_self", "dec_self", "context"}
        assert all(len(layer) == 2 for layer in r["alpha"]["enc_self"])  # tiny: 2 heads
        assert r["tokens_per_s"] > 0 and r["lr"] > 0
    assert [r["step"] for r in log if r["kind"] == "valid"] == [4, 8, 12]
    assert log[0]["kind"] == "init" and log[0]["step"] == 0
    ckpts = CheckpointManager(tmp_path / "run", create=False).checkpoints()
    assert [p.name for p in ckpts] == ["step_00000004", "step_00000008", "step_00000012"]
    assert (tmp_path / "run" / "tensorboard").is_dir()
    model, toks, ckpt = load_model(tmp_path / "run")
    assert ckpt.path == res.best_checkpoint
    assert toks.src.vocab_size == model.config.src_vocab_size
    # a second run into the same folder must not mix with the first
    with pytest.raises(ValueError, match="--resume .* --overwrite"):
        train(_toy_config(data), tmp_path / "run", quiet=True)
    again = train(_toy_config(data, max_steps=4), tmp_path / "run", quiet=True, overwrite=True)
    assert [p.name for p in CheckpointManager(tmp_path / "run", create=False).checkpoints()] == ["step_00000004"]
    assert again.best_checkpoint.name == "step_00000004"


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_bad_new_run_costs_the_old_run_nothing(tmp_path):
    """--overwrite deletes the earlier run only once the new data, tokenizers and batchers have been checked;
    --resume with no checkpoint and an --out that is a checkpoint folder are errors that touch nothing."""
    data = _toy_corpus(tmp_path / "data")
    run = tmp_path / "run"
    train(_toy_config(data, max_steps=4), run, quiet=True)
    before = _tree(run)
    bad = _toy_corpus(tmp_path / "bad")
    (bad / "train.out").write_text("".join((bad / "train.out").read_text().splitlines(True)[:-1]))  # one line short
    with pytest.raises(ValueError, match="train.out"):
        train(_toy_config(bad, max_steps=4), run, quiet=True, overwrite=True)
    long = _toy_corpus(tmp_path / "long")  # every pair longer than the model's positions: fails in the batchers
    for name in ("train.in", "train.out"):
        (long / name).write_text("".join(" ".join(["a"] * 40) + "\n" for _ in range(20)))
    with pytest.raises(ValueError):
        train(_toy_config(long, max_steps=4), run, quiet=True, overwrite=True)
    ckpt = CheckpointManager(run, create=False).latest()
    with pytest.raises(ValueError, match="checkpoint folder, not a run folder"):
        train(_toy_config(data, max_steps=8), ckpt, quiet=True, resume=True)
    with pytest.raises(ValueError, match="checkpoint folder, not a run folder"):
        train(_toy_config(data, max_steps=8), ckpt, quiet=True)
    assert _tree(run) == before  # checkpoints, tokenizer and log byte for byte
    with pytest.raises(ValueError, match="holds no checkpoint to resume"):
        train(_toy_config(data, max_steps=4), tmp_path / "typo", quiet=True, resume=True)
    assert not (tmp_path / "typo").exists()
    assert train(_toy_config(data, max_steps=8), run, quiet=True, resume=True).step == 8


def _kill_after_checkpoint(cmd, run_dir: Path, env) -> None:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if (run_dir / "checkpoints" / "latest.json").exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def test_resume_after_sigkill_gives_identical_weights(tmp_path):
    data = _toy_corpus(tmp_path / "data")
    cfg = _toy_config(data, max_steps=16)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    full = train(cfg, tmp_path / "full", quiet=True)

    run = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "adasparse", "train", "--config", str(tmp_path / "cfg.json"), "--out", str(run)]
    _kill_after_checkpoint(cmd, run, env)
    killed_at = CheckpointManager(run, create=False).latest()
    assert killed_at is not None and int(killed_at.name[5:]) < 16
    resumed = train(cfg, run, resume=True, quiet=True)
    assert resumed.step == full.step == 16

    a, b = _weights(full.run_dir / "checkpoints" / "step_00000016"), _weights(run / "checkpoints" / "step_00000016")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the log of the resumed run equals the uninterrupted one (apart from timings)
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in recs]  # noqa: E731
    assert strip(read_log(run / "log.jsonl")) == strip(read_log(full.run_dir / "log.jsonl"))


def _signal_when_logged(cmd, log: Path, env, sig, step: int = 2, pick=None) -> subprocess.CompletedProcess:
    """Run ``cmd``; once ``log`` holds a train record of ``step`` or later, send ``sig`` to the process (or to
    ``pick(proc)``, another pid) and wait for it to end."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            recs = read_log(log) if log.is_file() else []
            if any(r["kind"] == "train" and r["step"] >= step for r in recs):
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"training ended before the signal: {proc.stderr.read()[-2000:]}"
        os.kill(pick(proc) if pick else proc.pid, sig)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, "", err)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_update_under_way_and_resume_is_exact(tmp_path, sig):
    """SIGTERM (a scheduler's pre-emption) or Ctrl-C: the run finishes its update, writes a checkpoint of exactly
    that update (nothing since the last scheduled one is lost), exits with 128 + the signal, and --resume ends
    with the weights of the uninterrupted run."""
    data = _toy_corpus(tmp_path / "data")
    cfg = _toy_config(data, max_steps=60, valid_every=50, log_every=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    run = tmp_path / "stopped"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "adasparse", "train", "--config", str(tmp_path / "cfg.json"), "--out", str(run)]
    out = _signal_when_logged(cmd, run / "log.jsonl", env, sig)
    assert out.returncode == 128 + sig, out.stderr[-2000:]
    last = max(r["step"] for r in read_log(run / "log.jsonl") if r["kind"] == "train")
    assert 2 <= last < 50  # between scheduled checkpoints
    assert f"interrupted ({signal.Signals(sig).name}) at step {last}" in out.stderr and "--resume" in out.stderr
    ckpts = CheckpointManager(run, create=False)
    assert ckpts.latest().name == f"step_{last:08d}"
    assert not [r for r in read_log(run / "log.jsonl") if r["kind"] == "valid"]  # saved without validating

    resumed = train(cfg, run, resume=True, quiet=True)
    full = train(cfg, tmp_path / "full", quiet=True)
    assert resumed.step == full.step == 60
    a, b = _weights(full.run_dir / "checkpoints" / "step_00000060"), _weights(run / "checkpoints" / "step_00000060")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_second_signal_stops_at_once_and_handlers_are_restored():
    from adasparse.train.trainer import _StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    with _StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and stop.name == "SIGTERM"  # the first only asks
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of ``torchrun``'s worker of ``rank`` (Linux: from /proc)."""
    for _ in range(500):
        for child in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(child)
        time.sleep(0.02)
    raise AssertionError(f"no worker of rank {rank} under pid {launcher.pid}")


@pytest.mark.skipif(
    not torch.distributed.is_available() or not Path("/proc/self/task").is_dir(),
    reason="needs torch.distributed and Linux /proc to find a worker",
)
def test_ddp_a_signal_to_one_rank_stops_every_rank_at_the_same_update(tmp_path):
    data = _toy_corpus(tmp_path / "data")
    cfg = _toy_config(data, max_steps=400, valid_every=400, log_every=1, model={"dropout": 0.0, "max_len": 32})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "adasparse", "train", "--config", str(tmp_path / "cfg.json"), "--out", str(run), "--quiet",
    ]  # fmt: skip
    out = _signal_when_logged(cmd, run / "log.jsonl", env, signal.SIGTERM, pick=lambda p: _rank_pid(p, 1))
    assert out.returncode != 0  # torchrun reports its workers' exit status 143
    log = read_log(run / "log.jsonl")
    last = max(r["step"] for r in log if r["kind"] == "train")
    assert 2 <= last < 400
    final = [r for r in log if r["kind"] == "final"]
    assert len(final) == 1 and final[0]["step"] == last and len(set(final[0]["rank_weight_hashes"])) == 1
    assert CheckpointManager(run, create=False).latest().name == f"step_{last:08d}"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    data = _toy_corpus(tmp_path / "data")
    # max_minutes: the ranks agree on the time limit every step (rank 0 decides)
    cfg = _toy_config(
        data, max_steps=6, valid_every=6, log_every=1, max_minutes=60, model={"dropout": 0.0, "max_len": 32}
    )
    ddp_matches_single_process(cfg, tmp_path)


def ddp_matches_single_process(cfg: TrainConfig, tmp_path: Path) -> None:
    """``cfg`` (6 steps, logging every step) on two gloo processes equals one process accumulating both ranks'
    batches: the same losses, identical weights on both ranks, and the same final weights."""
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "adasparse", "train", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "ddp"), "--quiet",
    ]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    single = train(cfg.with_overrides({"accum_steps": 2, "data_world_size": 2}), tmp_path / "single", quiet=True)

    ddp_log, one_log = read_log(tmp_path / "ddp" / "log.jsonl"), read_log(tmp_path / "single" / "log.jsonl")
    final = [r for r in ddp_log if r["kind"] == "final"]
    assert len(final) == 1 and len(set(final[0]["rank_weight_hashes"])) == 1  # both ranks hold identical weights
    ddp_loss = [r["loss"] for r in ddp_log if r["kind"] == "train"]
    one_loss = [r["loss"] for r in one_log if r["kind"] == "train"]
    assert len(ddp_loss) == len(one_loss) == 6
    assert ddp_loss == pytest.approx(one_loss, rel=1e-5)
    a, b = _weights(tmp_path / "ddp" / "checkpoints" / "step_00000006"), _weights(single.best_checkpoint)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_multi30k_train_translate_evaluate(tmp_path, capsys):
    if not (MULTI30K / "train.de.gz").is_file():
        pytest.skip(f"Multi30k not found at {MULTI30K} (../shared/data/multi30k): end-to-end test skipped")
    cfg = TrainConfig(
        data_dir=str(MULTI30K),
        src_lang="de",
        tgt_lang="en",
        tokenizer="bpe",
        vocab_size=600,
        max_pairs=300,
        preset="tiny",
        attention="learned",
        model={"max_len": 96},
        lr=3e-3,
        warmup_steps=10,
        batch_tokens=800,
        max_steps=10,
        valid_every=10,
        valid_max_sentences=10,
        metric="bleu",
        log_every=5,
        num_threads=1,
    )
    res = train(cfg, tmp_path / "run", quiet=True)
    assert res.step == 10 and {"bleu", "chrf", "valid_loss"} <= set(res.last_metrics)
    src = tmp_path / "src.de"
    ref = tmp_path / "ref.en"
    import gzip

    with gzip.open(MULTI30K / "test_2016_flickr.de.gz", "rt") as f:
        src.write_text("".join(next(f) for _ in range(12)))
    with gzip.open(MULTI30K / "test_2016_flickr.en.gz", "rt") as f:
        ref.write_text("".join(next(f) for _ in range(12)))
    hyp = tmp_path / "hyp.en"
    rc = cli_main(
        ["translate", "--checkpoint", str(tmp_path / "run"), "--input", str(src), "--output", str(hyp), "--beam", "2"]
    )
    assert rc == 0
    assert len(hyp.read_text().splitlines()) == 12
    rc = cli_main(["evaluate", "--hyp", str(hyp), "--ref", str(ref)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "BLEU" in printed and "chrF" in printed and "nrefs:1" in printed  # sacreBLEU's signature


def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
    data = _toy_corpus(tmp_path / "data")
    # a learning rate too small to change the outputs: the validation WER never improves after the first
    cfg = _toy_config(data, lr=1e-12, patience=1, max_steps=40, keep_last=1)
    res = train(cfg, tmp_path / "run", quiet=True)
    assert res.stopped_because == "patience"
    assert res.step == 8  # validations at 4 (first: best) and 8 (no better: stop)
    assert res.best_checkpoint.name == "step_00000004"
    kept = [p.name for p in CheckpointManager(tmp_path / "run", create=False).checkpoints()]
    assert kept == ["step_00000004", "step_00000008"]  # the best and the last one


@pytest.mark.parametrize("older_checkpoints", [False, True])
def test_patience_counts_only_scheduled_validations(tmp_path, monkeypatch, older_checkpoints):
    """A run cut into sessions by max_minutes stops where the uninterrupted run stops: the validations at each
    session's end are checkpointed but neither count toward patience nor move its best. Checkpoints written
    before that rule (no saved patience best) are recounted from the run log on resume."""
    if older_checkpoints:  # no patience best, and a counter the old rule inflated (the recount must not trust it)
        state = _Trainer._state

        def older(self):
            st = {k: v for k, v in state(self).items() if k != "patience_best"}
            return {**st, "bad_validations": 99}

        monkeypatch.setattr(_Trainer, "_state", older)
    data = _toy_corpus(tmp_path / "data")
    cfg = _toy_config(data, lr=1e-12, patience=2, max_steps=40, keep_last=2)  # the WER never improves after 4
    whole = train(cfg, tmp_path / "whole", quiet=True)
    assert (whole.stopped_because, whole.step) == ("patience", 12)  # 4 best, 8 and 12 no better
    run = tmp_path / "sessions"
    res = train(dataclasses.replace(cfg, max_minutes=1e-9), run, quiet=True)  # one update per session
    sessions = 1
    while res.stopped_because == "max_minutes":
        assert res.step == sessions
        res = train(dataclasses.replace(cfg, max_minutes=1e-9), run, resume=True, quiet=True)
        sessions += 1
    assert (res.stopped_because, res.step, sessions) == ("patience", 12, 12)
    valid = [r for r in read_log(run / "log.jsonl") if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == list(range(1, 13))
    assert [r["step"] for r in valid if r["scheduled"]] == [4, 8, 12]


def test_pairs_beyond_the_model_positions_are_dropped_not_fatal(tmp_path, capsys):
    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    long_pair = " ".join("abcdefghij" * 3)  # 30 symbols + eos: beyond model.max_len=16, within the other limits
    for split in ("train", "valid"):
        for side in ("in", "out"):
            with open(data / f"{split}.{side}", "a") as f:
                f.write((long_pair + "\n") * 5)
    # one epoch (max_steps is not reached): every training pair goes through the model once
    cfg = _toy_config(data, model={"max_len": 16}, max_tokens_per_sentence=200, max_epochs=1, max_steps=1000)
    res = train(cfg, tmp_path / "run")
    assert res.stopped_because == "max_epochs" and res.step > 0
    assert "dropped 5 training pairs longer than 16 tokens" in capsys.readouterr().out


def test_alpha_lr_scale_moves_theta_faster(tmp_path):
    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    moved = {}
    for scale in (1.0, 10.0):
        run = tmp_path / f"run{scale}"
        train(_toy_config(data, max_steps=6, valid_every=6, alpha_lr_scale=scale), run, quiet=True)
        log = read_log(run / "log.jsonl")
        first, last = log[0]["alpha"], [r for r in log if r["kind"] == "train"][-1]["alpha"]

        def theta(rec):  # θ = logit(α − 1), head by head
            return torch.logit(torch.tensor([a for k in sorted(rec) for layer in rec[k] for a in layer]) - 1.0)

        moved[scale] = (theta(last) - theta(first)).abs()
    # Adam moves a parameter by about lr per update, whatever its gradient's size
    assert moved[10.0].mean() > 5 * moved[1.0].mean()
    # the other parameters keep the base lr; θ has its own group only when the scale is not 1
    model = load_model(tmp_path / "run10.0")[0]
    groups = _param_groups(model, _toy_config(data, alpha_lr_scale=10.0))
    thetas = {id(m.theta) for m in model.modules() if hasattr(m, "theta")}
    assert (
        [len(g["params"]) for g in groups][2] == len(thetas) == 3 * 2
    )  # tiny: one θ (per head) for each of 3 kinds × 2 layers
    assert {id(p) for p in groups[2]["params"]} == thetas and groups[2]["lr"] == pytest.approx(3e-2)
    assert all("lr" not in g for g in groups[:2])
    assert len(_param_groups(model, _toy_config(data))) == 2


def test_resume_with_other_options_is_a_clear_error(tmp_path):
    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    train(_toy_config(data, max_steps=2, valid_every=2), tmp_path / "run", quiet=True)
    with pytest.raises(ValueError, match=r"cannot resume .*attention \(--attention\): 'learned' → 'softmax'"):
        train(_toy_config(data, max_steps=4, attention="softmax"), tmp_path / "run", resume=True, quiet=True)
    with pytest.raises(ValueError, match=r"other options \(alpha_lr_scale: 1.0 → 5.0; seed \(--seed\): 3 → 4\).*only "):
        train(_toy_config(data, max_steps=4, alpha_lr_scale=5.0, seed=4), tmp_path / "run", resume=True, quiet=True)
    # the same run with other run-length options (more steps) resumes
    assert train(_toy_config(data, max_steps=4), tmp_path / "run", resume=True, quiet=True).step == 4


def test_resume_takes_the_runs_own_options(tmp_path, capsys):
    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    train(_toy_config(data, max_steps=2, valid_every=2), tmp_path / "run", quiet=True)
    # no --data, --preset, ...: they come from the checkpoint; --set max_steps may change
    assert cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet", "--set", "max_steps=4"]) == 0
    assert "finished at step 4" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step_00000004" / "config.json").read_text())["train"]
    assert saved["preset"] == "tiny" and saved["max_steps"] == 4 and saved["warmup_steps"] == 10
    # a flag given again must agree with the run's
    rc = cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--preset", "small", "--set", "max_steps=6"])
    assert rc == 2 and "preset (--preset): 'tiny' → 'small'" in capsys.readouterr().err
    rc = cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--set", "lr=0.1"])
    assert rc == 2 and "lr: 0.003 → 0.1" in capsys.readouterr().err
    rc = cli_main(["train", "--out", str(tmp_path / "run"), "--resume", "--quiet", "--preset", "tiny",
                   "--set", "max_steps=5"])  # fmt: skip
    assert rc == 0


def test_time_budget_counts_this_session_only(tmp_path):
    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    cfg = _toy_config(data, max_steps=100_000, valid_every=100_000, max_minutes=1.5 / 60)  # 1.5 s
    first = train(cfg, tmp_path / "run", quiet=True)
    assert first.stopped_because == "max_minutes"
    again = train(cfg, tmp_path / "run", resume=True, quiet=True)
    assert again.stopped_because == "max_minutes"
    # the first session's 1.5 s are not counted again: the second trains its own 1.5 s, not a single update
    assert again.step - first.step >= 3
    times = [r["time"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert times == sorted(times) and times[-1] >= 3.0  # the log's time is the run's total training time


def test_progress_bar_counts_to_the_budget_that_stops_the_run(tmp_path, capsys):
    from adasparse.train.trainer import _expected_stop

    assert _expected_stop(10, 1000, 10, 5.0, None) == 1000  # no time budget: max_steps
    assert _expected_stop(10, 1000, 10, 5.0, 20.0) == 40  # 2 updates/s, 15 s left
    assert _expected_stop(10, 20, 10, 5.0, 20.0) == 20  # max_steps binds first
    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    cfg = _toy_config(data, max_steps=100_000, valid_every=100_000, max_minutes=1.5 / 60, warmup_steps=4000)
    res = train(cfg, tmp_path / "run")
    out, err = capsys.readouterr()
    bar = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("train (≤ 0.025 min)")]
    assert bar and f"{res.step}/{res.step}" in bar[-1] and "left=0:00" in bar[-1]
    assert not any("100000" in line for line in bar)  # never the max_steps the time budget will not reach
    assert "before its learning-rate warmup ends (warmup_steps=4000)" in out + err


def test_defaults_scale_to_the_data_and_the_last_step_is_logged(tmp_path, capsys):
    from adasparse.data.tokenizer import auto_vocab_size, min_vocab_size

    data = _toy_corpus(tmp_path / "data", n_train=200, n_valid=8)
    cfg = _toy_config(data, tokenizer="bpe", vocab_size=None, warmup_steps=None, log_every=None, max_steps=7)
    train(cfg, tmp_path / "run")
    out = capsys.readouterr().out
    text = [line for side in ("in", "out") for line in (data / f"train.{side}").read_text().splitlines()]
    auto = auto_vocab_size(text)
    words = sum(len(line.split()) for line in text)
    assert auto == max(min_vocab_size(text), words // 20) and auto < 8000
    assert f"vocab_size {auto} (one piece per 20 of the {words} training words" in out
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step_00000007" / "config.json").read_text())
    assert (saved["train"]["vocab_size"], saved["train"]["warmup_steps"], saved["train"]["log_every"]) == (auto, 1, 1)
    assert saved["model"]["src_vocab_size"] <= auto  # SentencePiece's soft limit: no more pieces than asked
    # a run whose length is not a multiple of log_every still logs its last update
    train(_toy_config(data, max_steps=7, log_every=5), tmp_path / "run2", quiet=True)
    log = [(r["kind"], r["step"]) for r in read_log(tmp_path / "run2" / "log.jsonl") if r["kind"] != "init"]
    # log_every=5, valid_every=4: a validation's step has its training record first (4), the last update too (7)
    assert log == [("train", 4), ("valid", 4), ("train", 5), ("train", 7), ("valid", 7)]
    from adasparse.train.config import TrainConfig as TC

    assert (TC().vocab_size, TC().warmup_steps, TC().log_every) == (None, None, None)


def test_resume_skips_a_damaged_checkpoint_and_still_ends_bit_identical(tmp_path, caplog):
    import shutil

    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    cfg = _toy_config(data, max_steps=8, valid_every=4)
    full = train(cfg, tmp_path / "full", quiet=True)
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "full", run)
    weights = run / "checkpoints" / "step_00000008" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # one flipped bit
    weights.write_bytes(bytes(raw))
    with caplog.at_level("WARNING"):
        resumed = train(cfg, run, resume=True, quiet=True)
    assert "skipping step_00000008" in caplog.text and "model.safetensors is damaged" in caplog.text
    assert (run / "checkpoints" / "step_00000008.damaged").is_dir()  # kept for inspection, never listed
    assert resumed.step == 8
    a, b = _weights(full.run_dir / "checkpoints" / "step_00000008"), _weights(run / "checkpoints" / "step_00000008")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # nothing intact left: a clear error, not a silent fresh start
    for ck in CheckpointManager(run, create=False).checkpoints():
        (ck / "trainer_state.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot resume .*no intact checkpoint .*trainer_state.safetensors is damaged"):
        train(cfg, run, resume=True, quiet=True)


@pytest.mark.parametrize("attention", ["learned", "softmax"])
def test_divergence_ends_the_run_naming_the_step_and_saves_no_nan(tmp_path, attention):
    from adasparse.train.trainer import TrainingDiverged

    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    cfg = _toy_config(data, attention=attention, lr=1e5, warmup_steps=10, max_steps=60, valid_every=10, log_every=50)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+: the loss per token is") as info:
        train(cfg, tmp_path / "run", quiet=True)
    # caught at the loss/gradient, before a NaN reaches α (whose own check would say "alpha must be finite")
    assert "alpha" not in str(info.value) and "lr=100000" in str(info.value)
    step = info.value.step
    assert not (math.isfinite(info.value.loss) and math.isfinite(info.value.grad_norm))
    ckpts = CheckpointManager(tmp_path / "run", create=False)
    assert bool(ckpts.checkpoints()) == (step > 10)  # the validations (every 10 updates) before it were saved
    assert all(CheckpointManager.step_of(p) < step for p in ckpts.checkpoints())
    for p in ckpts.checkpoints():
        assert all(torch.isfinite(t).all() for t in _weights(p).values()), p
    best = ckpts.best()
    assert best is None or math.isfinite(ckpts.best_metric())
    # the log ends with the last good update, its α finite (analyze gets a trajectory)
    last = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"][-1]
    assert last["step"] == step - 1
    assert all(math.isfinite(a) for layers in last["alpha"].values() for row in layers for a in row)


@pytest.mark.parametrize("saved_with", ["an explicit clamp", "no map at all"])
def test_a_run_from_before_the_sigmoid_default_loads_and_resumes_with_its_clamp(tmp_path, capsys, saved_with):
    """Runs started when the clamp was the default saved no map in their options (and the oldest none in their
    model configuration either): they load, and resume, with the clamp they were trained with."""
    from adasparse.nn import LearnableAlpha
    from adasparse.train.checkpoint import _write_manifest, read_manifest

    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    run = tmp_path / "run"
    clamp = {"dropout": 0.1, "max_len": 32, "alpha_parametrization": "clamp"}
    train(_toy_config(data, max_steps=2, valid_every=2, model=clamp), run, quiet=True)
    ckpt = run / "checkpoints" / "step_00000002"
    both = json.loads((ckpt / "config.json").read_text())
    assert both["model"]["alpha_parametrization"] == "clamp"
    del both["train"]["model"]["alpha_parametrization"]  # as written when the clamp was the default
    if saved_with == "no map at all":
        del both["model"]["alpha_parametrization"]  # as written before the option existed
    (ckpt / "config.json").write_text(json.dumps(both))
    info = {k: v for k, v in read_manifest(ckpt).items() if k not in ("files", "format_version", "sha256")}
    _write_manifest(ckpt, info)  # an intact checkpoint of that version

    def maps(path):
        return {m.parametrization for m in load_model(path)[0].modules() if isinstance(m, LearnableAlpha)}

    assert maps(run) == {"clamp"}
    assert cli_main(["train", "--out", str(run), "--resume", "--quiet", "--set", "max_steps=4"]) == 0
    assert "finished at step 4" in capsys.readouterr().out
    assert maps(run / "checkpoints" / "step_00000004") == {"clamp"}
    # a new run gets the new default
    train(_toy_config(data, max_steps=1, valid_every=1), tmp_path / "new", quiet=True)
    assert maps(tmp_path / "new") == {"sigmoid"}


@pytest.mark.parametrize("written", ["now", "before the mode was recorded"])
def test_load_model_of_a_bleu_run_is_its_highest_bleu(tmp_path, written):
    """``load_model(RUN)`` (``evaluate``/``translate``/``analyze --checkpoint RUN``) opens a run without knowing its
    metric: for BLEU, higher is better, so the best checkpoint is the highest BLEU, never the lowest."""
    from adasparse.train.checkpoint import _write_manifest, read_manifest

    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=8)
    run = tmp_path / "run"
    train(_toy_config(data, metric="bleu"), run, quiet=True)  # validations at 4, 8, 12
    for step, bleu in ((4, 10.0), (8, 30.0), (12, 20.0)):  # give the checkpoints distinct scores
        ckpt = run / "checkpoints" / CheckpointManager.name_for(step)
        info = {k: v for k, v in read_manifest(ckpt).items() if k not in ("files", "format_version", "sha256")}
        assert info["metric_mode"] == "max"
        info["metric"] = bleu
        if written != "now":
            del info["metric_mode"]
        _write_manifest(ckpt, info)
    assert load_model(run)[2].path.name == "step_00000008"
    assert load_model(run / "checkpoints")[2].path.name == "step_00000008"
