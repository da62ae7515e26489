"""``task=lm``: a decoder-only language model trained by the same loop — validation equals the perplexity
scorer, exact resume after SIGKILL, task-dependent defaults, bad combinations, the English side of Multi30k."""

import json
import math
import os
import sys

import pytest
import torch

from adasparse.cli import main as cli_main
from adasparse.data.text import find_text
from adasparse.decode.perplexity import score_text
from adasparse.models import DecoderOnlyTransformer
from adasparse.train.checkpoint import CheckpointManager
from adasparse.train.config import TrainConfig
from adasparse.train.loading import load_model
from adasparse.train.logger import read_log
from adasparse.train.tasks import LanguageModelTask
from adasparse.train.trainer import train

from .test_trainer import ROOT, _kill_after_checkpoint, _weights, ddp_matches_single_process

TINY_TEXT = ROOT / "tests" / "data" / "tiny_text"
MULTI30K = ROOT / ".." / "shared" / "data" / "multi30k"


def _lm_config(**kw) -> TrainConfig:
    base = dict(
        task="lm",
        data_dir=str(TINY_TEXT),
        tokenizer="whitespace",
        preset="tiny",
        attention="learned",
        model={"dropout": 0.1, "max_len": 24},
        lr=3e-3,
        warmup_steps=10,
        batch_tokens=200,
        max_steps=12,
        valid_every=4,
        log_every=2,
        keep_last=5,
        seed=3,
        num_threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_lm_run_validates_with_the_perplexity_scorer(tmp_path):
    res = train(_lm_config(), tmp_path / "run", quiet=True)
    assert res.step == 12
    log = read_log(tmp_path / "run" / "log.jsonl")
    valid = [r for r in log if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [4, 8, 12]
    last = [r for r in log if r["kind"] == "train"][-1]
    assert last["step"] == 12 and set(last["alpha"]) == {"self"} and len(last["alpha"]["self"]) == 4  # 4 layers
    model, toks, ckpt = load_model(tmp_path / "run" / "checkpoints" / "step_00000012")
    assert isinstance(model, DecoderOnlyTransformer) and toks.joint
    assert toks.tgt.vocab_size == model.config.vocab_size
    # the validation figures of the run are those of score_text (adasparse evaluate --text) on valid.txt
    lines = (TINY_TEXT / "valid.txt").read_text().splitlines()
    s = score_text(model, toks, lines)
    assert valid[-1]["valid_loss"] == pytest.approx(s.nll_per_token, rel=1e-6)
    assert valid[-1]["valid_ppl"] == pytest.approx(s.token_perplexity, rel=1e-6)
    assert valid[-1]["valid_bpb"] == pytest.approx(s.bits_per_byte, rel=1e-6)
    # and learning happened: the last validation loss is below a uniform guess over the vocabulary
    assert valid[-1]["valid_loss"] < math.log(model.config.vocab_size)
    assert ckpt.path == res.best_checkpoint  # validation loss: lower is better, and it fell


def test_lm_defaults_depend_on_the_task(tmp_path):
    lm, mt = _lm_config(), TrainConfig()
    assert (lm.valid_metric, lm.smoothing) == ("loss", 0.0)
    assert (mt.valid_metric, mt.smoothing) == ("bleu", 0.1)
    # label_smoothing unset means 0 for a language model: the same run as an explicit 0, not as 0.1
    runs = {}
    for name, ls in (("auto", None), ("zero", 0.0), ("smooth", 0.1)):
        train(_lm_config(max_steps=4, label_smoothing=ls), tmp_path / name, quiet=True)
        runs[name] = [r["loss"] for r in read_log(tmp_path / name / "log.jsonl") if r["kind"] == "train"]
    assert runs["auto"] == runs["zero"] != runs["smooth"]


def test_lm_resume_after_sigkill_gives_identical_weights(tmp_path):
    cfg = _lm_config(max_steps=16)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    full = train(cfg, tmp_path / "full", quiet=True)
    run = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "adasparse", "train", "--config", str(tmp_path / "cfg.json"), "--out", str(run)]
    _kill_after_checkpoint(cmd, run, env)
    killed_at = CheckpointManager(run, create=False).latest()
    assert killed_at is not None and int(killed_at.name[5:]) < 16
    assert train(cfg, run, resume=True, quiet=True).step == 16
    a, b = _weights(full.run_dir / "checkpoints" / "step_00000016"), _weights(run / "checkpoints" / "step_00000016")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda recs: [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in recs]  # noqa: E731
    assert strip(read_log(run / "log.jsonl")) == strip(read_log(full.run_dir / "log.jsonl"))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_lm_ddp_two_gloo_processes_match_single_process(tmp_path):
    cfg = _lm_config(max_steps=6, valid_every=6, log_every=1, max_minutes=60, model={"dropout": 0.0, "max_len": 24})
    ddp_matches_single_process(cfg, tmp_path)


def test_lm_resume_refuses_other_text(tmp_path):
    train(_lm_config(max_steps=4), tmp_path / "run", quiet=True)
    other = tmp_path / "other"
    other.mkdir()
    for split in ("train", "valid"):
        lines = (TINY_TEXT / f"{split}.txt").read_text().splitlines()
        (other / f"{split}.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"its train data differ .*\d+ lines, SHA-256"):
        train(_lm_config(max_steps=8, data_dir=str(other)), tmp_path / "run", resume=True, quiet=True)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"metric": "bleu"}, r"metric='bleu' scores translations; a language model \(task=lm\)"),
        ({"src_lang": "de"}, r"src_lang \(--src-lang\) are options of translation"),
        ({"data_dir": None, "train_src": "a", "train_tgt": "b"}, r"train_src/train_tgt \(--src, --tgt\)"),
        ({"joint_vocab": False}, "a language model .* has one tokenizer"),
        ({"text_suffix": ".txt"}, "text_suffix must be a file extension without dots"),
        ({"task": "summarise"}, r"task must be one of \('translation', 'lm'\)"),
        ({"attention": {"self": "softmax"}}, "a decoder-only model has one attention type"),
    ],
)
def test_lm_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        _lm_config(**options)


