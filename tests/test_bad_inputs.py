"""Bad inputs a new user meets (issue 13): each ends in one clear message naming the file or option, with the
exit status given, or in the obviously right behaviour. One table; one tiny trained run shared by every case."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
from safetensors.torch import load_file, save_file

from adasparse.cli import main as cli_main
from adasparse.train.lock import RunLock
from adasparse.train.logger import read_log
from adasparse.train.trainer import train

from .train.test_trainer import _toy_config, _toy_corpus, _tree


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A toy corpus and a run trained on it for 4 updates (checkpoints at 2 and 4, the best is one of them)."""
    root = tmp_path_factory.mktemp("tiny_run")
    data = _toy_corpus(root / "data", n_train=60, n_valid=8)
    train(_toy_config(data, max_steps=4, valid_every=2), root / "run", quiet=True)
    return data, root / "run"


@dataclass
class Env:
    tmp: Path
    data: Path
    run: Path  # a private copy of the tiny run
    stdin: bytes | None = None
    context: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)
    snapshot: dict[str, bytes] = field(default_factory=dict)  # a folder's files before the command

    @property
    def ckpts(self) -> list[Path]:
        return sorted((self.run / "checkpoints").glob("step_*"))

    @property
    def best(self) -> Path:
        return self.run / "checkpoints" / json.loads((self.run / "checkpoints" / "best.json").read_text())["name"]

    def src_file(self, text: str = "a b c\nd e\n") -> str:
        p = self.tmp / "input.txt"
        p.write_text(text)
        return str(p)

    def translate(self, *more: str) -> list[str]:
        return ["translate", "--checkpoint", str(self.run), "--beam", "1", "--device", "cpu", *more]

    def train_args(self, data: Path | None = None) -> list[str]:
        """A new tiny run (its options as small as the shared run's) on ``data``."""
        tiny = ["--set", "tokenizer=whitespace", "--set", "model.max_len=32", "--set", "batch_tokens=120"]
        return ["train", "--data", str(data or self.data), "--src-lang", "in", "--tgt-lang", "out", "--quiet",
                "--preset", "tiny", *tiny, "--set", "num_threads=1"]  # fmt: skip

    def resume_args(self, *more: str) -> list[str]:
        """Resume the copied run (its options come from its checkpoint)."""
        return ["train", "--out", str(self.run), "--resume", "--quiet", *more]


def _flip_bit(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    path.write_bytes(bytes(raw))


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def _unverified(ckpt: Path) -> Path:
    """Drop the manifest, as in a checkpoint written before manifests (or edited on purpose)."""
    (ckpt / "manifest.json").unlink()
    return ckpt


def _corpus_copy(e: Env, name: str, gz: bool = False, valid_prefix: str | None = "valid") -> Path:
    d = e.tmp / name
    d.mkdir()
    for f in e.data.iterdir():
        prefix = f.name.split(".")[0]
        if prefix == "valid" and valid_prefix is None:
            continue
        target = d / (f.name.replace("valid", valid_prefix) if prefix == "valid" else f.name)
        if gz and prefix == "train":
            target = target.with_name(target.name + ".gz")
            target.write_bytes(gzip.compress(f.read_bytes() * 20))
        else:
            shutil.copy(f, target)
    return d


# ---------------------------------------------------------------------------------------------------------------
# the cases: (set-up → argv), exit status, what stderr (or stdout) must say


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Env], list[str]]
    rc: int
    says: tuple[str, ...] = ()  # substrings of stderr (with the paths filled in by `setup` via format fields)
    stdout: tuple[str, ...] = ()
    check: Callable[[Env, str], None] | None = None


def _locked(e: Env) -> list[str]:
    e.context = RunLock(e.run)
    return [*e.train_args(), "--out", str(e.run), "--overwrite"]


def _weights_bit_flip(e: Env) -> list[str]:
    _flip_bit(e.best / "model.safetensors")
    return e.translate("--input", e.src_file())


def _weights_cut_short(e: Env) -> list[str]:
    f = e.best / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    return e.translate("--input", e.src_file())


