"""Length scaling: the key counts n against brute force, identity at δ = 1, β = 0, and exact gradients for δ, β
and α (gradcheck in float64, reference path and CPU kernel path) against a plain reference that scales the
scores themselves and normalizes them with the ``entmax`` package."""

import contextlib
import math

import entmax as entmax_pkg
import pytest
import torch

from adasparse.nn.attention import entmax_attention
from adasparse.nn.length_scaling import LengthScaling, attendable_keys
from adasparse.nn.multihead import Attention
from adasparse.nn.positions import RotaryEmbedding
from adasparse.nn.qk_transform import QKTransform
from adasparse.ops import _cpu

B, H, Q, K, D = 2, 3, 5, 5, 4


def _brute_counts(mask, is_causal, q_len, k_len):
    full = torch.ones(B, H, q_len, k_len, dtype=torch.bool)
    if mask is not None:
        full = full & mask
    if is_causal:
        full = full & torch.ones(q_len, k_len, dtype=torch.bool).tril()
    return full.sum(-1, keepdim=True)  # (B, H, Q, 1)


def _masks():
    g = torch.Generator().manual_seed(0)
    yield None
    yield torch.rand(B, 1, 1, K, generator=g) > 0.3  # key padding
    yield torch.rand(B, H, Q, K, generator=g) > 0.4  # anything
    yield torch.rand(Q, K, generator=g) > 0.5  # (Q, K)
    yield torch.rand(K, generator=g) > 0.5  # (K,)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("which", range(5))
def test_attendable_keys_match_brute_force(is_causal, which):
    mask = list(_masks())[which]
    n = attendable_keys(mask, is_causal, Q, K)
    expected = _brute_counts(mask, is_causal, Q, K)
    assert n.dtype == torch.long
    assert torch.equal(n.expand_as(expected), expected)


def test_attendable_keys_more_keys_than_queries_and_the_reverse():
    # top-left causal as in SDPA: query i sees keys 0..i, capped by K
    assert attendable_keys(None, True, 3, 6).flatten().tolist() == [1, 2, 3]
    assert attendable_keys(None, True, 5, 3).flatten().tolist() == [1, 2, 3, 3, 3]
    kpm = torch.tensor([[True, False, True]])[:, None, None, :]  # (1, 1, 1, 3)
    assert attendable_keys(kpm, True, 5, 3).flatten().tolist() == [1, 1, 2, 2, 2]


def test_factor_is_delta_plus_beta_log_n_per_head():
    ls = LengthScaling(H, "learned")
    with torch.no_grad():
        ls.delta.copy_(torch.tensor([1.0, 0.5, 2.0]))
        ls.beta.copy_(torch.tensor([0.0, 0.3, -0.1]))
    q = torch.randn(B, H, Q, D)
    mask = torch.rand(B, 1, 1, K) > 0.3
    n = _brute_counts(mask, True, Q, K).clamp_min(1).float()  # (B, H, Q, 1)
    s = ls.delta.view(H, 1, 1) + ls.beta.view(H, 1, 1) * n.log()
    torch.testing.assert_close(ls(q, mask, True), q * s)
    ss = LengthScaling(H, "ssmax")
    torch.testing.assert_close(ss(q, mask, True), q * n.log())  # σ = 1 at initialisation


def test_identity_at_initialisation_exactly():
    """δ = 1, β = 0: the scaled queries are the queries, bit for bit, so the attention is plain attention."""
    torch.manual_seed(0)
    x = torch.randn(2, 7, 16)
    kpm = torch.ones(2, 7, dtype=torch.bool)
    kpm[0, 5:] = False
    for norm in ("softmax", "entmax15", "learned"):
        torch.manual_seed(1)
        plain = Attention(16, 2, normalizer=norm)
        torch.manual_seed(1)
        scaled = Attention(16, 2, normalizer=norm, qk_transform=QKTransform(None, LengthScaling(2)))
        a, _ = plain(x, key_padding_mask=kpm, is_causal=True)
        b, _ = scaled(x, key_padding_mask=kpm, is_causal=True)
        assert torch.equal(a, b), norm


def _reference(q, k, v, s, alpha, mask):
    """out = entmax_α((s ⊙ q kᵀ)/√D) v, masked keys at a large negative score; the entmax package's
    bisection (its gradient with respect to α is its own) and torch.softmax at α = 1."""
    scores = s * (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, Q, K): the scores themselves scaled
    scores = scores.masked_fill(~mask, -1e6)
    if isinstance(alpha, float) and alpha == 1.0:
        p = torch.softmax(scores, -1)
    else:
        a = alpha if isinstance(alpha, torch.Tensor) else torch.tensor(alpha, dtype=scores.dtype)
        p = entmax_pkg.entmax_bisect(scores, a.view(1, -1, 1, 1).expand(*scores.shape[:-1], 1), n_iter=200)
    return p @ v


