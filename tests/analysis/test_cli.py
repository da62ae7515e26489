"""``adasparse analyze`` argument parsing and the pipeline around the (not yet wired) checkpoint loader."""

from __future__ import annotations

import json

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


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    src, tgt = _data(tmp_path)
    with pytest.raises(FileNotFoundError, match="x.ckpt"):
        cli.main([str(tmp_path / "x.ckpt"), "--data", str(src), str(tgt), "--out", str(tmp_path / "out")])


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
    assert [m["name"] for m in metrics["models"]] == ["m", "m (2)"]
    assert [mp["index"] for mp in metrics["models"][0]["attention_maps"]] == [2]
    printed = capsys.readouterr().out
    assert "[m (2)]" in printed and f"report: {out / 'report.html'}" in printed
    # --names: one per checkpoint, distinct
    rc = cli.main(["a", "b", "--data", str(src), str(tgt), "--names", "slow α", "fast α", "--out", str(out)])
    assert rc == 0
    assert [m["name"] for m in json.loads((out / "metrics.json").read_text())["models"]] == ["slow α", "fast α"]
    for bad in (["x"], ["x", "x"]):
        with pytest.raises(ValueError, match="2 distinct names, one per checkpoint"):
            cli.main(["a", "b", "--data", str(src), str(tgt), "--names", *bad, "--out", str(out)])


def test_read_parallel_checks_lengths(tmp_path):
    src, tgt = _data(tmp_path)
    tgt.write_text("only one\n")
    with pytest.raises(ValueError, match="must match"):
        cli.read_parallel(src, tgt)
