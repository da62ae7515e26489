"""``adasparse analyze`` argument parsing and the pipeline around the (not yet wired) checkpoint loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adasparse.analysis import cli

from .synthetic import make_alpha, synthetic_batches


def _data(tmp_path, n=6):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("".join(f"wie geht es {i} ?\n" for i in range(n)))
    tgt.write_text("".join(f"how are you {i} ?\n" for i in range(n)))
    return src, tgt


def test_parser_arguments(tmp_path):
    args = cli.build_parser().parse_args(
        ["a.ckpt", "b.ckpt", "--data", "s", "t", "--max-sentences", "10", "--sentence", "1", "3", "--out", "o"]
    )
    assert args.checkpoints == ["a.ckpt", "b.ckpt"] and args.data == ["s", "t"]
    assert args.max_sentences == 10 and args.sentence == [1, 3] and str(args.out) == "o"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["a.ckpt", "--data", "s", "t", "--max-sentences", "0", "--out", "o"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["a.ckpt", "--out", "o"])  # --data is required


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    src, tgt = _data(tmp_path)
    assert cli.main([str(tmp_path / "x.ckpt"), "--data", str(src), str(tgt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("adasparse analyze: error: no checkpoint at") and "x.ckpt" in err


def test_pipeline_with_a_stand_in_loader(tmp_path, monkeypatch, capsys):
    src, tgt = _data(tmp_path)
    calls = []

    def fake_loader(ckpt, src_lines, tgt_lines, *, batch_size):
        calls.append((ckpt, len(src_lines), batch_size))
        alpha = make_alpha("entmax15", L=1, H=2)
        return cli.AnalysisSource("m", synthetic_batches(alpha, n_batches=1, B=len(src_lines)), alpha)

    monkeypatch.setattr(cli, "load_checkpoint_for_analysis", fake_loader)
    out = tmp_path / "out"
    rc = cli.main(["a", "b", "--data", str(src), str(tgt), "--max-sentences", "3", "--sentence", "2",
                   "--map-layers", "0", "--out", str(out)])  # fmt: skip
    assert rc == 0 and calls == [("a", 3, 32), ("b", 3, 32)]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["name"] for m in metrics["models"]] == ["a", "b"]  # several checkpoints: named by their folders
    assert [mp["index"] for mp in metrics["models"][0]["attention_maps"]] == [2]
    printed = capsys.readouterr().out
    assert "[b]" in printed and f"report: {out / 'report.html'}" in printed
    # --names: one per checkpoint, distinct
    rc = cli.main(["a", "b", "--data", str(src), str(tgt), "--names", "slow α", "fast α", "--out", str(out)])
    assert rc == 0
    assert [m["name"] for m in json.loads((out / "metrics.json").read_text())["models"]] == ["slow α", "fast α"]
    for bad in (["x"], ["x", "x"]):
        assert cli.main(["a", "b", "--data", str(src), str(tgt), "--names", *bad, "--out", str(out)]) == 2
        assert "--names: give 2 distinct names, one per checkpoint" in capsys.readouterr().err


def test_default_names_are_the_run_folders(tmp_path):
    def source(path, name="learned α"):
        return cli.AnalysisSource(name, [], path=None if path is None else Path(path))

    one = [source("runs/a/checkpoints/step_00000004")]
    assert cli._run_names(["runs/a"], one) == ["learned α"]  # one checkpoint: its attention
    two = [source("runs/m30k-softmax/checkpoints/step_00000004"), source("runs/m30k-learned/checkpoints/step_00000004")]
    assert cli._run_names(["x", "y"], two) == ["m30k-softmax", "m30k-learned"]
    same_run = [source("runs/a/checkpoints/step_00000002"), source("runs/a/checkpoints/step_00000004")]
    assert cli._run_names(["x", "y"], same_run) == ["a/step_00000002", "a/step_00000004"]
    twice = [source("runs/a/checkpoints/step_00000004")] * 2
    assert cli._run_names(["x", "y"], twice) == ["a/step_00000004", "a/step_00000004 (2)"]
    assert cli._run_names(["ck1", "ck2"], [source(None), source(None)]) == ["ck1", "ck2"]


def test_out_of_range_options_are_errors(tmp_path, monkeypatch, capsys):
    src, tgt = _data(tmp_path, n=4)

    def fake_loader(ckpt, src_lines, tgt_lines, *, batch_size):
        alpha = make_alpha("entmax15", L=2, H=2)
        batches = synthetic_batches(alpha, n_batches=1, B=len(src_lines))
        return cli.AnalysisSource("m", batches, alpha, layers={"enc_self": 2, "dec_self": 2, "context": 2})

    monkeypatch.setattr(cli, "load_checkpoint_for_analysis", fake_loader)
    args = ["a", "--data", str(src), str(tgt), "--out", str(tmp_path / "out")]
    assert cli.main([*args, "--map-layers", "1", "5"]) == 2
    assert (
        "--map-layers 5: a has 2 enc_self, 2 dec_self, 2 context layers (layer indices 0–1)" in capsys.readouterr().err
    )
    assert cli.main([*args, "--sentence", "4"]) == 2  # 4 pairs read: indices 0-3
    assert "--sentence 4: there are only 4 sentence pairs" in capsys.readouterr().err
    assert cli.main([*args, "--max-sentences", "2", "--sentence", "3"]) == 2
    assert "--sentence 3: beyond --max-sentences 2" in capsys.readouterr().err


def test_read_parallel_checks_lengths(tmp_path):
    src, tgt = _data(tmp_path)
    tgt.write_text("only one\n")
    with pytest.raises(ValueError, match="must match"):
        cli.read_parallel(src, tgt)
