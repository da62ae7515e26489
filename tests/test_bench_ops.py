"""The ops benchmark: argument checks and a smoke run whose rows are well-formed ratios."""

import pytest

from adasparse.bench import ops as bench


def test_parse_alphas_one_or_eight_values():
    assert bench.parse_alphas("1.3") == [1.3] * 8
    vals = "1.05,1.2,1.3,1.4,1.5,1.6,1.7,1.95"
    assert bench.parse_alphas(vals) == [float(v) for v in vals.split(",")]
    with pytest.raises(ValueError, match="1 value or 8"):
        bench.parse_alphas("1.2,1.3")
    with pytest.raises(ValueError, match=">= 1"):
        bench.parse_alphas("0.5")
    with pytest.raises(ValueError, match="numbers"):
        bench.parse_alphas("1.2,x,1,1,1,1,1,1")


def test_quick_run_reports_ratio_against_softmax_measured_alongside():
    rows = bench.run([(16, 32, 32)], reps=3, warmup=1, with_package=False, memory=False, alphas=[1.2] * 8)
    names = [r["name"] for r in rows]
    assert names[0] == "softmax" and "entmax learned α (8,1,1)" in names
    for r in rows:
        assert r["ms"] > 0 and r["softmax_ms"] > 0
        assert r["ratio"] == pytest.approx(r["ms"] / r["softmax_ms"])


def test_cli_rejects_bad_alphas(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--quick", "--alphas", "1,2"])
    assert e.value.code == 2
    assert "--alphas takes 1 value or 8" in capsys.readouterr().err


def test_peak_memory_of_softmax_is_its_output_and_grad_and_prints_nothing(capfd):
    import torch

    x = torch.randn(4, 16, 16, requires_grad=True)
    a = torch.full((8,), 1.3, requires_grad=True)
    g = torch.randn(4, 16, 16)
    ratio = bench.peak_extra_bytes(lambda x, a: torch.softmax(x, -1), x, a, g) / (x.numel() * x.element_size())
    assert ratio == pytest.approx(2.0)  # the output and the input's gradient, nothing else
    out, err = capfd.readouterr()
    assert "profiler_start" not in err and "profiler_start" not in out