def test_lm_cli_errors_name_the_folder(tmp_path, capsys):
    rc = cli_main(["train", "--task", "lm", "--preset", "tiny", "--out", str(tmp_path / "r")])
    assert rc == 2 and "task=lm reads a text folder, give data_dir (--data)" in capsys.readouterr().err
    rc = cli_main(
        ["train", "--task", "lm", "--data", str(TINY_TEXT), "--text-suffix", "en", "--out", str(tmp_path / "r")]
    )
    assert (
        rc == 2 and "no train.en (or train.en.gz); files with other suffixes are there (txt)" in capsys.readouterr().err
    )
    small = ["--set", "batch_tokens=10", "--set", "tokenizer=whitespace", "--preset", "tiny"]
    rc = cli_main(["train", "--task", "lm", "--data", str(TINY_TEXT), *small, "--out", str(tmp_path / "r2")])
    assert rc == 2 and "batch_tokens=10: max_tokens=10 is smaller than the longest sequence" in capsys.readouterr().err


@pytest.mark.skipif(not MULTI30K.is_dir(), reason=f"Multi30k is not at {MULTI30K} (see ../shared/data/README.md)")
def test_lm_reads_the_english_side_of_multi30k(tmp_path):
    files = find_text(MULTI30K, "en")
    assert files.has("valid") and files.test_names == ["test_2016_flickr"]
    cfg = _lm_config(data_dir=str(MULTI30K), text_suffix="en", tokenizer="bpe", max_pairs=3000, max_steps=2,
                     valid_every=2, batch_tokens=512)  # fmt: skip
    train_text, valid_text, _ = LanguageModelTask().load_data(cfg)
    assert len(train_text) == 3000 and len(valid_text) == 1014  # val.en.gz: 1,014 captions
    assert train_text.path.name == "train.en.gz"
    res = train(cfg, tmp_path / "run", quiet=True)
    valid = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "valid"]
    assert res.step == 2 and valid and math.isfinite(valid[-1]["valid_bpb"])
