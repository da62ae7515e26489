"""Learned α: the paper's clamped map, the sigmoid map without a dead zone, and their initialisation."""

import math

import pytest
import torch

from adasparse import entmax
from adasparse.nn import LearnableAlpha


@pytest.mark.parametrize("parametrization", ["clamp", "sigmoid"])
@pytest.mark.parametrize("init", [1.05, 1.3, 1.5, 1.9])
def test_a_number_init_starts_every_head_at_that_alpha(parametrization, init):
    a = LearnableAlpha(5, init=init, parametrization=parametrization)
    torch.testing.assert_close(a(), torch.full((5,), init), rtol=0, atol=1e-6)


def test_sigmoid_map_is_the_paper_map_without_the_clamp():
    theta = torch.linspace(-8, 8, 33)
    a = LearnableAlpha(33, parametrization="sigmoid", alpha_min=1.01, alpha_max=2.0)
    with torch.no_grad():
        a.theta.copy_(theta)
    expected = 1.01 + 0.99 * torch.sigmoid(theta)
    torch.testing.assert_close(a(), expected)
    assert bool(((a() > 1.01) & (a() < 2.0)).all())


def test_a_head_at_the_floor_gets_a_gradient_only_without_the_clamp():
    """θ far below the floor: the paper's clamp gives θ no gradient (the dead zone), the sigmoid map does."""
    grads = {}
    for kind in ("clamp", "sigmoid"):
        a = LearnableAlpha(1, parametrization=kind)
        with torch.no_grad():
            a.theta.fill_(-5.0)  # 1 + sigmoid(−5) = 1.0067 < 1.01
        scores = torch.tensor([[3.0, 1.0, 0.5, -1.0]])
        p = entmax(scores, a().view(1, 1))
        (p[0, 0] - p[0, 1:].sum()).backward()  # a loss that depends on α
        grads[kind] = a.theta.grad.item()
    assert grads["clamp"] == 0.0
    assert grads["sigmoid"] != 0.0 and math.isfinite(grads["sigmoid"])


def test_adam_brings_a_sigmoid_head_back_from_the_floor():
    """A loss that wants α = 1.5 pulls a head from θ = −6 (α ≈ 1.012) up; with the clamp it stays stuck."""
    end = {}
    for kind in ("clamp", "sigmoid"):
        a = LearnableAlpha(1, parametrization=kind)
        with torch.no_grad():
            a.theta.fill_(-6.0)
        opt = torch.optim.Adam(a.parameters(), lr=0.1)
        for _ in range(100):
            opt.zero_grad()
            ((a() - 1.5) ** 2).sum().backward()
            opt.step()
        end[kind] = a().item()
    assert end["clamp"] == pytest.approx(1.01)
    assert end["sigmoid"] == pytest.approx(1.5, abs=0.02)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"parametrization": "tanh"}, "parametrization"),
        ({"parametrization": "sigmoid", "init": 1.01}, "init"),  # the sigmoid map reaches 1.01 only at θ = −inf
        ({"init": 2.0}, "init"),
        ({"init": "uniform"}, "init"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LearnableAlpha(3, **kwargs)


def test_models_pass_the_parametrization_to_every_learned_head():
    from adasparse.models import build_model, tiny

    model = build_model(tiny("learned", vocab_size=20, alpha_parametrization="sigmoid"))
    heads = [m for m in model.modules() if isinstance(m, LearnableAlpha)]
    assert heads and all(m.parametrization == "sigmoid" for m in heads)
    with pytest.raises(ValueError, match="alpha_parametrization"):
        tiny("learned", vocab_size=20, alpha_parametrization="tanh")


def test_every_learned_alpha_defaults_to_the_map_without_a_dead_zone():
    """The default follows the G2P runs to convergence (benchmarks/convergence.md): the sigmoid map, everywhere."""
    from adasparse.models import DecoderOnlyConfig, Seq2SeqConfig, build_model
    from adasparse.nn import MultiheadAttention
    from adasparse.nn.multihead import Attention

    modules = {
        "LearnableAlpha": LearnableAlpha(4),
        "MultiheadAttention": MultiheadAttention(16, 4).alpha_module,
        "Attention": Attention(16, 4, normalizer="learned").alpha_module,
    }
    for name, cfg in {
        "Seq2SeqConfig": Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=11, d_model=16, n_heads=4, d_ff=32,
                                       enc_layers=1, dec_layers=1),
        "DecoderOnlyConfig": DecoderOnlyConfig(vocab_size=11, d_model=16, n_heads=4, d_ff=32, n_layers=1),
    }.items():  # fmt: skip
        found = [m for m in build_model(cfg).modules() if isinstance(m, LearnableAlpha)]
        assert found, name
        modules.update({f"{name}[{i}]": m for i, m in enumerate(found)})
    for name, m in modules.items():
        assert m.parametrization == "sigmoid", name
        with torch.no_grad():
            m.theta.fill_(-6.0)  # α ≈ 1.012, where the clamp would have stopped the gradient
        m().sum().backward()
        assert bool((m.theta.grad != 0).all()), name
