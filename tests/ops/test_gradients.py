"""Gradients in z and α: gradcheck, the `entmax` package as an oracle, torch.func and torch.compile."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from adasparse import entmax, entmax15, sparsemax


def _z(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [1.01, 1.05, 1.3, 1.5, 1.8, 1.99, 2.0, 2.5])
def test_gradcheck_scalar_alpha_in_x(alpha):
    z = _z(3, 9).requires_grad_()
    assert gradcheck(lambda t: entmax(t, alpha), (z,))


def test_gradcheck_fixed_mappings():
    z = _z(4, 11).requires_grad_()
    assert gradcheck(sparsemax, (z,))
    assert gradcheck(entmax15, (z,))


@pytest.mark.parametrize("a0", [1.01, 1.02, 1.2, 1.5, 1.9, 1.999])
def test_gradcheck_tensor_alpha_scalar(a0):
    z = _z(3, 8, seed=1).requires_grad_()
    a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t, b: entmax(t, b), (z, a), atol=1e-6)


def test_gradcheck_per_head_alpha():
    z = _z(2, 3, 4, 6, seed=2).requires_grad_()  # (B, H, Q, K)
    a = torch.tensor([1.1, 1.5, 1.95], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t, b: entmax(t, b.view(1, 3, 1, 1)), (z, a))


def test_gradcheck_per_row_alpha_and_dim():
    z = _z(5, 4, 3, seed=3).requires_grad_()
    a = (1.05 + 0.9 * torch.rand(5, 1, 3, dtype=torch.float64)).requires_grad_()
    assert gradcheck(lambda t, b: entmax(t, b, dim=1), (z, a))


def test_gradcheck_with_masked_entries():
    z = _z(3, 7, seed=4)
    mask = torch.rand(3, 7, generator=torch.Generator().manual_seed(0)) > 0.3
    mask[:, 0] = True
    z = z.requires_grad_()
    a = torch.tensor([[1.2], [1.5], [1.8]], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda t, b: entmax(t.masked_fill(~mask, -math.inf), b), (z, a))


def test_alpha_gradient_limit_at_one():
    # the α-gradient at α = 1 + tiny uses the limit formula; it must agree with nearby α
    z = _z(4, 10, seed=5)
    g = _z(4, 10, seed=6)

    def da(a0):
        a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
        (entmax(z, a) * g).sum().backward()
        return a.grad.item()

    assert da(1.0 + 1e-9) == pytest.approx(da(1.0 + 1e-4), rel=1e-3, abs=1e-6)
    assert da(1.0) == pytest.approx(da(1.0 + 1e-4), rel=1e-3, abs=1e-6)


def test_alpha_gradient_is_summed_to_alpha_shape():
    z = _z(2, 3, 4, 5, seed=7).requires_grad_()
    a = torch.full((3,), 1.4, dtype=torch.float64, requires_grad=True)
    g = _z(2, 3, 4, 5, seed=8)
    (entmax(z, a.view(1, 3, 1, 1)) * g).sum().backward()
    per_row = torch.tensor(1.4, dtype=torch.float64).expand(2, 3, 4, 1).clone().requires_grad_()
    (entmax(z.detach(), per_row) * g).sum().backward()
    torch.testing.assert_close(a.grad, per_row.grad.sum((0, 2, 3)))


# ---------------------------------------------------------------- the `entmax` package as oracle


@pytest.mark.parametrize("alpha", [1.1, 1.3, 1.5, 1.7, 2.0])
def test_values_and_both_gradients_match_entmax_package(alpha):
    pkg = pytest.importorskip("entmax", reason="the `entmax` package (dev extra) is the oracle")
    z = _z(6, 4, 13, seed=9)
    g = _z(6, 4, 13, seed=10)
    a0 = torch.full((6, 4, 1), alpha, dtype=torch.float64)

    z1, a1 = z.clone().requires_grad_(), a0.clone().requires_grad_()
    p1 = entmax(z1, a1)
    (p1 * g).sum().backward()

    z2, a2 = z.clone().requires_grad_(), a0.clone().requires_grad_()
    p2 = pkg.entmax_bisect(z2, a2, dim=-1, n_iter=100)
    (p2 * g).sum().backward()

    torch.testing.assert_close(p1, p2, atol=1e-10, rtol=0)
    torch.testing.assert_close(z1.grad, z2.grad, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(a1.grad, a2.grad, atol=1e-6, rtol=1e-5)


def test_fixed_mappings_match_entmax_package():
    pkg = pytest.importorskip("entmax", reason="the `entmax` package (dev extra) is the oracle")
    z = _z(8, 21, seed=11)
    g = _z(8, 21, seed=12)
    for ours, theirs in ((sparsemax, pkg.sparsemax), (entmax15, pkg.entmax15)):
        z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
        p1, p2 = ours(z1), theirs(z2, dim=-1)
        (p1 * g).sum().backward()
        (p2 * g).sum().backward()
        torch.testing.assert_close(p1, p2, atol=1e-12, rtol=0)
        torch.testing.assert_close(z1.grad, z2.grad, atol=1e-10, rtol=0)


# ---------------------------------------------------------------- torch.func and torch.compile


def test_vmap_matches_loop():
    z = _z(4, 3, 9, seed=13)
    a = torch.tensor([1.2, 1.5, 2.0, 1.05], dtype=torch.float64)
    out = torch.func.vmap(lambda t, b: entmax(t, b.view(1, 1)))(z, a)
    ref = torch.stack([entmax(z[i], a[i].item()) for i in range(4)])
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.func.vmap(sparsemax)(z), sparsemax(z))


def test_func_grad_and_vmap_of_grad():
    z = _z(3, 7, seed=14)
    g = _z(3, 7, seed=15)

    def f(t, b):
        return (entmax(t, b) * g[0]).sum()

    a = torch.tensor(1.4, dtype=torch.float64)
    gz, ga = torch.func.grad(f, argnums=(0, 1))(z[0], a)
    z0, a0 = z[0].clone().requires_grad_(), a.clone().requires_grad_()
    f(z0, a0).backward()
    torch.testing.assert_close(gz, z0.grad)
    torch.testing.assert_close(ga, a0.grad)
    per_row = torch.func.vmap(torch.func.grad(lambda t: (entmax15(t) * g[0]).sum()))(z)
    for i in range(3):
        zi = z[i].clone().requires_grad_()
        (entmax15(zi) * g[0]).sum().backward()
        torch.testing.assert_close(per_row[i], zi.grad)


def test_torch_compile_fullgraph():
    z = torch.randn(4, 5, 16, requires_grad=True)
    a = torch.tensor([1.2, 1.6, 1.9, 1.3], requires_grad=True)

    def f(t, b):
        return (entmax(t, b.view(4, 1, 1)) * 2).sum(-1).square().mean()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(z, a)
    out.backward()
    gz, ga = z.grad.clone(), a.grad.clone()
    z.grad = a.grad = None
    f(z, a).backward()
    torch.testing.assert_close(out, f(z, a))
    torch.testing.assert_close(gz, z.grad)
    torch.testing.assert_close(ga, a.grad)
