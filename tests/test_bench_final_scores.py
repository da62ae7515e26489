"""benchmarks/final_scores.py on two tiny copy-task runs: its table is the library's scores and paired comparisons of
the runs' best checkpoints, and a second call reuses the outputs it kept instead of decoding again."""

from pathlib import Path

import pytest

from adasparse.cli import main as cli_main
from adasparse.data.corpus import read_lines
from adasparse.decode.search import SearchConfig
from adasparse.decode.translate import translate_lines
from adasparse.evaluation import compare_g2p, compare_translation, score_g2p
from adasparse.train.loading import load_model
from benchmarks import final_scores

TINY_TEXT = Path(__file__).parent / "data" / "tiny_text"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("final")
    (root / "data").mkdir()
    for split in ("train", "valid"):
        text = (TINY_TEXT / f"{split}.txt").read_text()
        for lang in ("in", "out"):
            (root / "data" / f"{split}.{lang}").write_text(text)
    out = []
    for seed in (1, 2):
        run = root / f"run{seed}"
        rc = cli_main(["train", "--data", str(root / "data"), "--src-lang", "in", "--tgt-lang", "out", "--preset",
                       "tiny", "--out", str(run), "--seed", str(seed), "--set", "max_steps=30", "--set",
                       "valid_every=15", "--set", "batch_tokens=512", "--set", "tokenizer=whitespace", "--quiet"])  # fmt: skip
        assert rc == 0
        out.append(run)
    return out


def _rows(text):
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in text.splitlines() if ln.startswith("| ")][1:]


def test_g2p_table_is_the_librarys_figures_and_outputs_are_reused(runs, tmp_path, capsys, monkeypatch):
    src = ref = str(TINY_TEXT / "test.txt")
    refs = read_lines(ref)
    expect = []
    for run in runs:
        model, toks, _ = load_model(run)
        expect.append(translate_lines(model, toks, read_lines(src), SearchConfig(beam_size=2)))
    argv = ["--task", "g2p", "--src", src, "--ref", ref, "--beam", "2", "--out", str(tmp_path / "o"),
            f"one={runs[0]}", f"both={runs[0]},{runs[1]}"]  # fmt: skip
    final_scores.main(argv)
    one, both = _rows(capsys.readouterr().out)
    s0, s1 = score_g2p(expect[0], refs), score_g2p(expect[1], refs)
    assert one[0] == "one" and one[3] == f"{s0.wer:.2f} ± {s0.wer_se:.2f}" and one[5] == "—"
    assert both[2] == f"{s0.wer:.2f} / {s1.wer:.2f}"
    c = compare_g2p(expect, [expect[0]], refs)
    assert both[5].startswith(f"{c.wer_diff:+.2f} ± {c.wer_diff_se:.2f}")

    def no_decoding(*a, **k):
        raise AssertionError("decoded again although the kept outputs match")

    monkeypatch.setattr(final_scores, "translate_lines", no_decoding)
    final_scores.main(argv)
    assert _rows(capsys.readouterr().out) == [one, both]
    with pytest.raises(AssertionError, match="decoded again"):  # another beam: the kept outputs no longer match
        final_scores.main([*argv[:7], "1", *argv[8:]])


def test_translation_table_and_bad_systems(runs, tmp_path, capsys):
    src = ref = str(TINY_TEXT / "test.txt")
    final_scores.main(["--task", "translation", "--src", src, "--ref", ref, "--beam", "1", "--out", str(tmp_path),
                       f"a={runs[0]}", f"b={runs[1]}"])  # fmt: skip
    out = capsys.readouterr().out
    a, b = _rows(out)
    hyps = [read_lines(tmp_path / f"{n}-0.txt") for n in ("a", "b")]
    c = compare_translation(hyps[1], hyps[0], read_lines(ref))
    assert b[4].startswith(f"BLEU {c.bleu - c.baseline_bleu:+.2f} (p = {c.bleu_p:.2g})")
    assert "sacreBLEU signature: nrefs:1" in out
    with pytest.raises(SystemExit, match="NAME=RUN"):
        final_scores.main(["--task", "g2p", "--src", src, "--ref", ref, "--out", str(tmp_path), "nameless"])
    with pytest.raises(SystemExit, match="--baseline 'c' is none of the systems"):
        final_scores.main(["--task", "g2p", "--src", src, "--ref", ref, "--out", str(tmp_path), "--baseline", "c",
                           f"a={runs[0]}"])  # fmt: skip