def _resume_damaged_latest(e: Env) -> list[str]:
    args = e.resume_args("--set", "max_steps=5")
    _flip_bit(e.ckpts[-1] / "model.safetensors")
    return args


def _check_resumed_past_damage(e: Env, out: str) -> None:
    names = [p.name for p in (e.run / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert "step_00000004.damaged" in names and "step_00000005" in names


def _diverges(e: Env) -> list[str]:
    sets = ["--set", "lr=1e5", "--set", "warmup_steps=10", "--set", "max_steps=50", "--attention", "softmax"]
    return [*e.train_args(), "--out", str(e.tmp / "new"), *sets]


def _gz_cut_short(e: Env) -> list[str]:
    d = _corpus_copy(e, "gz", gz=True)
    f = d / "train.in.gz"
    f.write_bytes(f.read_bytes()[:-40])
    return [*e.train_args(d), "--out", str(e.tmp / "new")]


def _gz_corrupt(e: Env) -> list[str]:
    d = _corpus_copy(e, "gz", gz=True)
    _flip_bit(d / "train.out.gz")
    return [*e.train_args(d), "--out", str(e.tmp / "new")]


def _config_without_model(e: Env) -> list[str]:
    _edit_json(e.best / "config.json", lambda c: c.pop("model"))
    return e.translate("--input", e.src_file())


def _config_without_model_unverified(e: Env) -> list[str]:
    _edit_json(_unverified(e.best) / "config.json", lambda c: c.pop("model"))
    return e.translate("--input", e.src_file())


def _vocab_size_changed_unverified(e: Env) -> list[str]:
    _edit_json(_unverified(e.best) / "config.json", lambda c: c["model"].update(src_vocab_size=99, tgt_vocab_size=99))
    return e.translate("--input", e.src_file())


def _tensor_deleted_unverified(e: Env) -> list[str]:
    f = _unverified(e.best) / "model.safetensors"
    tensors = load_file(f)
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, f)
    return e.translate("--input", e.src_file())


def _best_json_list(e: Env) -> list[str]:
    (e.run / "checkpoints" / "best.json").write_text("[]")
    return e.translate("--input", e.src_file())


def _best_json_outside(e: Env) -> list[str]:
    other = e.tmp / "other"
    shutil.copytree(e.run, other)
    (e.run / "checkpoints" / "best.json").write_text(json.dumps({"name": "../../other/checkpoints/step_00000002"}))
    return e.translate("--input", e.src_file())


def _tokenizer_cut_short(e: Env) -> list[str]:
    f = e.best / "tokenizer" / "joint.vocab.json"
    f.write_bytes(f.read_bytes()[:20])
    return e.translate("--input", e.src_file())


def _tokenizer_cut_short_unverified(e: Env) -> list[str]:
    f = _unverified(e.best) / "tokenizer" / "joint.vocab.json"
    f.write_bytes(f.read_bytes()[:20])
    return e.translate("--input", e.src_file())


def _stdin_not_utf8(e: Env) -> list[str]:
    e.stdin = b"a b\nc \xff d\n"
    return e.translate()


def _input_not_utf8(e: Env) -> list[str]:
    p = e.tmp / "input.txt"
    p.write_bytes(b"a b\nc \xff d\n")
    return e.translate("--input", str(p))


def _blank_lines(e: Env) -> list[str]:
    e.stdin = b"a b c\n\n   \nd e\n"
    return e.translate()


def _check_blank_lines(e: Env, out: str) -> None:
    lines = out.split("\n")[:-1]
    assert len(lines) == 4 and lines[1] == "" and lines[2] == ""


def _src_with_data(e: Env) -> list[str]:
    return [*e.train_args(), "--src", str(e.data / "train.in"), "--tgt", str(e.data / "train.out"), "--out", "x"]


def _resume_overwrite(e: Env) -> list[str]:
    return [*e.train_args(), "--out", str(e.run), "--resume", "--overwrite"]


def _valid_src_alone(e: Env) -> list[str]:
    src, tgt = str(e.data / "train.in"), str(e.data / "train.out")
    return ["train", "--src", src, "--tgt", tgt, "--valid-src", str(e.data / "valid.in"), "--out", str(e.tmp / "n")]


def _validation_prefix(e: Env) -> list[str]:
    d = _corpus_copy(e, "corpus", valid_prefix="validation")
    args = [a for a in e.train_args(d) if a != "--quiet"]
    return [*args, "--out", str(e.tmp / "new"), "--set", "max_steps=2", "--set", "valid_every=2"]


def _check_validated(e: Env, out: str) -> None:
    assert [r["step"] for r in read_log(e.tmp / "new" / "log.jsonl") if r["kind"] == "valid"] == [2]


def _no_validation(e: Env) -> list[str]:
    d = _corpus_copy(e, "corpus", valid_prefix=None)
    args = [a for a in e.train_args(d) if a != "--quiet"]
    return [*args, "--out", str(e.tmp / "new"), "--set", "max_steps=2"]


def _patience_no_validation(e: Env) -> list[str]:
    d = _corpus_copy(e, "corpus", valid_prefix=None)
    return [*e.train_args(d), "--out", str(e.tmp / "new"), "--set", "patience=2"]


def _patience_no_valid_files(e: Env) -> list[str]:
    src, tgt = str(e.data / "train.in"), str(e.data / "train.out")
    return ["train", "--src", src, "--tgt", tgt, "--set", "patience=2", "--out", str(e.tmp / "n")]


def _max_minutes_nan(e: Env) -> list[str]:
    return [*e.train_args(), "--out", str(e.tmp / "new"), "--set", "max_minutes=.nan"]


def _resume_other_corpus(e: Env) -> list[str]:
    other = _toy_corpus(e.tmp / "other", n_train=60, n_valid=8, seed=5)
    return e.resume_args("--set", "max_steps=6", "--data", str(other))


def _resume_other_preset(e: Env) -> list[str]:
    return e.resume_args("--preset", "small", "--set", "max_steps=6")


def _resume_other_lr(e: Env) -> list[str]:
    return e.resume_args("--set", "lr=0.1", "--set", "max_steps=6")


def _resume_with_a_recipe(e: Env) -> list[str]:
    return e.resume_args("--recipe", "paper", "--set", "max_steps=6")


def _resume_nothing(e: Env) -> list[str]:
    return ["train", "--out", str(e.tmp / "typo"), "--resume"]


def _resume_with_data_nothing(e: Env) -> list[str]:
    return [*e.train_args(), "--out", str(e.tmp / "typo"), "--resume"]


def _check_no_typo_folder(e: Env, out: str) -> None:
    assert not (e.tmp / "typo").exists()


def _resume_all_damaged(e: Env) -> list[str]:
    for c in e.ckpts:
        _flip_bit(c / "model.safetensors")
    return e.resume_args("--set", "max_steps=6")


def _out_is_a_checkpoint(e: Env) -> list[str]:
    e.snapshot = _tree(e.run)
    return [*e.train_args(), "--out", str(e.ckpts[-1]), "--resume"]


def _overwrite_with_a_bad_corpus(e: Env) -> list[str]:
    d = _corpus_copy(e, "short")
    (d / "train.out").write_text("".join((d / "train.out").read_text().splitlines(True)[:-1]))
    e.snapshot = _tree(e.run)
    return [*e.train_args(d), "--out", str(e.run), "--overwrite"]


def _check_run_untouched(e: Env, out: str) -> None:
    assert _tree(e.run) == e.snapshot


def _max_len_ratio_nan(e: Env) -> list[str]:
    return e.translate("--input", e.src_file(), "--max-len-ratio", "nan")


def _config_not_utf8(e: Env) -> list[str]:
    cfg = e.tmp / "train.yaml"
    cfg.write_bytes(b"preset: tiny\n# caf\xe9\n")
    return [*e.train_args(), "--out", str(e.tmp / "new"), "--config", str(cfg)]


def _no_decoding(e: Env) -> None:
    """Fail the test if anything is decoded: the error must come first."""
    e.context = mock.patch("adasparse.decode.translate.translate_lines", side_effect=AssertionError("decoded first"))


def _output_is_a_folder(e: Env) -> list[str]:
    _no_decoding(e)
    (e.tmp / "outdir").mkdir()
    return e.translate("--input", e.src_file(), "--output", str(e.tmp / "outdir"))


def _evaluate_output_missing_folder(e: Env) -> list[str]:
    _no_decoding(e)
    src = e.src_file()
    return ["evaluate", "--checkpoint", str(e.run), "--src", src, "--ref", src, "--output", str(e.tmp / "no" / "h.txt")]


def _ctrl_c_while_translating(e: Env) -> list[str]:
    e.context = mock.patch("adasparse.decode.translate.translate_lines", side_effect=KeyboardInterrupt)
    return e.translate("--input", e.src_file(), "--output", str(e.tmp / "out.txt"))


def _check_nothing_written(e: Env, out: str) -> None:
    assert not (e.tmp / "out.txt").exists() and not list(e.tmp.glob(".out.txt*"))


def _empty_training_files(e: Env) -> list[str]:
    d = _corpus_copy(e, "empty")
    (d / "train.in").write_text("")
    (d / "train.out").write_text("")
    return [*e.train_args(d), "--out", str(e.tmp / "new")]


def _check_no_new_folder(e: Env, out: str) -> None:
    assert not (e.tmp / "new").exists()  # a run that could not start leaves no folder behind


def _same_language_twice(e: Env) -> list[str]:
    args = [*e.train_args(), "--out", str(e.tmp / "new"), "--set", "max_steps=1"]
    return [a if a != "out" else "in" for a in args]  # --src-lang in --tgt-lang in


def _blank_validation_files(e: Env) -> list[str]:
    d = _corpus_copy(e, "blank")
    (d / "valid.in").write_text("\n\n")
    (d / "valid.out").write_text("x\n\n")
    return [*e.train_args(d), "--out", str(e.tmp / "new")]


def _long_validation_pairs(e: Env) -> list[str]:
    d = _corpus_copy(e, "long")
    lines = (d / "valid.in").read_text().splitlines()
    lines[0] = " ".join(["a"] * 60)  # one pair beyond the model's 32 positions
    (d / "valid.in").write_text("".join(x + "\n" for x in lines))
    return [*e.train_args(d), "--out", str(e.tmp / "new"), "--set", "max_steps=1"]


def _analyze_too_long(e: Env) -> list[str]:
    src, tgt = e.tmp / "a.in", e.tmp / "a.out"
    src.write_text("a b\n" + " ".join(["a"] * 50) + "\n")
    tgt.write_text("b a\nb a\n")
    return ["analyze", str(e.run), "--data", str(src), str(tgt), "--out", str(e.tmp / "report")]


def _output_folder_missing(e: Env) -> list[str]:
    return e.translate("--input", e.src_file(), "--output", str(e.tmp / "missing" / "out.txt"))


def _batch_tokens_zero(e: Env) -> list[str]:
    return e.translate("--input", e.src_file(), "--batch-tokens", "0")


def _batch_tokens_too_small(e: Env) -> list[str]:
    return [*e.train_args(), "--out", str(e.tmp / "new"), "--set", "batch_tokens=3"]


def _analyze_map_layers(e: Env) -> list[str]:
    src, tgt = str(e.data / "valid.in"), str(e.data / "valid.out")
    return ["analyze", str(e.run), "--data", src, tgt, "--map-layers", "5", "--out", str(e.tmp / "report")]


CASES = [
    Case("train on a folder a live run holds, --overwrite", _locked, 2,
         ("in use by another training run", f"PID {os.getpid()}", "choose another --out")),
    Case("translate: a flipped bit in model.safetensors", _weights_bit_flip, 2,
         ("model.safetensors is damaged", "SHA-256")),
    Case("translate: model.safetensors cut short", _weights_cut_short, 2, ("model.safetensors is damaged", "cut short")),
    Case("--resume: the latest checkpoint is damaged", _resume_damaged_latest, 0,
         ("skipping step_00000004", "model.safetensors is damaged", "moved it aside to step_00000004.damaged"),
         check=_check_resumed_past_damage),
    Case("train: lr=1e5 diverges", _diverges, 1, ("training diverged at step", "the update was not applied")),
    Case("train: a .gz corpus cut short", _gz_cut_short, 2, ("train.in.gz: the gzip file is damaged or cut short",)),
    Case("train: a corrupt .gz corpus", _gz_corrupt, 2, ("train.out.gz: the gzip file is damaged",)),
    Case("translate: config.json edited (no 'model')", _config_without_model, 2, ("config.json is damaged",)),
    Case("translate: config.json without 'model', no manifest", _config_without_model_unverified, 2,
         ("config.json has no 'model' entry", "no manifest.json")),
    Case("translate: vocabulary size edited, no manifest", _vocab_size_changed_unverified, 2,
         ("model.safetensors does not fit the model of", "config.json", "size mismatch")),
    Case("translate: a tensor deleted, no manifest", _tensor_deleted_unverified, 2,
         ("model.safetensors does not fit the model of", "Missing key")),
    Case("translate: best.json is []", _best_json_list, 0, ("ignoring", "best.json")),
    Case("translate: best.json names ../../other/step_…", _best_json_outside, 0,
         ("ignoring", "best.json", "must name a step_N checkpoint folder of this run")),
    Case("translate: the tokenizer cut short", _tokenizer_cut_short, 2, ("joint.vocab.json is damaged",)),
    Case("translate: the tokenizer cut short, no manifest", _tokenizer_cut_short_unverified, 2,
         ("tokenizer file", "joint.vocab.json is damaged or cut short")),
    Case("translate: invalid UTF-8 on stdin", _stdin_not_utf8, 2, ("<stdin>: line 2 is not valid UTF-8",)),
    Case("translate: invalid UTF-8 in --input", _input_not_utf8, 2, ("input.txt: line 2 is not valid UTF-8",)),
    Case("translate: blank lines stay blank", _blank_lines, 0, check=_check_blank_lines),
    Case("train: --src/--tgt next to --data", _src_with_data, 2, ("--data", "--src, --tgt", "not both")),
    Case("train: --resume with --overwrite", _resume_overwrite, 2, ("--resume and --overwrite contradict",)),
    Case("train: --valid-src without --valid-tgt", _valid_src_alone, 2,
         ("valid_src (--valid-src) needs valid_tgt (--valid-tgt)",)),
    Case("train: validation.* files are the validation set", _validation_prefix, 0,
         stdout=("validation data:", "validation.in"), check=_check_validated),
    Case("train: no validation files: a notice", _no_validation, 0,
         stdout=("no validation set", "valid.in", "dev.in", "validation.in", "validation is off")),
    Case("train: patience without validation files", _patience_no_validation, 2, ("patience=2", "no validation set")),
    Case("train: patience without --valid-src", _patience_no_valid_files, 2, ("patience=2", "--valid-src")),
    Case("train: max_minutes=nan", _max_minutes_nan, 2, ("max_minutes must be a finite number, got nan",)),
    Case("train: --resume on another corpus", _resume_other_corpus, 2,
         ("cannot resume", "train data differ from the data given now")),
    Case("train: --resume with another --preset", _resume_other_preset, 2,
         ("cannot resume", "preset (--preset): 'tiny' → 'small'", "only max_steps")),
    Case("train: --resume --set lr=…", _resume_other_lr, 2, ("cannot resume", "lr: 0.003 → 0.1")),
    Case("train: --resume on a folder without checkpoints", _resume_nothing, 2,
         ("--resume:", "typo holds no checkpoint to resume",)),
    Case("train: --resume, --data and a folder without checkpoints", _resume_with_data_nothing, 2,
         ("typo holds no checkpoint to resume", "leave out --resume"), check=_check_no_typo_folder),
    Case("train: --resume when every checkpoint is damaged", _resume_all_damaged, 2,
         ("no intact checkpoint", "model.safetensors is damaged")),
    Case("train: --out is a checkpoint folder", _out_is_a_checkpoint, 2,
         ("is a checkpoint folder, not a run folder",), check=_check_run_untouched),
    Case("train: --overwrite with a corpus that cannot be read", _overwrite_with_a_bad_corpus, 2,
         ("train.out",), check=_check_run_untouched),
    Case("train: --resume --recipe paper on a run without it", _resume_with_a_recipe, 2,
         ("cannot resume", "recipe (--recipe): None → 'paper'")),
    Case("translate: --output into a missing folder", _output_folder_missing, 2,
         ("--output", "the folder", "missing does not exist")),
    Case("translate: --max-len-ratio nan", _max_len_ratio_nan, 2,
         ("max_len_ratio (--max-len-ratio) must be a finite number >= 0, got nan",)),
    Case("train: a config file that is not UTF-8", _config_not_utf8, 2, ("train.yaml, line 2: not valid UTF-8",)),
    Case("translate: --output is a folder (found before decoding)", _output_is_a_folder, 2,
         ("--output", "outdir is a folder; give a file name",)),
    Case("evaluate: --output into a missing folder (found before decoding)", _evaluate_output_missing_folder, 2,
         ("--output", "the folder", "no does not exist")),
    Case("translate: Ctrl-C", _ctrl_c_while_translating, 130, ("adasparse translate: interrupted",),
         check=_check_nothing_written),
    Case("train: empty training files", _empty_training_files, 2,
         ("no training pairs in", "train.in / ", "train.out: the files are empty"), check=_check_no_new_folder),
    Case("train: --src-lang and --tgt-lang the same", _same_language_twice, 0,
         ("training source and target are the same file", "train.in: the model learns to copy")),
    Case("train: blank validation files", _blank_validation_files, 2,
         ("no validation pairs in", "valid.in / ", "of their 2 lines, 2 are blank on a side")),
    Case("train: a validation pair too long for the model", _long_validation_pairs, 0,
         ("validation: 1 of 8 pairs", "are longer than 32 tokens: valid_loss leaves them out; bleu decodes them all")),
    Case("analyze: a sentence longer than the model's positions", _analyze_too_long, 2,
         ("a.in", "a.out: 1 of the 2 analysis pairs are longer than the model's max_len=32 tokens",
          "the first: line 2, 51 source")),
    Case("translate: --batch-tokens 0", _batch_tokens_zero, 2, ("--batch-tokens must be >= 1, got 0",)),
    Case("train: batch_tokens smaller than a sentence", _batch_tokens_too_small, 2,
         ("batch_tokens=3:", "longer than max_tokens=3")),
    Case("analyze: --map-layers 5 on a 2-layer model", _analyze_map_layers, 2,
         ("--map-layers 5:", "has 2 enc_self, 2 dec_self, 2 context layers (layer indices 0–1)")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tiny_run, tmp_path, capsys, monkeypatch):
    data, run = tiny_run
    env = Env(tmp_path, data, tmp_path / "run")
    shutil.copytree(run, env.run)
    argv = case.setup(env)
    if env.stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(env.stdin), encoding="utf-8"))
    capsys.readouterr()
    with env.context:
        rc = cli_main(argv)
    out, err = capsys.readouterr()
    assert rc == case.rc, f"exit status {rc}, expected {case.rc}; stderr:\n{err}"
    assert "Traceback" not in err
    for text in case.says:
        assert text in err, f"{text!r} not in stderr:\n{err}"
    for text in case.stdout:
        assert text in out, f"{text!r} not in stdout:\n{out}"
    if case.rc != 0:
        assert err.count("\n") <= 3, f"one clear message, not a wall of text:\n{err}"
    if case.check is not None:
        case.check(env, out)
