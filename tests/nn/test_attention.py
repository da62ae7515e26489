"""The functional kernel: SDPA agreement for softmax, α-entmax reference values, masks, α tensors, backends."""

import math

import pytest
import torch
import torch.nn.functional as F

from adasparse.nn import attention as attn_mod
from adasparse.nn.attention import (
    AttentionStats,
    available_attention_backends,
    entmax_attention,
    register_attention_backend,
)
from adasparse.ops.entmax import entmax_bisect_reference

B, H, Q, K, D = 2, 3, 5, 7, 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny shapes: one intra-op thread is faster and immune to a busy shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _qkv(dtype=torch.float32, q_len=Q, k_len=K, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, q_len, D, generator=g, dtype=dtype)
    k = torch.randn(B, H, k_len, D, generator=g, dtype=dtype)
    v = torch.randn(B, H, k_len, D, generator=g, dtype=dtype)
    if grad:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v


def _random_mask(seed=1, q_len=Q, k_len=K):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(B, 1, q_len, k_len, generator=g) > 0.3
    m[..., 0] = True  # every query keeps at least one key here
    return m


def _reference(q, k, v, alpha, mask=None, scale=None):
    """float64 bisection reference: scores → α-entmax → weighted values."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.double() @ k.double().transpose(-2, -1)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    a = alpha.double().view(1, -1, 1, 1) if isinstance(alpha, torch.Tensor) else alpha
    p = entmax_bisect_reference(s, a, dim=-1)
    return p @ v.double(), p


@pytest.mark.parametrize("alpha", ["softmax", 1.0, 1])
@pytest.mark.parametrize("stats", [False, True])
def test_softmax_matches_sdpa(alpha, stats):
    q, k, v = _qkv()
    mask = _random_mask()
    for kw in [{}, {"attn_mask": mask}, {"is_causal": True}, {"attn_mask": mask, "scale": 0.3}]:
        ref = F.scaled_dot_product_attention(q, k, v, **kw)
        res = entmax_attention(q, k, v, alpha=alpha, return_stats=stats, **kw)
        out = res[0] if stats else res
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("alpha", [1.5, "entmax15", 2.0, "sparsemax", 1.3, 1.7])
def test_entmax_matches_bisection_reference(alpha):
    q, k, v = _qkv()
    mask = _random_mask()
    out, stats = entmax_attention(q, k, v, alpha=alpha, attn_mask=mask, return_stats=True)
    a = {"entmax15": 1.5, "sparsemax": 2.0}.get(alpha, alpha)
    ref_out, ref_p = _reference(q, k, v, a, mask)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(stats.probs.double(), ref_p, atol=1e-5, rtol=1e-4)


def test_per_head_alpha_equals_per_head_calls():
    q, k, v = _qkv()
    alphas = torch.tensor([1.2, 1.5, 2.0])
    out = entmax_attention(q, k, v, alpha=alphas, is_causal=True)
    for h in range(H):
        one = entmax_attention(
            q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], alpha=float(alphas[h]), is_causal=True
        )
        torch.testing.assert_close(out[:, h : h + 1], one, atol=1e-6, rtol=1e-5)
    # broadcastable shapes (H, 1, 1) and (1, H, 1, 1) are the same thing
    torch.testing.assert_close(entmax_attention(q, k, v, alpha=alphas.view(H, 1, 1), is_causal=True), out)
    # a (B, H, Q, 1) α (per query) is accepted too
    per_q = alphas.view(1, H, 1, 1).expand(B, H, Q, 1)
    torch.testing.assert_close(entmax_attention(q, k, v, alpha=per_q, is_causal=True), out)


def test_gradcheck_qkv_and_per_head_alpha():
    q, k, v = _qkv(torch.float64, q_len=3, k_len=4, grad=True)
    alpha = torch.tensor([1.3, 1.6, 1.9], dtype=torch.float64, requires_grad=True)
    mask = _random_mask(q_len=3, k_len=4)

    def f(q, k, v, alpha):
        return entmax_attention(q, k, v, alpha=alpha, attn_mask=mask)

    assert torch.autograd.gradcheck(f, (q, k, v, alpha), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("alpha", ["softmax", "sparsemax", "entmax15", 1.3, "per_head"])
@pytest.mark.parametrize("stats", [False, True])
def test_fully_masked_query_zero_row_zero_grad(alpha, stats):
    q, k, v = _qkv(grad=True)
    a = torch.tensor([1.2, 1.5, 2.0], requires_grad=True) if alpha == "per_head" else alpha
    mask = _random_mask()
    mask[0, 0, 2] = False  # query 2 of batch 0: nothing attendable
    res = entmax_attention(q, k, v, alpha=a, attn_mask=mask, return_stats=stats)
    out = res[0] if stats else res
    assert torch.isfinite(out).all()
    assert (out[0, :, 2] == 0).all()
    # gradient of a loss on that row only is exactly zero for q, k, v (and α)
    out[0, :, 2].sum().backward(retain_graph=True)
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all() and (t.grad == 0).all()
    if alpha == "per_head":
        assert (a.grad == 0).all()
    # and a loss on everything has finite gradients
    for t in (q, k, v):
        t.grad = None
    out.square().sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
        assert (q.grad[0, :, 2] == 0).all()
    if stats:
        assert (res[1].probs[0, :, 2] == 0).all() and (res[1].support[0, :, 2] == 0).all()


@pytest.mark.parametrize("alpha", ["softmax", "sparsemax", 1.5, 1.2])
def test_causal_equals_tril_mask_and_combines_with_mask(alpha):
    q, k, v = _qkv(k_len=Q)
    tril = torch.ones(Q, Q, dtype=torch.bool).tril()
    mask = _random_mask(k_len=Q)
    torch.testing.assert_close(
        entmax_attention(q, k, v, alpha=alpha, is_causal=True),
        entmax_attention(q, k, v, alpha=alpha, attn_mask=tril),
    )
    torch.testing.assert_close(
        entmax_attention(q, k, v, alpha=alpha, is_causal=True, attn_mask=mask),
        entmax_attention(q, k, v, alpha=alpha, attn_mask=tril & mask),
    )


@pytest.mark.parametrize("alpha", ["softmax", "sparsemax", "entmax15", 1.3])
def test_padded_keys_zero_weight_and_invariance(alpha):
    """Appending masked (padding) keys with arbitrary values changes nothing; they get exactly zero weight."""
    q, k, v = _qkv()
    g = torch.Generator().manual_seed(5)
    k_pad = torch.cat([k, 100 * torch.randn(B, H, 3, D, generator=g)], dim=2)
    v_pad = torch.cat([v, 100 * torch.randn(B, H, 3, D, generator=g)], dim=2)
    mask = torch.ones(B, 1, 1, K + 3, dtype=torch.bool)
    mask[..., K:] = False
    out, st = entmax_attention(q, k_pad, v_pad, alpha=alpha, attn_mask=mask, return_stats=True)
    torch.testing.assert_close(out, entmax_attention(q, k, v, alpha=alpha), atol=1e-6, rtol=1e-5)
    assert (st.probs[..., K:] == 0).all()


def test_stats_content():
    q, k, v = _qkv()
    alphas = torch.tensor([1.1, 1.5, 2.0])
    out, st = entmax_attention(q, 3 * k, v, alpha=alphas, return_stats=True)
    assert isinstance(st, AttentionStats)
    assert st.probs.shape == (B, H, Q, K) and st.support.shape == (B, H, Q)
    torch.testing.assert_close(st.probs.sum(-1), torch.ones(B, H, Q))
    assert torch.equal(st.support, (st.probs > 0).sum(-1))
    assert st.probabilities is st.probs
    assert torch.equal(st.alpha.flatten(), alphas)
    # sparsemax head is sparser than the α = 1.1 head on the same scores scale
    assert st.support[:, 2].float().mean() < st.support[:, 0].float().mean()
    torch.testing.assert_close(out, st.probs @ v)
    _, st1 = entmax_attention(q, k, v, alpha=1.5, return_stats=True)
    assert st1.alpha.item() == 1.5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("alpha", ["softmax", "entmax15", 1.3])
def test_half_precision_inputs(dtype, alpha):
    q, k, v = _qkv()
    ref = entmax_attention(q, k, v, alpha=alpha, attn_mask=_random_mask())
    out = entmax_attention(q.to(dtype), k.to(dtype), v.to(dtype), alpha=alpha, attn_mask=_random_mask())
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


def test_dropout_only_in_effect_when_asked():
    q, k, v = _qkv()
    base = entmax_attention(q, k, v, alpha=1.5)
    torch.manual_seed(0)
    dropped = entmax_attention(q, k, v, alpha=1.5, dropout_p=0.5)
    assert not torch.allclose(dropped, base)
    assert torch.isfinite(dropped).all()


def test_backend_registry():
    calls = []

    def counting(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs):
        calls.append((alpha, is_causal, scale))
        return attn_mod._reference_backend(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs)

    q, k, v = _qkv()
    try:
        register_attention_backend("test_counting", counting, supports=lambda q, *a, **kw: q.shape[0] == 1)
        assert "test_counting" in available_attention_backends()
        out = entmax_attention(q, k, v, alpha="sparsemax", backend="test_counting", is_causal=True)
        assert calls == [(2.0, True, 1 / math.sqrt(D))]
        torch.testing.assert_close(out, entmax_attention(q, k, v, alpha=2.0, is_causal=True, backend="reference"))
        # auto: used only where its predicate accepts the inputs (batch of one here)
        entmax_attention(q, k, v, alpha=1.5)
        assert len(calls) == 1
        entmax_attention(q[:1], k[:1], v[:1], alpha=1.5)
        assert len(calls) == 2
        with pytest.raises(ValueError, match="already registered"):
            register_attention_backend("test_counting", counting)
    finally:
        attn_mod._BACKENDS.pop("test_counting", None)
    with pytest.raises(ValueError, match="unknown attention backend"):
        entmax_attention(q, k, v, backend="nope")
    with pytest.raises(ValueError, match="reserved"):
        register_attention_backend("auto", counting)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"alpha": "relu"}, ValueError, "not a known normalizer"),
        ({"alpha": 0.5}, ValueError, ">= 1"),
        ({"alpha": float("nan")}, ValueError, ">= 1"),
        ({"alpha": True}, TypeError, "alpha must be"),
        ({"alpha": torch.tensor([1, 2, 2])}, TypeError, "floating-point"),
        ({"alpha": torch.tensor([1.5, 1.5])}, ValueError, "one α per head"),
        ({"alpha": torch.full((H, 1, K), 1.5)}, ValueError, "size 1 on the last"),
        ({"attn_mask": torch.ones(Q, K)}, TypeError, "boolean"),
        ({"dropout_p": 1.0}, ValueError, "dropout_p"),
    ],
)
def test_argument_errors(kwargs, exc, match):
    q, k, v = _qkv()
    with pytest.raises(exc, match=match):
        entmax_attention(q, k, v, **kwargs)


def test_shape_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="same head dim"):
        entmax_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="same number of keys"):
        entmax_attention(q, k, v[:, :, :3])
