"""Gradients in z and α: gradcheck, the `entmax` package as an oracle, torch.func and torch.compile."""

import math

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from adasparse import entmax, entmax15, sparsemax


def _z(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [1.01, 1.05, 1.3, 1.5, 1.8, 1.99, 2.0, 2.5, 3.0, 5.0])
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


# ---------------------------------------------------------------- second derivatives (double backward)


def _sparse_scores(seed=20):
    """(4, 8) float64 scores with masked entries and one fully masked row; every mapping here has zeros."""
    z = _z(4, 8, seed=seed) * 2
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[1] = False
    mask[2, ::3] = False
    return z, mask


@pytest.mark.parametrize(
    "name,fn",
    [
        ("sparsemax", sparsemax),
        ("entmax15", entmax15),
        ("alpha=1", lambda t: entmax(t, 1.0)),
        ("alpha=1.3", lambda t: entmax(t, 1.3)),
        ("alpha=1.8", lambda t: entmax(t, 1.8)),
        ("alpha=2.5", lambda t: entmax(t, 2.5)),
    ],
)
def test_gradgradcheck_fixed_alpha(name, fn):
    z, mask = _sparse_scores()

    def f(t):
        return fn(t.masked_fill(~mask, -math.inf))

    p = f(z)
    if name != "alpha=1":
        assert (p[mask] == 0).any()  # zeros in the output: where p^(2−α) used to give NaN
    zz = z.clone().requires_grad_()
    assert gradgradcheck(f, (zz,))
    # the second derivative is finite and zero on masked entries
    (gz,) = torch.autograd.grad((f(zz) ** 2).sum(), zz, create_graph=True)
    (hz,) = torch.autograd.grad((gz * _z(4, 8, seed=21)).sum(), zz)
    assert torch.isfinite(hz).all() and (hz[~mask] == 0).all()


@pytest.mark.parametrize("a0", [1.05, 1.3, 1.5, 1.8, 2.0, 2.5])
def test_gradgradcheck_tensor_alpha(a0):
    """Both inputs, α included: the regrouped α-gradient (α − 1 < 1/8), the general one, α = 2, α > 2."""
    z, mask = _sparse_scores(seed=22)
    zz = z.clone().requires_grad_()
    a = (a0 + torch.tensor([[0.0], [0.01], [0.02], [0.03]], dtype=torch.float64)).requires_grad_()

    def f(t, b):
        return entmax(t.masked_fill(~mask, -math.inf), b)

    assert (f(z, a)[mask] == 0).any() or a0 < 1.1
    assert gradgradcheck(f, (zz, a))
    s = torch.tensor(a0 + 0.01, dtype=torch.float64, requires_grad=True)  # one α for every row
    assert gradgradcheck(f, (zz, s))


# ---------------------------------------------------------------- forward mode (jvp, jacfwd, hessian)


def _central(f, args, tangents, eps=1e-6):
    plus = f(*[a + eps * t for a, t in zip(args, tangents)])
    minus = f(*[a - eps * t for a, t in zip(args, tangents)])
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize(
    "fn", [sparsemax, entmax15, lambda t: entmax(t, 1.0), lambda t: entmax(t, 1.3), lambda t: entmax(t, 3.0)]
)
def test_jvp_jacfwd_hessian_fixed_alpha(fn):
    z, mask = _sparse_scores(seed=23)

    def f(t):
        return fn(t.masked_fill(~mask, -math.inf))

    v = _z(4, 8, seed=24)
    p, jv = torch.func.jvp(f, (z,), (v,))
    torch.testing.assert_close(p, f(z))
    torch.testing.assert_close(jv, _central(f, (z,), (v,)), atol=1e-7, rtol=1e-6)
    # the formula: s ⊙ v − s (sᵀv)/Σs with s = p^(2−α) on the support, checked through autograd.forward_ad
    with torch.autograd.forward_ad.dual_level():
        out = f(torch.autograd.forward_ad.make_dual(z, v))
        torch.testing.assert_close(torch.autograd.forward_ad.unpack_dual(out).tangent, jv, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.func.jacfwd(f)(z), torch.func.jacrev(f)(z), atol=1e-12, rtol=0)
    w = _z(4, 8, seed=25)

    def loss(t):
        return (f(t) ** 2 * w).sum()

    h = torch.func.hessian(loss)(z)  # forward-over-reverse
    torch.testing.assert_close(h, torch.func.jacrev(torch.func.jacrev(loss))(z), atol=1e-10, rtol=0)
    hv = torch.einsum("ijkl,kl->ij", h, v)
    torch.testing.assert_close(hv, _central(torch.func.grad(loss), (z,), (v,)), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("a0", [1.05, 1.3, 1.7, 2.0, 2.5])
def test_jvp_in_alpha_and_hessian_against_finite_differences(a0):
    z, mask = _sparse_scores(seed=26)
    a = a0 + torch.tensor([[0.0], [0.02], [0.04], [0.06]], dtype=torch.float64)

    def f(t, b):
        return entmax(t.masked_fill(~mask, -math.inf), b)

    v, va = _z(4, 8, seed=27), _z(4, 1, seed=28)
    _, jv = torch.func.jvp(f, (z, a), (v, va))
    torch.testing.assert_close(jv, _central(f, (z, a), (v, va)), atol=1e-7, rtol=1e-6)
    _, ja = torch.func.jvp(lambda b: f(z, b), (a,), (va,))  # α alone: the guide's ∂p/∂α
    torch.testing.assert_close(ja, _central(lambda b: f(z, b), (a,), (va,)), atol=1e-7, rtol=1e-6)
    for argnums in (0, 1):
        torch.testing.assert_close(
            torch.func.jacfwd(f, argnums)(z, a), torch.func.jacrev(f, argnums)(z, a), atol=1e-10, rtol=0
        )
    w = _z(4, 8, seed=29)

    def loss(t, b):
        return (f(t, b) ** 3 * w).sum()

    hs = torch.func.hessian(loss, argnums=(0, 1))(z, a)
    ref = torch.func.jacrev(torch.func.jacrev(loss, argnums=(0, 1)), argnums=(0, 1))(z, a)
    for hr, rr in zip(hs, ref):
        for h, r in zip(hr, rr):
            torch.testing.assert_close(h, r, atol=1e-9, rtol=1e-9)
    # ∂²ℓ/∂α² against central differences of the α-gradient
    haa = torch.einsum("ijkl,kl->ij", hs[1][1], va)
    g = torch.func.grad(loss, argnums=1)
    torch.testing.assert_close(haa, _central(lambda b: g(z, b), (a,), (va,)), atol=1e-5, rtol=1e-5)


def test_jvp_in_alpha_at_one_is_the_limit():
    """At α = 1 exactly ∂p/∂α is (−p log² p + p Σ p log² p)/2: one-sided differences (α < 1 is not allowed)."""
    z = _z(3, 7, seed=30)
    one = torch.ones(3, 1, dtype=torch.float64)
    _, ja = torch.func.jvp(lambda b: entmax(z, b), (one,), (torch.ones_like(one),))
    h = 1e-4
    fd = (-3 * entmax(z, one) + 4 * entmax(z, one + h) - entmax(z, one + 2 * h)) / (2 * h)  # O(h²)
    torch.testing.assert_close(ja, fd, atol=1e-6, rtol=1e-5)
    p = torch.softmax(z, -1)
    lp2 = p * p.log() ** 2
    torch.testing.assert_close(ja, 0.5 * (p * lp2.sum(-1, keepdim=True) - lp2), atol=1e-12, rtol=0)
