"""MultiheadAttention: agreement with torch for softmax, normalizers, learned α, masks and the KV cache."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adasparse.nn.activations import LearnableAlpha
from adasparse.nn.multihead import KVCache, MultiheadAttention

E, H, B, T, S = 16, 4, 3, 6, 5
NORMALIZERS = ["softmax", "sparsemax", "entmax15", 1.3, "learned"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny shapes: one intra-op thread is faster and immune to a busy shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _torch_mha(mha: MultiheadAttention) -> nn.MultiheadAttention:
    """A torch.nn.MultiheadAttention with the same weights (same q/k/v dims)."""
    ref = nn.MultiheadAttention(E, H, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    return ref.eval()


def test_softmax_matches_torch_multihead_attention():
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, normalizer="softmax").eval()
    ref = _torch_mha(mha)
    x, mem = _x(B, T, E), _x(B, S, E, seed=1)
    pad = torch.ones(B, S, dtype=torch.bool)
    pad[1, 3:] = False
    # self-attention, causal
    causal_pad = torch.ones(T, T, dtype=torch.bool).triu(1)  # torch: True = NOT allowed
    out, _ = mha(x, is_causal=True)
    expected, _ = ref(x, x, x, attn_mask=causal_pad, need_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # cross-attention with key padding (torch: True = pad)
    out, stats = mha(x, mem, key_padding_mask=pad, return_stats=True)
    expected, w = ref(x, mem, mem, key_padding_mask=~pad, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(stats.probs, w, atol=1e-5, rtol=1e-5)


def test_softmax_matches_sdpa_reference_with_kdim_vdim():
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, normalizer="softmax", kdim=10, vdim=7).eval()
    x, key, val = _x(B, T, E), _x(B, S, 10, seed=1), _x(B, S, 7, seed=2)
    q = mha.q_proj(x).view(B, T, H, -1).transpose(1, 2)
    k = mha.k_proj(key).view(B, S, H, -1).transpose(1, 2)
    v = mha.v_proj(val).view(B, S, H, -1).transpose(1, 2)
    expected = mha.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, E))
    out, _ = mha(x, key, val)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_batch_first_false_is_a_transpose():
    torch.manual_seed(0)
    a = MultiheadAttention(E, H, normalizer="entmax15")
    b = MultiheadAttention(E, H, normalizer="entmax15", batch_first=False)
    b.load_state_dict(a.state_dict())
    x = _x(B, T, E)
    torch.testing.assert_close(b(x.transpose(0, 1), is_causal=True)[0], a(x, is_causal=True)[0].transpose(0, 1))


@pytest.mark.parametrize("normalizer, value", [("softmax", 1.0), ("sparsemax", 2.0), ("entmax15", 1.5), (1.3, 1.3)])
def test_alpha_property_fixed(normalizer, value):
    mha = MultiheadAttention(E, H, normalizer=normalizer)
    assert torch.equal(mha.alpha, torch.full((H,), value))
    assert not any("theta" in n for n, _ in mha.named_parameters())


def test_alpha_property_learned():
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H)  # learned, paper initialisation θ ~ N(0, 1)
    assert isinstance(mha.alpha_module, LearnableAlpha)
    a = mha.alpha
    assert a.shape == (H,) and a.requires_grad and ((a >= 1.01) & (a <= 2)).all()
    assert len(set(a.tolist())) == H  # random init: distinct heads
    fixed = MultiheadAttention(E, H, alpha_init=1.4)
    torch.testing.assert_close(fixed.alpha, torch.full((H,), 1.4))


def test_sparse_normalizer_gives_exact_zeros_softmax_does_not():
    torch.manual_seed(0)
    x = _x(B, T, E)
    for norm, sparse in [("softmax", False), ("sparsemax", True)]:
        mha = MultiheadAttention(E, H, normalizer=norm)
        _, st = mha(x, return_stats=True)
        assert bool((st.probs == 0).any()) is sparse


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_kv_cache_self_attention_equals_full(normalizer):
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, normalizer=normalizer).eval()
    x = 3 * _x(B, T, E)
    full, _ = mha(x, is_causal=True)
    # one token at a time
    cache = KVCache()
    steps = [mha(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(T)]
    assert cache.length == T
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # a chunk of 3, then single steps (bottom-right causal alignment inside the chunk after the first)
    cache = KVCache()
    outs = [mha(x[:, :2], is_causal=True, cache=cache)[0], mha(x[:, 2:5], is_causal=True, cache=cache)[0]]
    outs.append(mha(x[:, 5:], is_causal=True, cache=cache)[0])
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_kv_cache_with_key_padding(normalizer):
    """Left-padded prompts: the padding mask given with each chunk is remembered by the cache."""
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, normalizer=normalizer).eval()
    x = _x(B, T, E)
    pad = torch.ones(B, T, dtype=torch.bool)
    pad[0, :2] = False
    full, _ = mha(x, key_padding_mask=pad, is_causal=True)
    cache = KVCache()
    out1, _ = mha(x[:, :3], key_padding_mask=pad[:, :3], is_causal=True, cache=cache)
    rest = [mha(x[:, t : t + 1], is_causal=True, cache=cache)[0] for t in range(3, T)]
    assert cache.key_mask.shape == (B, T)
    got = torch.cat([out1, *rest], 1)
    live = torch.ones(B, T, dtype=torch.bool)
    live[0, :2] = False  # queries with no attendable key: zero attention output, compare the rest
    torch.testing.assert_close(got[live], full[live], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_static_cache_cross_attention_and_reorder(normalizer):
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, normalizer=normalizer).eval()
    x, mem = _x(B, T, E), _x(B, S, E, seed=1)
    pad = torch.ones(B, S, dtype=torch.bool)
    pad[2, 2:] = False
    full, _ = mha(x, mem, key_padding_mask=pad)
    cache = KVCache(static=True)
    first, _ = mha(x[:, :1], mem, key_padding_mask=pad, cache=cache)
    k_id = cache.k
    rest = [mha(x[:, t : t + 1], None, cache=cache)[0] for t in range(1, T)]  # memory no longer needed
    assert cache.k is k_id and cache.length == S
    torch.testing.assert_close(torch.cat([first, *rest], 1), full, atol=1e-5, rtol=1e-5)
    # reorder: rows (2, 0, 0) of the cache behave as rows (2, 0, 0) of the batch
    idx = torch.tensor([2, 0, 0])
    cache.reorder(idx)
    out, _ = mha(x[idx, 3:4], None, cache=cache)
    torch.testing.assert_close(out, full[idx, 3:4], atol=1e-5, rtol=1e-5)


def test_self_cache_reorder():
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, normalizer="learned").eval()
    x = _x(B, T, E)
    full, _ = mha(x, is_causal=True)
    cache = KVCache()
    mha(x[:, :4], is_causal=True, cache=cache)
    idx = torch.tensor([1, 1, 0])
    cache.reorder(idx)
    out, _ = mha(x[idx, 4:5], is_causal=True, cache=cache)
    torch.testing.assert_close(out, full[idx, 4:5], atol=1e-5, rtol=1e-5)


def test_learned_alpha_gradients_reach_every_head():
    torch.manual_seed(0)
    mha = MultiheadAttention(E, H, normalizer="learned")
    x = 2 * _x(B, T, E)
    out, _ = mha(x, is_causal=True)
    out.square().sum().backward()
    g = mha.alpha_module.theta.grad
    assert g.shape == (H,) and torch.isfinite(g).all() and (g != 0).all()


def test_fully_masked_queries_give_zero_rows():
    torch.manual_seed(0)
    for norm in NORMALIZERS:
        mha = MultiheadAttention(E, H, normalizer=norm, bias=False)
        x = _x(B, T, E).requires_grad_(True)
        mask = torch.ones(B, 1, T, T, dtype=torch.bool)
        mask[0, :, 1] = False
        out, _ = mha(x, attn_mask=mask)
        assert torch.isfinite(out).all() and (out[0, 1] == 0).all()  # no bias: zero attention → zero output
        out.sum().backward()
        assert torch.isfinite(x.grad).all()


def test_validation_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="normalizer='relu' is not allowed"):
        MultiheadAttention(E, H, normalizer="relu")
    with pytest.raises(ValueError, match=">= 1"):
        MultiheadAttention(E, H, normalizer=0.9)
    with pytest.raises(TypeError, match="normalizer must be"):
        MultiheadAttention(E, H, normalizer=None)
    with pytest.raises(ValueError, match="init"):
        MultiheadAttention(E, H, alpha_init=2.5)
    mha = MultiheadAttention(E, H)
    with pytest.raises(ValueError, match="key_padding_mask must be boolean"):
        mha(_x(B, T, E), key_padding_mask=torch.ones(B, T + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask must be boolean"):
        mha(_x(B, T, E), key_padding_mask=torch.ones(B, T))
    with pytest.raises(ValueError, match="needs `key`"):
        mha(_x(B, T, E), cache=KVCache(static=True))
