"""The main job's code path, on a small corpus folder and a few seconds of training."""

from adasparse.demo import run_demo

from .train.test_trainer import _toy_corpus


def test_demo_on_a_user_corpus(tmp_path, capsys):
    data = _toy_corpus(tmp_path / "data", n_train=200, n_valid=20)
    long_line = " ".join("abcdefghij" * 15) + "\n"  # 150 words: longer than the demo model's 128 positions
    for side in ("in", "out"):
        f = data / f"test.{side}"
        f.write_text(long_line + f.read_text())
    assert run_demo(data_dir=str(data), out=tmp_path / "demo", minutes=0.05, seed=2, src_lang="in", tgt_lang="out") == 0
    out = capsys.readouterr().out
    assert "test: BLEU" in out and "learned α per head" in out
    # every head's α as start → end, the start being the run's logged initial α
    table = [line for line in out.splitlines() if " layer " in line and "→" in line]
    assert len(table) == 3 * 2  # tiny preset: three attention types × 2 layers
    assert "α moved by at most" in out
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
    assert (tmp_path / "demo" / "report" / "metrics.json").is_file()


def test_demo_set_overrides_its_training_options(tmp_path, capsys):
    from adasparse.cli import main as cli_main

    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=10)
    args = ["demo", "--data", str(data), "--src-lang", "in", "--tgt-lang", "out", "--out", str(tmp_path / "d")]
    assert cli_main([*args, "--set", "max_steps=3", "--set", "attention=entmax15", "--minutes", "5"]) == 0
    out = capsys.readouterr().out
    assert "training a entmax15 attention model for at most 5 minutes or 3 updates" in out
    assert "(step 3)" in out  # the best checkpoint is the last of 3 updates
    assert "learned α" not in out and "enc_self  layer 0: 1.500" in out and "α moved" not in out
    assert cli_main([*args, "--set", "max_stepz=3"]) == 2
    assert "unknown training options ['max_stepz']" in capsys.readouterr().err


def test_ctrl_c_stops_the_demo_after_checkpointing_its_training(tmp_path, capsys, monkeypatch):
    import os
    import signal

    from adasparse.train.checkpoint import CheckpointManager
    from adasparse.train.trainer import _Trainer

    step = _Trainer._train_step

    def ctrl_c_at_the_third_update(self, micro):
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled in this (the main) thread before the loop checks
        return step(self, micro)

    monkeypatch.setattr(_Trainer, "_train_step", ctrl_c_at_the_third_update)
    data = _toy_corpus(tmp_path / "data", n_train=60, n_valid=10)
    code = run_demo(data_dir=str(data), out=tmp_path / "d", minutes=5, src_lang="in", tgt_lang="out")
    assert code == 130
    out = capsys.readouterr().out
    assert "interrupted (SIGINT) at step 3: demo stopped" in out and "test:" not in out
    assert f"adasparse train --out {tmp_path / 'd' / 'run'} --resume` continues the training" in out
    assert CheckpointManager(tmp_path / "d" / "run", create=False).latest().name == "step_00000003"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the demo's caller gets Ctrl-C back
    # run again: it starts afresh, and says that it replaces the earlier run
    monkeypatch.setattr(_Trainer, "_train_step", step)
    overrides = {"max_steps": 2}
    assert run_demo(data_dir=str(data), out=tmp_path / "d", src_lang="in", tgt_lang="out", overrides=overrides) == 0
    out = capsys.readouterr().out
    assert f"replacing the earlier demo run in {tmp_path / 'd' / 'run'} (its last checkpoint: step_00000003)" in out
    assert CheckpointManager(tmp_path / "d" / "run", create=False).latest().name == "step_00000002"
