"""nn.Module wrappers and LearnableAlpha."""

import math

import pytest
import torch
from torch import nn

from adasparse import Entmax, Entmax15, LearnableAlpha, Sparsemax, entmax, entmax15, sparsemax


def test_wrappers_equal_functions():
    z = torch.randn(3, 4, 5)
    torch.testing.assert_close(Entmax(1.3, dim=1)(z), entmax(z, 1.3, dim=1))
    torch.testing.assert_close(Sparsemax(dim=0)(z), sparsemax(z, dim=0))
    torch.testing.assert_close(Entmax15()(z), entmax15(z))
    with pytest.raises(ValueError, match="alpha"):
        Entmax(0.9)


def test_entmax_module_keeps_a_parameter_alpha_and_its_gradient():
    """Entmax(alpha=nn.Parameter(...)) used to turn α into a float (gradient dropped, a warning only)."""
    z = torch.randn(4, 9, dtype=torch.float64)
    g = torch.randn(4, 9, dtype=torch.float64)
    m = Entmax(nn.Parameter(torch.tensor(1.3, dtype=torch.float64)))
    assert isinstance(m.alpha, nn.Parameter) and [n for n, _ in m.named_parameters()] == ["alpha"]
    (m(z) * g).sum().backward()
    a = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    (entmax(z, a) * g).sum().backward()
    torch.testing.assert_close(m.alpha.grad, a.grad, atol=0, rtol=0)  # the function's gradient
    h = 1e-6  # and the true one (central differences)
    fd = ((entmax(z, 1.3 + h) - entmax(z, 1.3 - h)) * g).sum() / (2 * h)
    torch.testing.assert_close(m.alpha.grad, fd, atol=1e-7, rtol=1e-6)
    pkg = pytest.importorskip("entmax", reason="the `entmax` package (dev extra) is the oracle")
    b = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    (pkg.entmax_bisect(z, b, dim=-1, n_iter=100) * g).sum().backward()
    torch.testing.assert_close(m.alpha.grad, b.grad, atol=1e-6, rtol=1e-5)
    # a learned α moves under an optimizer, and follows the module's dtype
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    before = m.alpha.item()
    opt.step()
    assert m.alpha.item() != before
    assert m.float().alpha.dtype == torch.float32


def test_entmax_module_per_head_and_per_row_alpha_tensors():
    torch.manual_seed(0)
    z = torch.randn(2, 3, 4, 6)  # (B, H, Q, K)
    heads = torch.tensor([1.1, 1.5, 2.0])
    m = Entmax(heads.view(3, 1, 1))  # a plain tensor: used as given, not a parameter
    assert list(m.parameters()) == [] and m.alpha is not None
    p = m(z)
    torch.testing.assert_close(p, entmax(z, heads.view(3, 1, 1)), atol=0, rtol=0)
    for h in range(3):
        torch.testing.assert_close(p[:, h], entmax(z[:, h], heads[h].item()), atol=1e-6, rtol=0)
    rows = 1 + torch.rand(2, 3, 4, 1)  # one α per query row
    torch.testing.assert_close(Entmax(rows)(z), entmax(z, rows), atol=0, rtol=0)
    cols = 1 + torch.rand(1, 5)  # one α per column of (6, 5) scores normalised along dim=0
    x = torch.randn(5, 6).T
    p0 = Entmax(cols, dim=0)(x)
    torch.testing.assert_close(p0, entmax(x.T, cols.T).T, atol=0, rtol=0)
    with pytest.raises(ValueError, match="size 1 along dim"):
        Entmax(heads)(z)  # (H,) lines up with K, not H: the function's rule
    theta = LearnableAlpha(3, init=1.4)  # a computed α keeps its graph to θ
    Entmax(theta().view(3, 1, 1))(z).pow(2).sum().backward()
    assert theta.theta.grad is not None and theta.theta.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", ["1.5", True, None, 1 + 2j, torch.tensor(2), torch.tensor([1.5j])])
def test_entmax_module_rejects_alpha_of_another_type(bad):
    with pytest.raises(TypeError, match="alpha"):
        Entmax(bad)


@pytest.mark.parametrize("bad", [0.9, -1, math.nan, math.inf, torch.tensor([1.5, 0.9]), torch.tensor(math.nan)])
def test_entmax_module_rejects_bad_alpha_values(bad):
    with pytest.raises(ValueError, match="alpha"):
        Entmax(bad)


def test_learnable_alpha_init_and_range():
    torch.manual_seed(0)
    a = LearnableAlpha((4, 8))
    assert a().shape == (4, 8)
    assert ((a() >= 1.01) & (a() <= 2.0)).all()
    assert a.theta.std() > 0.5  # N(0, 1) as in the paper
    b = LearnableAlpha(6, init=1.3)
    torch.testing.assert_close(b(), torch.full((6,), 1.3))
    c = LearnableAlpha(3, init=1.5, alpha_min=1.2, alpha_max=1.8)
    with torch.no_grad():
        c.theta.copy_(torch.tensor([-20.0, 0.0, 20.0]))
    torch.testing.assert_close(c(), torch.tensor([1.2, 1.5, 1.8]))
    for bad in ({"init": 2.5}, {"init": "uniform"}, {"alpha_min": 2.0, "alpha_max": 1.5}, {"shape": (0,)}):
        with pytest.raises(ValueError):
            LearnableAlpha(**({"shape": 3} | bad))


def test_learnable_alpha_trains_apart_per_head():
    # head 0 sees targets that need a dense distribution, head 1 one-hot targets: α must move apart
    torch.manual_seed(0)
    alpha = LearnableAlpha(2, init=1.5)
    z = torch.randn(2, 256, 6)
    dense = torch.softmax(z[0], -1)
    onehot = torch.nn.functional.one_hot(z[1].argmax(-1), 6).float()
    opt = torch.optim.Adam(alpha.parameters(), lr=0.05)
    for _ in range(60):
        p = entmax(z, alpha().view(2, 1, 1))
        loss = ((p[0] - dense) ** 2).sum() + ((p[1] - onehot) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    a = alpha().detach()
    assert a[0] < 1.3 < 1.7 < a[1]


def test_alpha_parameters_finds_every_theta_once():
    from adasparse.models import build_model, tiny
    from adasparse.nn import alpha_parameters

    model = build_model(tiny("learned", vocab_size=20))
    theta = alpha_parameters(model)
    expected = [m.theta for m in model.modules() if isinstance(m, LearnableAlpha)]
    assert len(theta) == len(expected) > 0 and {id(p) for p in theta} == {id(p) for p in expected}
    assert [tuple(p.shape) for p in theta] == [(model.config.n_heads,)] * len(theta)
    shared = LearnableAlpha(4)
    assert alpha_parameters(torch.nn.ModuleList([shared, shared])) == [shared.theta]  # shared: listed once
    assert alpha_parameters(build_model(tiny("entmax15", vocab_size=20))) == []  # fixed α: nothing to learn
