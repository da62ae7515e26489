"""The fused CPU kernel (adasparse/ops/_cpu.py) against the PyTorch reference path and the `entmax` package.

Every comparison runs the same public function twice: once with the kernel (the default on CPU) and once
inside ``_cpu.disabled()`` (the PyTorch reference path), or against a float64 bisection reference, or
against the deep-spin ``entmax`` package as an independent oracle.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from adasparse.ops import _cpu
from adasparse.ops.entmax import entmax, entmax15, entmax_bisect_reference, sparsemax

pytestmark = pytest.mark.skipif(not _cpu.available(), reason=f"fused CPU kernel unavailable here: {_cpu.build_error()}")

ALPHAS = [1.01, 1.3, 1.5, 2.0, 2.5]


def _scores(shape, dtype, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    x[0, :3] = float("-inf")  # partly masked row
    x[1, :] = float("-inf")  # fully masked row
    return x.to(dtype)


def _run(x, alpha, g, *, reference: bool):
    """Forward + backward; returns (p, ∂/∂x, ∂/∂α or None)."""
    xx = x.clone().requires_grad_()
    aa = alpha.clone().requires_grad_() if isinstance(alpha, torch.Tensor) else alpha
    if reference:
        with _cpu.disabled():
            p = entmax(xx, aa)
            p.backward(g)
    else:
        p = entmax(xx, aa)
        p.backward(g)
    ga = aa.grad if isinstance(aa, torch.Tensor) else None
    return p.detach(), xx.grad, ga


def _row_alpha(rows, values, dtype):
    vals = torch.tensor(values, dtype=dtype)
    return vals[torch.arange(rows) % len(vals)].unsqueeze(-1)  # (rows, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 16, 33, 128])
@pytest.mark.parametrize("alpha", ALPHAS + ["per-row", "tensor-scalar"])
def test_kernel_matches_reference_path(dtype, n, alpha):
    rows = 12
    x = _scores((rows, n), dtype, seed=n)
    if n == 1:
        x[0, 0] = 0.5  # keep one unmasked row-of-one
    g = torch.randn(rows, n, dtype=dtype, generator=torch.Generator().manual_seed(1))
    if alpha == "per-row":
        a = _row_alpha(rows, [1.0, 1.01, 1.2, 1.5, 1.7, 2.0, 2.5], dtype)
    elif alpha == "tensor-scalar":
        a = torch.tensor([1.3], dtype=dtype)
    else:
        a = alpha
    fast = _run(x, a, g, reference=False)
    ref = _run(x, a, g, reference=True)
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(fast[0], ref[0], **tol)
    torch.testing.assert_close(fast[1], ref[1], **tol)
    if fast[2] is not None:
        torch.testing.assert_close(fast[2], ref[2], **tol)
    # exact zeros agree (same support), masked entries are exactly 0 with zero gradient
    assert torch.equal(fast[0] == 0, ref[0] == 0) or dtype == torch.float32
    assert torch.all(fast[0][torch.isinf(x)] == 0)
    assert torch.all(fast[1][torch.isinf(x)] == 0)
    assert not torch.isnan(fast[0]).any() and not torch.isnan(fast[1]).any()


@pytest.mark.parametrize("n", [5, 40, 128])
def test_rows_of_every_kind_interleaved(n):
    """The kernel keeps several Newton rows in flight and computes the other rows on the spot: rows of
    every kind, interleaved in one call, must each match the reference path."""
    rows = 61  # odd, so that the rows in flight run out unevenly
    x = _scores((rows, n), torch.float32, seed=3)
    x[5, :] = float("-inf")  # a second fully masked row, among Newton rows
    x[9, 1] = float("nan")  # a NaN row stays NaN, alone
    a = _row_alpha(rows, [1.3, 1.3, 1.05, 1.5, 1.3, 2.0, 1.7, 1.0, 2.5, 1.3, 1.9], torch.float32)
    g = torch.randn(rows, n, generator=torch.Generator().manual_seed(2))
    fast = _run(x, a, g, reference=False)
    ref = _run(x, a, g, reference=True)
    ok = torch.ones(rows, dtype=torch.bool)
    ok[9] = False
    assert torch.isnan(fast[0][9]).all() and not torch.isnan(fast[0][ok]).any()
    torch.testing.assert_close(fast[0][ok], ref[0][ok], atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(fast[1][ok], ref[1][ok], atol=2e-6, rtol=1e-4)
    assert torch.all(fast[0][ok][torch.isinf(x[ok])] == 0)
    assert torch.all(fast[0][5] == 0) and torch.all(fast[1][5] == 0)


@pytest.mark.parametrize("alpha", [1.01, 1.1, 1.3, 1.5, 1.7, 2.0])
@pytest.mark.parametrize("n", [128, 512])
def test_float32_accuracy_against_float64_reference(alpha, n):
    torch.manual_seed(0)
    for scale in (1.0, 10.0):
        x = torch.randn(64, n) * scale
        p = entmax(x, alpha)
        ref = entmax_bisect_reference(x.double(), alpha, n_iter=200)
        assert (p.double().sum(-1) - 1).abs().max().item() <= 1e-6
        assert (p.double() - ref).abs().max().item() <= 1e-6
        # exact zeros outside the support: wherever the float64 solution is (clearly) zero
        assert torch.all(p[ref == 0] == 0)


# both paths: the kernel (shifted powers in float) and the PyTorch reference (last Newton step and p in float64)
_NEAR_ONE = [(path, a) for path in ("kernel", "reference") for a in (1.002, 1.01, 1.05, 1.1, 1.124)]


@pytest.mark.parametrize("path, alpha", _NEAR_ONE)
@pytest.mark.parametrize("n", [7, 128, 512])
def test_float32_near_softmax_gradients_against_float64(path, alpha, n):
    """Below α = 1.125 float rows get p without the d-fold amplified rounding of r = x − τ (kernel: shifted
    powers; reference: τ refined and p computed in float64) and the regrouped α-gradient (both paths):
    p, ∂/∂x and ∂/∂α in float32 agree with the same inputs computed in float64 to float precision. (The
    textbook form Σ g (p − p̃)/(α−1)² + … loses digits as 1/(α−1)², even in double from a float p.)"""
    reference = path == "reference"
    gen = torch.Generator().manual_seed(n)
    for scale in (1.0, 5.0, 30.0):
        x = torch.randn(256, n, generator=gen, dtype=torch.float64) * scale
        x[::7, 0] += 20.0  # rows with one dominant entry
        x = x.float()
        g = torch.randn(256, n, generator=gen)
        a32 = torch.full((256, 1), alpha)
        p32, gx32, ga32 = _run(x, a32, g, reference=reference)
        p64, gx64, ga64 = _run(x.double(), a32.double(), g.double(), reference=False)
        assert (p32.double() - p64).abs().max().item() <= 1e-6
        assert ((gx32.double() - gx64).norm() / gx64.norm()).item() <= 3e-6
        assert ((ga32.double() - ga64).abs().max() / ga64.abs().max()).item() <= 3e-6


@pytest.mark.parametrize("n", [64, 300])
def test_exact_sparsemax_and_entmax15_support(n):
    x = torch.randn(40, n, dtype=torch.float64)
    for fn, alpha in ((sparsemax, 2.0), (entmax15, 1.5)):
        p = fn(x)
        ref = entmax_bisect_reference(x, alpha, n_iter=300)
        torch.testing.assert_close(p, ref, atol=1e-14, rtol=0)
        assert torch.equal(p > 0, ref > 1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_against_entmax_package(dtype):
    pkg = pytest.importorskip("entmax", reason="the `entmax` package (test oracle) is not installed")
    torch.manual_seed(3)
    x = torch.randn(10, 37, dtype=dtype)
    g = torch.randn(10, 37, dtype=dtype)
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-6, rtol=1e-4)
    for ours, theirs in ((sparsemax, pkg.sparsemax), (entmax15, pkg.entmax15)):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        pa, pb = ours(xa, dim=-1), theirs(xb, dim=-1)
        pa.backward(g)
        pb.backward(g)
        torch.testing.assert_close(pa, pb, **tol)
        torch.testing.assert_close(xa.grad, xb.grad, **tol)
    # learned per-row α: values and both gradients against entmax_bisect (float64 only: it bisects)
    if dtype == torch.float64:
        a = torch.linspace(1.05, 1.95, 10, dtype=dtype).unsqueeze(-1)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        aa, ab = a.clone().requires_grad_(), a.clone().requires_grad_()
        pa = entmax(xa, aa)
        pb = pkg.entmax_bisect(xb, ab, dim=-1, n_iter=100)
        pa.backward(g)
        pb.backward(g)
        torch.testing.assert_close(pa, pb, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(xa.grad, xb.grad, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(aa.grad, ab.grad, atol=1e-8, rtol=1e-6)


def test_gradcheck_through_kernel():
    torch.manual_seed(0)
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    a = torch.tensor([[1.05], [1.3], [1.6], [1.95]], dtype=torch.float64, requires_grad=True)
    # torch.autograd.gradcheck's backward runs without create_graph, i.e. through the kernel
    assert torch.autograd.gradcheck(lambda x, a: entmax(x, a), (x, a), eps=1e-6, atol=1e-6)
    for fn in (sparsemax, entmax15):
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)


def test_nan_row_stays_in_its_row():
    x = torch.randn(3, 20)
    x[1, 4] = float("nan")
    a = torch.full((3, 1), 1.3, requires_grad=True)
    xx = x.clone().requires_grad_()
    for alpha in (1.3, 1.5, 2.0, a):
        xx.grad = None
        p = entmax(xx, alpha)
        assert torch.isnan(p[1]).all()
        assert not torch.isnan(p[[0, 2]]).any()
        p.backward(torch.ones_like(p))
        assert torch.isnan(xx.grad[1]).all() and not torch.isnan(xx.grad[[0, 2]]).any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_upcast(dtype):
    x = (torch.randn(8, 50) * 4).to(dtype)
    x[0] = float("-inf")
    for alpha in (1.3, 1.5, 2.0):
        xx = x.clone().requires_grad_()
        p = entmax(xx, alpha)
        assert p.dtype == dtype
        assert not torch.isnan(p).any()
        torch.testing.assert_close(p.float(), entmax(x.float(), alpha), atol=4e-3, rtol=1e-2)
        p.backward(torch.ones_like(p))
        assert xx.grad.dtype == dtype and not torch.isnan(xx.grad).any()


def test_extreme_scores_and_attention_layout():
    x = torch.tensor([[1e4, -1e4, 0.0, 1e4 - 0.5], [-1e4, -1e4, -1e4, -1e4]])
    for alpha in (1.3, 1.5, 2.0):
        p = entmax(x, alpha)
        with _cpu.disabled():
            ref = entmax(x, alpha)
        torch.testing.assert_close(p, ref)
        assert torch.allclose(p.sum(-1), torch.ones(2))
    # per-head α on (B, H, Q, K) scores, along a non-last dim too
    s = torch.randn(2, 3, 5, 6)
    a = torch.tensor([1.1, 1.5, 2.0]).view(1, 3, 1, 1)
    with _cpu.disabled():
        ref = entmax(s, a, dim=-1), entmax(s, a, dim=2)
    torch.testing.assert_close(entmax(s, a, dim=-1), ref[0])
    torch.testing.assert_close(entmax(s, a, dim=2), ref[1])


def test_results_do_not_depend_on_thread_count():
    x = torch.randn(256, 70)
    a = torch.rand(256, 1) + 1.0
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = entmax(x, a), entmax(x, 1.3)
        torch.set_num_threads(2)
        two = entmax(x, a), entmax(x, 1.3)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_vmap_and_func_grad_with_kernel():
    x = torch.randn(4, 3, 10)
    a = torch.full((3, 1), 1.4)
    out = torch.func.vmap(lambda xi: entmax(xi, a))(x)
    torch.testing.assert_close(out, entmax(x, a.unsqueeze(0)))
    gx = torch.func.grad(lambda xi: (entmax(xi, 1.3) * torch.arange(10.0)).sum())(x[0])
    xx = x[0].clone().requires_grad_()
    (entmax(xx, 1.3) * torch.arange(10.0)).sum().backward()
    torch.testing.assert_close(gx, xx.grad)


def test_compile_fullgraph_uses_same_kernel():
    torch._dynamo.reset()
    x = torch.randn(6, 20, requires_grad=True)
    a = torch.full((6, 1), 1.3, requires_grad=True)

    def f(x, a):
        return (entmax(x, a) * torch.arange(20.0)).sum() + (entmax15(x) * torch.arange(20.0)).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    gx, ga = torch.autograd.grad(compiled(x, a), (x, a))
    ex, ea = torch.autograd.grad(f(x, a), (x, a))
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(ga, ea)


def test_fallback_without_compiler_warns_once_and_stays_correct(tmp_path):
    """No C++ compiler on PATH and an empty cache: one RuntimeWarning, then the PyTorch path."""
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    from adasparse.ops import _cpu\n"
        "    from adasparse.ops.entmax import entmax\n"
        "    p = entmax(torch.tensor([[3.0, 2.5, 1.0]]), 2.0)\n"
        "    entmax(torch.randn(3, 4), 1.3)\n"
        "assert not _cpu.available(), 'kernel should be unavailable'\n"
        "msgs = [str(x.message) for x in w if 'fused CPU kernel' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert torch.allclose(p, torch.tensor([[0.75, 0.25, 0.0]]))\n"
        "print('fallback ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    env["PATH"] = str(tmp_path)  # no compiler here
    env["ADASPARSE_CACHE_DIR"] = str(tmp_path / "cache")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fallback ok" in out.stdout


def test_disabled_context_switches_paths():
    x = torch.randn(5, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = entmax(x, 1.3)
        with _cpu.disabled():
            assert not _cpu.available()
            ref = entmax(x, 1.3)
        assert _cpu.available()
    torch.testing.assert_close(fast, ref)
