"""The GPU attention benchmark: its options, its rows, its inputs — and a dry run of the whole script on CPU
under the Triton interpreter (tiny sizes; the times mean nothing there, the plumbing does)."""

import math
import os

import pytest
import torch

DEVICE = torch.device(os.environ.get("ADASPARSE_TEST_DEVICE", "cpu"))
if DEVICE.type == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="triton is not installed: the benchmark needs it")

from adasparse.bench import attention as bench  # noqa: E402
from adasparse.ops.entmax import entmax  # noqa: E402

pytestmark = pytest.mark.triton

TINY = ["--seq-lens", "16", "32", "--heads", "1", "--head-dim", "16", "--dtype", "fp32", "--reps", "1"]
TINY += ["--warmup", "1", "--reference-max-len", "16", "--no-adasplash"]


def test_defaults_fit_the_lease_plan_and_bad_options_are_refused():
    cfg = bench.parse_config([])
    assert cfg.seq_lens == (4096, 32768) and cfg.reference_max_len == 4096 and cfg.heads == 16
    assert cfg.dtype == "bf16" and cfg.inputs == "gaussian" and not cfg.causal
    cfg = bench.parse_config(["--causal", "--inputs", "local", "--no-reference", "--candidates", "sdpa-flash"])
    assert cfg.causal and cfg.inputs == "local" and cfg.candidates == ("sdpa-flash",)
    with pytest.raises(SystemExit):
        bench.parse_config(["--warmup", "0"])
    with pytest.raises(SystemExit):
        bench.parse_config(["--inputs", "uniform"])


def test_missing_cuda_is_explained(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--seq-lens", "1024"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_adasplash_is_called_at_its_own_defaults(monkeypatch):
    """No niter: AdaSplash's dispatcher picks v2 (niter=1) for causal α = 1.5 and v1 (niter=10) otherwise."""
    calls = []

    def fake(q, k, v, **kw):
        calls.append(kw)
        return q

    monkeypatch.setattr(bench, "_adasplash_fn", lambda: fake)
    for causal in (False, True):
        cfg = bench.parse_config(["--candidates", "adasplash α=1.5"] + (["--causal"] if causal else []))
        q = torch.zeros(1)
        bench._candidates(cfg, torch.zeros(2))["adasplash α=1.5"](q, q, q)
    assert calls == [dict(alpha=1.5, is_causal=False), dict(alpha=1.5, is_causal=True)]
    assert bench.adasplash_variant(True) == "AdaSplash-2, niter=1"


def test_rows_format_ok_and_failed():
    ok = dict(L=4096, causal=True, inputs="gaussian q×1", candidate="sdpa-flash", fwd_ms=1.0, ms=3.0, ratio=1.0)
    ok.update(peak_mib=10.0, empty=None, passes=None, status="ok")
    row = bench.format_row(ok)
    assert row == "| 4096 | yes | gaussian q×1 | sdpa-flash | 1.000 | 3.000 | 1.00 | 10 | – | – | ok |"
    assert bench.format_row(dict(ok, candidate="reference learned α", status="OOM")).endswith("| – | OOM |")
    assert all(line.count("|") == row.count("|") for line in bench.table_header().splitlines())


def test_local_inputs_make_most_blocks_empty_gaussian_almost_none():
    """The sparsity point is real: at α = 1.5, 64×64 tiles, L = 512, the local inputs leave most tiles empty."""
    L, D, n = 512, 64, 512 // 64

    def empty(kind):
        q, k, _ = bench.make_inputs(kind, 1, 2, L, D, q_scale=1.0, length_scale=64.0, seed=0)
        p = entmax((q @ k.transpose(-1, -2)) * D**-0.5, 1.5, dim=-1)  # (1, 2, L, L)
        return 1 - (p.view(1, 2, n, 64, n, 64) > 0).any(5).any(3).float().mean().item()

    assert empty("local") >= 0.6
    assert empty("gaussian") <= 0.05


def test_dry_run_end_to_end_prints_each_row(capsys):
    """The whole script on CPU: header, one row per (length, candidate), the reference only up to its length."""
    if DEVICE.type != "cpu":
        pytest.skip("the dry run is the CPU path")
    assert bench.main(["--device", "cpu", *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("| 16 ") or line.startswith("| 32 ")]
    names = [r.split(" | ")[3] for r in rows]
    assert names == ["sdpa-flash", "triton learned α", "triton α=1.5", "reference learned α"] + [
        "sdpa-flash", "triton learned α", "triton α=1.5",
    ]  # fmt: skip
    assert all(r.rstrip(" |").endswith("ok") for r in rows), rows
    assert any(line.startswith("# accuracy vs float32 reference") for line in lines)
    triton_rows = [r.split(" | ") for r in rows if "triton" in r]
    assert all(c[8].endswith("%") and float(c[9]) >= 1.0 for c in triton_rows)  # empty blocks, passes ≥ 1 sweep


def test_a_failing_row_does_not_stop_the_others_and_rows_are_emitted_at_once(monkeypatch):
    if DEVICE.type != "cpu":
        pytest.skip("the dry run is the CPU path")
    log = []

    def broken(q, k, v):
        raise RuntimeError("boom")

    def traced(name, fn):
        def call(*args):
            log.append(f"run {name}")
            return fn(*args)

        return call

    real = bench._candidates

    def cands(cfg, theta):
        return {"broken": broken, **{n: traced(n, f) for n, f in real(cfg, theta).items()}}

    monkeypatch.setattr(bench, "_candidates", cands)
    cfg = bench.parse_config(["--device", "cpu", *TINY, "--candidates", "sdpa-flash", "triton α=1.5", "--no-check"])
    rows = bench.run(cfg, emit=lambda r: log.append(f"emit {r['candidate']}"))
    assert [r["status"] for r in rows][:3] == ["error: RuntimeError: boom", "ok", "ok"]
    # each row is emitted before the next candidate runs
    first_emit_sdpa = log.index("emit sdpa-flash")
    assert log.index("run triton α=1.5") > first_emit_sdpa
    assert not math.isnan(rows[2]["ms"]) and rows[2]["ratio"] > 0


def test_no_host_sync_in_the_kernels_step():
    """On a GPU: a forward + backward of the kernel (learned α) passes under torch's sync debug mode 'error'."""
    if DEVICE.type != "cuda":
        pytest.skip("needs CUDA")
    from adasparse.kernels.triton_entmax_attention import triton_entmax_attention

    q, k, v = (torch.randn(1, 2, 256, 64, device=DEVICE, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    theta = torch.zeros(2, device=DEVICE, requires_grad=True)
    do = torch.randn(1, 2, 256, 64, device=DEVICE, dtype=torch.bfloat16)
    triton_entmax_attention(q, k, v, bench.learned_alpha(theta)).backward(do)  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        triton_entmax_attention(q, k, v, bench.learned_alpha(theta)).backward(do)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.isfinite(theta.grad).all()