def _ours(q, k, v, delta, beta, alpha, mask):
    ls = LengthScaling(H, "learned").double()
    # the module's parameters replaced by the gradcheck inputs (autograd flows through them)
    q_scaled = torch.func.functional_call(ls, {"delta": delta, "beta": beta}, (q, mask, True))
    return entmax_attention(q_scaled, k, v, alpha=alpha, attn_mask=mask, is_causal=True)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, Q, D, generator=g, dtype=torch.float64) for _ in range(3))
    delta = (1 + 0.3 * torch.randn(H, generator=g, dtype=torch.float64)).requires_grad_()
    beta = (0.4 * torch.randn(H, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.ones(B, 1, 1, K, dtype=torch.bool)
    mask[1, ..., 3:] = False  # padding in the second sequence
    return q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), delta, beta, mask


@pytest.mark.parametrize("path", ["reference", "cpu_kernel"])
@pytest.mark.parametrize("alpha", ["learned", 1.5, 1.0])
def test_gradients_of_delta_beta_alpha_are_exact(path, alpha):
    if path == "cpu_kernel" and not _cpu.available():
        pytest.skip("the CPU kernel could not be built here")
    q, k, v, delta, beta, mask = _inputs()
    a = torch.tensor([1.2, 1.5, 1.8], dtype=torch.float64, requires_grad=True) if alpha == "learned" else alpha
    n = _brute_counts(mask, True, Q, K).clamp_min(1).double()  # (B, H, Q, 1)

    def ours(q, k, v, delta, beta, *maybe_alpha):
        return _ours(q, k, v, delta, beta, maybe_alpha[0] if maybe_alpha else a, mask)

    def reference(q, k, v, delta, beta, *maybe_alpha):
        s = delta.view(H, 1, 1) + beta.view(H, 1, 1) * n.log()
        return _reference(q, k, v, s, maybe_alpha[0] if maybe_alpha else a, mask.expand(B, H, Q, K) & _causal())

    inputs = (q, k, v, delta, beta) + ((a,) if isinstance(a, torch.Tensor) else ())
    ctx = _cpu.disabled() if path == "reference" else contextlib.nullcontext()
    with ctx:
        # finite differences in q, δ, β, α (k and v are checked against the reference below)
        assert torch.autograd.gradcheck(lambda q, *rest: ours(q, k, v, *rest), (q, *inputs[3:]), eps=1e-6, atol=1e-6)
        out = ours(*inputs)
        g = torch.randn_like(out)
        grads = torch.autograd.grad(out, inputs, g)
    ref = reference(*inputs)
    ref_grads = torch.autograd.grad(ref, inputs, g)
    torch.testing.assert_close(out, ref, atol=1e-8, rtol=1e-7)
    names = ["q", "k", "v", "delta", "beta", "alpha"]
    for name, x, y in zip(names, grads, ref_grads):
        torch.testing.assert_close(x, y, atol=1e-7, rtol=1e-6, msg=lambda m, name=name: f"d/d{name}: {m}")


def _causal():
    return torch.ones(Q, K, dtype=torch.bool).tril()


def test_rope_and_scaling_in_one_transform_through_the_module():
    """QKTransform: positions at the cache offset, then the scaling with the kernel's final mask."""
    torch.manual_seed(0)
    t = QKTransform(RotaryEmbedding(8), LengthScaling(2))
    with torch.no_grad():
        t.scaling.beta.fill_(0.5)
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    q2, k2 = t.positions(q, k, 4)
    torch.testing.assert_close(q2, RotaryEmbedding(8).rotate(q, 4))
    mask = torch.ones(1, 1, 3, 7, dtype=torch.bool).tril(diagonal=4)  # 3 new queries after 4 cached keys
    n = torch.tensor([5.0, 6.0, 7.0]).view(1, 1, 3, 1)
    torch.testing.assert_close(t.scale(q2, mask, False, 7), q2 * (1 + 0.5 * n.log()))
    assert QKTransform().positions(q, k, 3) == (q, k) and QKTransform().scale(q, None, True, 3) is q


def test_argument_errors():
    with pytest.raises(ValueError, match="length scaling mode"):
        LengthScaling(2, "fixed")
    with pytest.raises(ValueError, match="num_heads"):
        LengthScaling(0)
    with pytest.raises(ValueError, match=r"H=2"):
        LengthScaling(2)(torch.randn(1, 3, 4, 8), None, True, 4)
    with pytest.raises(TypeError, match="boolean"):
        attendable_keys(torch.zeros(2, 2), False, 2, 2)
    with pytest.raises(TypeError, match="RotaryEmbedding"):
        QKTransform(rotary=LengthScaling(2))
