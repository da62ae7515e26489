"""Fenchel–Young losses."""

import pytest
import torch
from torch.autograd import gradcheck

from adasparse import entmax, entmax15_loss, entmax_loss, sparsemax, sparsemax_loss


def _data(n=6, c=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64)
    t = torch.randint(0, c, (n,), generator=g)
    return z, t


@pytest.mark.parametrize("alpha", [1.0, 1.2, 1.5, 2.0])
def test_nonnegative_and_zero_at_margin(alpha):
    z, t = _data()
    loss = entmax_loss(z, t, alpha=alpha, reduction="none")
    assert (loss >= -1e-12).all()
    if alpha > 1:  # a one-hot target with a large enough margin costs nothing
        big = torch.full_like(z, -5.0).scatter(1, t.unsqueeze(1), 5.0)
        assert entmax_loss(big, t, alpha=alpha).abs().max() < 1e-12


def test_alpha_one_is_cross_entropy():
    z, t = _data()
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(entmax_loss(z, t, alpha=1.0), ce(z, t, reduction="none"))
    torch.testing.assert_close(entmax_loss(z, t, alpha=1.0, reduction="mean"), ce(z, t))
    torch.testing.assert_close(
        entmax_loss(z, t, alpha=1.0, label_smoothing=0.1, reduction="mean"),
        ce(z, t, label_smoothing=0.1)
        - _shannon_of_smoothed(z.shape[1], 0.1),  # FY subtracts H(y): the constant CE keeps
    )


def _shannon_of_smoothed(c, eps):
    y = torch.full((c,), eps / c, dtype=torch.float64)
    y[0] += 1 - eps
    return -(y * y.log()).sum()


@pytest.mark.parametrize("alpha", [1.3, 1.5, 2.0])
def test_gradient_is_p_minus_y(alpha):
    z, t = _data()
    z.requires_grad_()
    entmax_loss(z, t, alpha=alpha, reduction="sum").backward()
    y = torch.nn.functional.one_hot(t, z.shape[1]).double()
    torch.testing.assert_close(z.grad, entmax(z.detach(), alpha) - y)


def test_named_losses():
    z, t = _data()
    torch.testing.assert_close(sparsemax_loss(z, t), entmax_loss(z, t, alpha=2.0))
    torch.testing.assert_close(entmax15_loss(z, t), entmax_loss(z, t, alpha=1.5))
    # sparsemax loss closed form: ½‖y‖² − ½‖p‖² + (p − y)ᵀz... with H_2(p) = ½(1 − ‖p‖²)
    p = sparsemax(z)
    y = torch.nn.functional.one_hot(t, z.shape[1]).double()
    ref = 0.5 * (1 - (p * p).sum(-1)) + ((p - y) * z).sum(-1)
    torch.testing.assert_close(sparsemax_loss(z, t, reduction="none"), ref)


def test_ignore_index_and_reductions():
    z, t = _data(n=8)
    t[[1, 4]] = -100
    none = entmax_loss(z, t, reduction="none")
    assert none[1] == 0 and none[4] == 0
    keep = t != -100
    torch.testing.assert_close(entmax_loss(z, t, reduction="sum"), none.sum())
    torch.testing.assert_close(entmax_loss(z, t, reduction="mean"), none.sum() / keep.sum())
    torch.testing.assert_close(entmax_loss(z[keep], t[keep], reduction="mean"), entmax_loss(z, t, reduction="mean"))
    # leading dims: (B, T, C)
    z3, t3 = z.view(2, 4, -1), t.view(2, 4)
    torch.testing.assert_close(entmax_loss(z3, t3, reduction="none"), none.view(2, 4))


def test_label_smoothing_gradient():
    z, t = _data()
    z.requires_grad_()
    eps = 0.2
    entmax_loss(z, t, alpha=1.5, label_smoothing=eps, reduction="sum").backward()
    y = torch.nn.functional.one_hot(t, z.shape[1]).double() * (1 - eps) + eps / z.shape[1]
    torch.testing.assert_close(z.grad, entmax(z.detach(), 1.5) - y)


@pytest.mark.parametrize("a0", [1.05, 1.3, 1.7, 1.95])
def test_gradcheck_in_logits_and_alpha(a0):
    z, t = _data(n=4, c=6, seed=3)
    z.requires_grad_()
    a = torch.tensor(a0, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda zz, aa: entmax_loss(zz, t, alpha=aa, label_smoothing=0.1, reduction="mean"), (z, a))


def test_per_row_alpha_gradient():
    z, t = _data(n=5, c=7, seed=4)
    a = torch.tensor([1.1, 1.3, 1.5, 1.7, 1.9], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda aa: entmax_loss(z, t, alpha=aa.view(5, 1)), (a,))


