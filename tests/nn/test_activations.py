"""nn.Module wrappers and LearnableAlpha."""

import pytest
import torch

from adasparse import Entmax, Entmax15, LearnableAlpha, Sparsemax, entmax, entmax15, sparsemax


def test_wrappers_equal_functions():
    z = torch.randn(3, 4, 5)
    torch.testing.assert_close(Entmax(1.3, dim=1)(z), entmax(z, 1.3, dim=1))
    torch.testing.assert_close(Sparsemax(dim=0)(z), sparsemax(z, dim=0))
    torch.testing.assert_close(Entmax15()(z), entmax15(z))
    with pytest.raises(ValueError, match="alpha"):
        Entmax(0.9)


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
