"""`adasparse bench models --model lm`: candidate specs and a tiny timed run whose rows are consistent ratios."""

import pytest

from adasparse.bench import models as bench


def test_lm_candidate_specs():
    assert bench.parse_lm_candidate("learned+learned") == ("learned", "learned")
    assert bench.parse_lm_candidate("softmax+ssmax") == ("softmax", "ssmax")
    assert bench.parse_lm_candidate("entmax15") == ("entmax15", "none")
    assert bench.parse_lm_candidate("1.3+learned") == (1.3, "learned")
    with pytest.raises(ValueError, match="length scaling 'fixed'"):
        bench.parse_lm_candidate("learned+fixed")


def test_tiny_lm_run_reports_ratios_against_softmax_measured_alongside(capsys):
    rows = bench.run_lm("tiny", ["learned+learned", "softmax"], batch=2, seq_len=16, positions="rope", reps=2, warmup=0)
    assert [r["model"] for r in rows] == ["tiny_lm/rope/learned+learned", "tiny_lm/rope/softmax"]
    for r in rows:
        assert r["ms"] > 0 and r["softmax_ms"] > 0
        assert r["ratio"] == pytest.approx(r["ms"] / r["softmax_ms"])
        assert r["tok_s"] == pytest.approx(2 * 16 / (r["ms"] / 1e3))
    assert "reference: DecoderOnlyTransformer" in capsys.readouterr().out


def test_cli_rejects_bad_lm_candidate(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", "lm", "--quick", "--attention", "learned+fixed"])
    assert e.value.code == 2
    assert "length scaling 'fixed'" in capsys.readouterr().err