def test_bad_arguments():
    z, t = _data()
    with pytest.raises(TypeError, match="class indices"):
        entmax_loss(z, t.double())
    with pytest.raises(ValueError, match="target shape"):
        entmax_loss(z, t[:3])
    with pytest.raises(ValueError, match="reduction"):
        entmax_loss(z, t, reduction="avg")
    with pytest.raises(ValueError, match="outside"):
        entmax_loss(z, torch.full_like(t, 99))
    with pytest.raises(ValueError, match="alpha"):
        entmax_loss(z, t, alpha=0.5)
    with pytest.raises(ValueError, match="label_smoothing"):
        entmax_loss(z, t, label_smoothing=1.0)
    with pytest.raises(ValueError, match=r"alpha of shape \(2, 1\) does not broadcast"):
        entmax_loss(z, t, alpha=torch.full((2, 1), 1.5))


def test_alpha_one_is_torchs_cross_entropy_less_the_targets_entropy_with_label_smoothing():
    """As documented: the Fenchel–Young loss against the smoothed target y is 0 at p = y, so at α = 1 it is
    ``F.cross_entropy(..., label_smoothing=ε)`` minus the constant H(y); without smoothing exactly it; the
    gradients are the same (p − y) either way."""
    z, t = _data(n=6, c=9, seed=2)
    z = z.double()
    for eps in (0.0, 0.1, 0.3):
        zz = z.clone().requires_grad_()
        ours = entmax_loss(zz, t, 1.0, label_smoothing=eps)
        zt = z.clone().requires_grad_()
        ref = torch.nn.functional.cross_entropy(zt, t, reduction="none", label_smoothing=eps)
        y = torch.nn.functional.one_hot(t, 9).double() * (1 - eps) + eps / 9
        h_y = -torch.special.xlogy(y, y).sum(-1)
        torch.testing.assert_close(ours, ref - h_y)
        ours.sum().backward()
        ref.sum().backward()
        torch.testing.assert_close(zz.grad, zt.grad)


def test_default_is_one_loss_per_sample_as_in_the_entmax_package():
    """sparsemax_loss / entmax15_loss are the entmax package's names: same per-row return, same positional k."""
    z, t = _data(n=7, c=11, seed=5)
    for fn in (entmax_loss, sparsemax_loss, entmax15_loss):
        out = fn(z, t)
        assert out.shape == (7,)
        torch.testing.assert_close(out, fn(z, t, reduction="none"))
        torch.testing.assert_close(fn(z, t, reduction="sum"), out.sum())
        torch.testing.assert_close(fn(z, t, reduction="mean"), out.mean())
    package = pytest.importorskip("entmax", reason="the entmax package (dev extra) is the independent reference")
    torch.testing.assert_close(sparsemax_loss(z, t, 3), package.sparsemax_loss(z, t, 3))
    torch.testing.assert_close(entmax15_loss(z, t, 3), package.entmax15_loss(z, t, 3))
    torch.testing.assert_close(entmax_loss(z, t, 1.3), package.entmax_bisect_loss(z, t, 1.3))


def test_k_is_checked():
    z, t = _data()
    torch.testing.assert_close(sparsemax_loss(z, t, k=2), sparsemax_loss(z, t))
    for fn in (sparsemax_loss, entmax15_loss):
        with pytest.raises(ValueError, match="k must be"):
            fn(z, t, 0)
        with pytest.raises(TypeError, match="k must be"):
            fn(z, t, 2.5)


def test_masked_classes():
    """Masked non-target classes add nothing (no NaN); a target on a masked class costs +inf, not a finite value."""
    z, t = _data(n=4, c=6, seed=6)
    zm = z.clone()
    zm[:, 5] = -float("inf")
    t = torch.tensor([0, 1, 2, 5])
    for alpha in (1.0, 1.5, 2.0):
        loss = entmax_loss(zm, t, alpha=alpha)
        torch.testing.assert_close(loss[:3], entmax_loss(z[:3, :5], t[:3], alpha=alpha))
        assert loss[3] == float("inf")


@pytest.mark.parametrize("a0", [1.0002, 1.001, 1.01])
def test_alpha_gradient_next_to_one_in_float32(a0):
    """∂L/∂α near α = 1: float32 agrees with float64 (the textbook form of ∂H_α/∂α cancels: 0.8 off at 1.0002)."""
    z, t = _data(n=8, c=50, seed=7)
    z = 2 * z
    grads = []
    for dtype in (torch.float32, torch.float64):
        a = torch.tensor(a0, dtype=dtype, requires_grad=True)
        entmax_loss(z.to(dtype), t, alpha=a, reduction="sum").backward()
        grads.append(a.grad.double())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)
