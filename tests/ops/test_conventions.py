"""The mappings keep the conventions their docs promise, in the cases users hit (issue 12, point 4).

Each test is a case that used to be silently wrong or to raise: ``entmax(x, 1.0)`` on fully masked rows,
α > 2 in float32, 0-dim and empty inputs, meta and FakeTensor inputs. References: ``torch.softmax``, the
float64 bisection ``entmax_bisect_reference`` and the deep-spin ``entmax`` package.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from adasparse import entmax, entmax15, sparsemax
from adasparse.ops import _cpu
from adasparse.ops._solver import solve_entmax
from adasparse.ops.entmax import entmax_bisect_reference

PATHS = ["default", "reference"]  # the default path (fused CPU kernel where built) and the PyTorch path


def _path(path: str):
    return _cpu.disabled() if path == "reference" else contextlib.nullcontext()


def _masked_scores(dtype, seed=0):
    """(4, 6) scores: row 1 fully masked, row 2 partly masked."""
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(4, 6, generator=g, dtype=torch.float64) * 2).to(dtype)
    z[1] = -math.inf
    z[2, ::2] = -math.inf
    return z


# ---------------------------------------------------------------- α = 1 (Python float) on fully masked rows


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("path", PATHS)
def test_alpha_one_float_gives_zeros_on_fully_masked_rows(dtype, path):
    z = _masked_scores(dtype)
    live = torch.tensor([0, 2, 3])
    g = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    for alpha in (1.0, 1, torch.tensor(1.0, dtype=dtype)):
        zz = z.clone().requires_grad_()
        with _path(path):
            p = entmax(zz, alpha)
            p.backward(g)
        assert (p[1] == 0).all() and (zz.grad[1] == 0).all()
        assert not p.isnan().any() and not zz.grad.isnan().any()
        # the other rows are torch.softmax's, values and gradients
        zs = z[live].clone().requires_grad_()
        ps = torch.softmax(zs, -1)
        ps.backward(g[live])
        tol = {"atol": 0, "rtol": 0} if not isinstance(alpha, torch.Tensor) else {}
        torch.testing.assert_close(p[live], ps, **tol)
        torch.testing.assert_close(
            zz.grad[live], zs.grad, **({"atol": 1e-2, "rtol": 1e-2} if dtype.itemsize == 2 else {})
        )


def test_alpha_one_float_is_exactly_softmax_without_masked_rows_and_keeps_nan_rows():
    z = torch.randn(5, 7)
    assert torch.equal(entmax(z, 1.0), torch.softmax(z, -1))
    assert torch.equal(entmax(z, 1.0, dim=0), torch.softmax(z, 0))
    z[3, 2] = math.nan
    z[1] = -math.inf
    p = entmax(z, 1.0)
    assert p[3].isnan().all()  # NaN stays in its row, as with softmax
    assert (p[1] == 0).all()
    ok = torch.tensor([0, 2, 4])
    assert torch.equal(p[ok], torch.softmax(z[ok], -1))


def test_alpha_one_fully_masked_under_transforms_and_solver():
    z = _masked_scores(torch.float64)
    # the traced form (vmap, jvp) takes the masked branch directly
    pv = torch.func.vmap(lambda r: entmax(r, 1.0))(z)
    torch.testing.assert_close(pv, entmax(z, 1.0), atol=0, rtol=0)
    _, t = torch.func.jvp(lambda r: entmax(r, 1.0), (z,), (torch.ones_like(z),))
    assert (t[1] == 0).all() and not t.isnan().any()
    # the solver op (used by the losses) on its PyTorch path, for a Python α = 1 and a tensor α = 1
    with _cpu.disabled():
        for a, av in ((None, 1.0), (torch.ones(4, 1, dtype=torch.float64), 0.0)):
            p = solve_entmax(z, a, av)
            assert (p[1] == 0).all() and not p.isnan().any()
            torch.testing.assert_close(p[0], torch.softmax(z[0], -1))


# ---------------------------------------------------------------- α > 2: accurate in every dtype


@pytest.mark.parametrize("alpha", [2.5, 3.0, 5.0, 10.0, 20.0])
@pytest.mark.parametrize("path", PATHS)
def test_alpha_above_two_float32_matches_float64_bisection(alpha, path):
    torch.manual_seed(0)
    for scale in (1.0, 10.0):
        z = torch.randn(256, 97) * scale
        with _path(path):
            p = entmax(z, alpha)
        assert p.dtype == torch.float32
        ref = entmax_bisect_reference(z.double(), alpha, n_iter=200)
        assert (p.double() - ref).abs().max().item() <= 1e-6  # was 0.138 at α = 10, 0.30 at α = 20
        assert (p[ref == 0] == 0).all()


def test_alpha_above_two_per_row_tensor_and_half_precision():
    torch.manual_seed(1)
    z = torch.randn(6, 40) * 3
    a = torch.tensor([1.3, 2.0, 3.0, 5.0, 10.0, 1.5]).unsqueeze(-1)  # rows above and below 2 in one call
    ref = torch.cat([entmax_bisect_reference(z[i : i + 1].double(), a[i].item(), n_iter=200) for i in range(6)])
    for path in PATHS:
        with _path(path):
            p = entmax(z, a)
        assert (p.double() - ref).abs().max().item() <= 1e-6
    zh = z.to(torch.bfloat16)
    p = entmax(zh, 10.0)
    assert p.dtype == torch.bfloat16
    ref_h = entmax_bisect_reference(zh.double(), 10.0, n_iter=200)
    assert (p.double() - ref_h).abs().max().item() <= 4e-3  # bfloat16 rounding of p only (was ~0.1)


def _entmax_mpmath(row: torch.Tensor, alpha: float) -> torch.Tensor:
    """α-entmax of one row in 60-digit arithmetic (bisection on τ): the exact answer for these float scores."""
    mp = pytest.importorskip("mpmath")  # a dependency of torch (through sympy)
    with mp.workdps(60):
        am1 = mp.mpf(alpha) - 1
        x = [mp.mpf(float(v)) * am1 for v in row]
        top = max(x)
        x = [v - top for v in x]
        lo, hi = mp.mpf(-1), mp.mpf(0)
        for _ in range(230):
            mid = (lo + hi) / 2
            if sum((v - mid) ** (1 / am1) for v in x if v > mid) > 1:
                lo = mid
            else:
                hi = mid
        p = [(v - lo) ** (1 / am1) if v > lo else mp.mpf(0) for v in x]
        total = sum(p)
        return torch.tensor([float(v / total) for v in p], dtype=torch.float64)


def test_alpha_above_two_against_entmax_package_and_exact_arithmetic():
    torch.manual_seed(2)
    z = torch.randn(16, 30)
    for alpha in (3.0, 5.0):
        exact = torch.stack([_entmax_mpmath(r, alpha) for r in z])
        assert (entmax(z, alpha).double() - exact).abs().max().item() <= 1e-6
        assert (entmax(z.double(), alpha) - exact).abs().max().item() <= 1e-9
    pkg = pytest.importorskip("entmax", reason="the `entmax` package (dev extra) is the oracle")
    theirs = pkg.entmax_bisect(z.double(), 3.0, dim=-1, n_iter=200)
    assert (entmax(z, 3.0).double() - theirs).abs().max().item() <= 1e-6


# ---------------------------------------------------------------- shapes: 0-dim and empty


@pytest.mark.parametrize(
    "fn",
    [
        lambda t, **k: entmax(t, 1.0, **k),
        lambda t, **k: entmax(t, 1.3, **k),
        lambda t, **k: entmax(t, 3.0, **k),
        lambda t, **k: entmax(t, torch.tensor(1.7, dtype=t.dtype), **k),
        sparsemax,
        entmax15,
    ],
)
def test_zero_dim_input_behaves_as_softmax(fn):
    x = torch.tensor(3.0, requires_grad=True)
    p = fn(x)
    ref = torch.softmax(torch.tensor(3.0), 0)
    assert p.shape == ref.shape == () and torch.equal(p.detach(), ref)
    p.backward()
    assert x.grad == 0
    assert torch.equal(fn(x.detach(), dim=-1), ref) and torch.equal(fn(x.detach(), dim=0), ref)
    with pytest.raises(IndexError):
        torch.softmax(x, 1)
    with pytest.raises(IndexError):
        fn(x, dim=1)
    assert fn(torch.tensor(-math.inf)) == 0  # a fully masked row of one (softmax: NaN)


@pytest.mark.parametrize("shape,dim", [((0, 5), -1), ((3, 0), -1), ((3, 0), 0), ((2, 0, 4), 1), ((0,), 0)])
@pytest.mark.parametrize("alpha", [1.0, 1.5, 2.0, 1.3, 3.0, "tensor"])
def test_empty_inputs(shape, dim, alpha):
    x = torch.randn(shape, requires_grad=True)
    a = torch.tensor(1.4, requires_grad=True) if alpha == "tensor" else alpha
    p = entmax(x, a, dim=dim)
    assert p.shape == torch.softmax(x, dim).shape == x.shape
    p.sum().backward()
    assert x.grad.shape == x.shape
    if alpha == "tensor":
        assert a.grad is not None and a.grad == 0


# ---------------------------------------------------------------- meta and FakeTensor: shapes only


@pytest.mark.parametrize("alpha", [1.0, 1.3, 1.5, 2.0, 3.0, "tensor"])
def test_meta_device_forward_and_backward(alpha):
    x = torch.empty(2, 5, 3, device="meta", requires_grad=True)
    a = torch.full((2, 1, 1), 1.4, device="meta", requires_grad=True) if alpha == "tensor" else alpha
    p = entmax(x, a, dim=1)
    assert p.device.type == "meta" and p.shape == x.shape and p.dtype == x.dtype
    p.sum().backward()
    assert x.grad.shape == x.shape and x.grad.device.type == "meta"
    if alpha == "tensor":
        assert a.grad.shape == a.shape
    for fn in (sparsemax, entmax15):
        assert fn(torch.empty(4, 6, device="meta", dtype=torch.float16)).shape == (4, 6)


def test_meta_module_init_and_fake_tensor_mode():
    from adasparse import Entmax

    with torch.device("meta"):
        m = Entmax(torch.nn.Parameter(torch.tensor(1.3)))
        assert m(torch.empty(3, 8)).shape == (3, 8)
    with FakeTensorMode():
        x = torch.empty(2, 7, requires_grad=True)
        a = torch.full((2, 1), 1.6, requires_grad=True)
        for alpha in (1.0, 1.3, 3.0, a):
            p = entmax(x, alpha)
            assert p.shape == (2, 7)
            p.sum().backward()
        assert x.grad.shape == (2, 7) and a.grad.shape == (2, 1)


@pytest.mark.parametrize("alpha", [2.5, 3.0, 5.0, 10.0, 20.0])
def test_alpha_above_two_gradients_float32_match_float64(alpha):
    """s = p^(2−α) of the smallest weight dwarfs the others' (1e14 at α = 10): the direct s ⊙ g − s (sᵀg)/Σs
    cancelled to a relative error of 2.6 in float32 at α = 10 (and 6e-3 in float64 at α = 20)."""
    g = torch.randn(256, 64, generator=torch.Generator().manual_seed(4))
    z = torch.randn(256, 64, generator=torch.Generator().manual_seed(5)) * 2
    grads = []
    for dtype in (torch.float32, torch.float64):
        zz = z.to(dtype).detach().clone().requires_grad_()
        a = torch.tensor(alpha, dtype=dtype, requires_grad=True)
        (entmax(zz, a) * g.to(dtype)).sum().backward()
        grads.append((zz.grad.double(), a.grad.double()))
    (gz32, ga32), (gz64, ga64) = grads
    assert (gz32 - gz64).abs().max() <= 1e-5 * gz64.abs().max()
    assert (ga32 - ga64).abs() <= 1e-5 * ga64.abs()
    with _cpu.disabled():  # the PyTorch path gives the same float64 gradient
        zz = z.double().detach().clone().requires_grad_()
        (entmax(zz, alpha) * g.double()).sum().backward()
    torch.testing.assert_close(zz.grad, gz64, atol=1e-10 * gz64.abs().max().item(), rtol=0)


@pytest.mark.parametrize("alpha", [3.0, 5.0, 10.0])
def test_alpha_above_two_gradcheck_with_wide_support(alpha):
    z = (torch.randn(4, 12, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 0.03).requires_grad_()
    assert ((entmax(z, alpha) > 0).sum(-1) >= 2).all()  # several weights, small ones among them
    a = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, b: entmax(t, b), (z, a))


# ---------------------------------------------------------------- the entmax package's names take its arguments


def test_top_level_names_of_the_entmax_package_take_its_arguments():
    """``adasparse.entmax15/sparsemax`` and ``Entmax15/Sparsemax`` have the package's parameters, positional order
    and defaults (``k``: its partial-sort size, which never changes the exact result), and agree with it."""
    import inspect

    ent = pytest.importorskip("entmax", reason="the entmax package is the reference here (pip install entmax)")
    import adasparse

    def params(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()][1:]  # after the input

    z = torch.randn(5, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("entmax15", "sparsemax"):
        ours, theirs = getattr(adasparse, name), getattr(ent, name)
        assert params(ours) == params(theirs)
        for k in (None, 1, 3, 9):
            torch.testing.assert_close(ours(z, -1, k), theirs(z, -1, k))
            torch.testing.assert_close(ours(z.T, 0, k), theirs(z.T, 0, k))
        with pytest.raises(ValueError, match="k must be None or a positive int"):
            ours(z, -1, 0)
    for name in ("Entmax15", "Sparsemax"):
        ours, theirs = getattr(adasparse, name), getattr(ent, name)
        assert params(ours.__init__) == params(theirs.__init__)
        torch.testing.assert_close(ours(0, 2)(z.T), theirs(0, 2)(z.T))
