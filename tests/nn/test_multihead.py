"""The models' `Attention` (project convention, KV cache) and the drop-in `MultiheadAttention` (PyTorch's).

`Attention`: agreement with torch for softmax, normalizers, learned α, masks and the KV cache.
`MultiheadAttention`: equal to `torch.nn.MultiheadAttention` at α = 1 on the whole product of its options, exact
zeros for masked keys at every α, an independent float64 reference at α ≠ 1, state dicts, torch's Transformer layers.
"""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adasparse.nn.activations import LearnableAlpha
from adasparse.nn.multihead import Attention, KVCache, MultiheadAttention

E, H, B, T, S = 16, 4, 3, 6, 5
NORMALIZERS = ["softmax", "sparsemax", "entmax15", 1.3, "learned"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny shapes


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _torch_mha(mha: Attention) -> nn.MultiheadAttention:
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
    mha = Attention(E, H, normalizer="softmax").eval()
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
    mha = Attention(E, H, normalizer="softmax", kdim=10, vdim=7).eval()
    x, key, val = _x(B, T, E), _x(B, S, 10, seed=1), _x(B, S, 7, seed=2)
    q = mha.q_proj(x).view(B, T, H, -1).transpose(1, 2)
    k = mha.k_proj(key).view(B, S, H, -1).transpose(1, 2)
    v = mha.v_proj(val).view(B, S, H, -1).transpose(1, 2)
    expected = mha.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, E))
    out, _ = mha(x, key, val)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("normalizer, value", [("softmax", 1.0), ("sparsemax", 2.0), ("entmax15", 1.5), (1.3, 1.3)])
def test_alpha_property_fixed(normalizer, value):
    mha = Attention(E, H, normalizer=normalizer)
    assert torch.equal(mha.alpha, torch.full((H,), value))
    assert not any("theta" in n for n, _ in mha.named_parameters())


def test_alpha_property_learned():
    torch.manual_seed(0)
    mha = Attention(E, H)  # learned, paper initialisation θ ~ N(0, 1)
    assert isinstance(mha.alpha_module, LearnableAlpha)
    a = mha.alpha
    assert a.shape == (H,) and a.requires_grad and ((a >= 1.01) & (a <= 2)).all()
    assert len(set(a.tolist())) == H  # random init: distinct heads
    fixed = Attention(E, H, alpha_init=1.4)
    torch.testing.assert_close(fixed.alpha, torch.full((H,), 1.4))


def test_sparse_normalizer_gives_exact_zeros_softmax_does_not():
    torch.manual_seed(0)
    x = _x(B, T, E)
    for norm, sparse in [("softmax", False), ("sparsemax", True)]:
        mha = Attention(E, H, normalizer=norm)
        _, st = mha(x, return_stats=True)
        assert bool((st.probs == 0).any()) is sparse


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_kv_cache_self_attention_equals_full(normalizer):
    torch.manual_seed(0)
    mha = Attention(E, H, normalizer=normalizer).eval()
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
    mha = Attention(E, H, normalizer=normalizer).eval()
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
    mha = Attention(E, H, normalizer=normalizer).eval()
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
    mha = Attention(E, H, normalizer="learned").eval()
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
    mha = Attention(E, H, normalizer="learned")
    x = 2 * _x(B, T, E)
    out, _ = mha(x, is_causal=True)
    out.square().sum().backward()
    g = mha.alpha_module.theta.grad
    assert g.shape == (H,) and torch.isfinite(g).all() and (g != 0).all()


def test_fully_masked_queries_give_zero_rows():
    torch.manual_seed(0)
    for norm in NORMALIZERS:
        mha = Attention(E, H, normalizer=norm, bias=False)
        x = _x(B, T, E).requires_grad_(True)
        mask = torch.ones(B, 1, T, T, dtype=torch.bool)
        mask[0, :, 1] = False
        out, _ = mha(x, attn_mask=mask)
        assert torch.isfinite(out).all() and (out[0, 1] == 0).all()  # no bias: zero attention → zero output
        out.sum().backward()
        assert torch.isfinite(x.grad).all()


def test_validation_errors():
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 3)
    with pytest.raises(ValueError, match="normalizer='relu' is not allowed"):
        Attention(E, H, normalizer="relu")
    with pytest.raises(ValueError, match=">= 1"):
        Attention(E, H, normalizer=0.9)
    with pytest.raises(TypeError, match="normalizer must be"):
        Attention(E, H, normalizer=None)
    with pytest.raises(ValueError, match="init"):
        Attention(E, H, alpha_init=2.5)
    mha = Attention(E, H)
    with pytest.raises(ValueError, match="key_padding_mask must be boolean"):
        mha(_x(B, T, E), key_padding_mask=torch.ones(B, T + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask must be boolean"):
        mha(_x(B, T, E), key_padding_mask=torch.ones(B, T))
    with pytest.raises(ValueError, match="needs `key`"):
        mha(_x(B, T, E), cache=KVCache(static=True))


# =========================================================================== the drop-in: MultiheadAttention

# tiny shapes: head dim 2, L ≠ S so that a transposed mask cannot pass
DE, DH, DN, DL, DS = 4, 2, 2, 3, 4
NEG = float("-inf")


def _pair(batch_first=False, bias=True, add_bias_kv=False, add_zero_attn=False, kv=(None, None), **kw):
    """A torch.nn.MultiheadAttention with random parameters (biases too) and ours loaded from its state dict."""
    dtype = kw.pop("dtype", torch.float64)
    kdim, vdim = kv
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(DE, DH, 0.0, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first, dtype=dtype)
    with torch.no_grad():  # torch starts its biases at zero: randomise every tensor, so that each one is checked
        for p in ref.parameters():
            p.copy_(torch.randn_like(p))
    kw.setdefault("normalizer", "softmax")
    ours = MultiheadAttention(DE, DH, 0.0, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first, dtype=dtype, **kw)
    ours.load_state_dict(ref.state_dict())  # strict: PyTorch's names and shapes
    return ref, ours


def _blocked(kind, causal, n, s, g):
    """A PyTorch attn_mask "not allowed" pattern (L, S) or (n·H, L, S): causal (top-left) or random with key 0 open."""
    lead = () if kind[1] == 2 else (n * DH,)
    if causal:
        return (~torch.ones(DL, s, dtype=torch.bool).tril()).expand(*lead, DL, s)
    blocked = torch.rand(*lead, DL, s, generator=g) < 0.4
    blocked[..., 0] = False
    return blocked


def _torch_attn_mask(kind, causal, n, s, g, dtype=torch.float64):
    """kind (fmt, dims): bool True = not allowed, or float = random additive bias with -inf where not allowed
    (for a causal one too: then is_causal is a hint that is only partly true, and PyTorch's rule decides)."""
    if kind is None:
        return None
    blocked = _blocked(kind, causal, n, s, g)
    if kind[0] == "bool":
        return blocked
    return torch.randn(blocked.shape, generator=g, dtype=dtype).masked_fill(blocked, NEG)


def _torch_kpm(fmt, n, s, g, dtype=torch.float64):
    """bool True = ignore (the last key of the last sequence), or float with -inf there and a bias elsewhere."""
    if fmt is None:
        return None
    ignore = torch.zeros(n, s, dtype=torch.bool)
    ignore[-1, -1] = True
    return ignore if fmt == "bool" else torch.randn(n, s, generator=g, dtype=dtype).masked_fill(ignore, NEG)


def _inputs(batch_first, batched, kv, g, dtype=torch.float64, q_len=DL, k_len=DS):
    n = DN if batched else 1

    def x(length, e):
        t = torch.randn(n, length, e, generator=g, dtype=dtype)  # (N, L, E)
        return t[0] if not batched else t if batch_first else t.transpose(0, 1)

    return x(q_len, DE), x(k_len, kv[0] or DE), x(k_len, kv[1] or DE)


def _err(a, b) -> float:
    if a.shape != b.shape:
        return float("inf")
    return (a - b).abs().max().item() if a.numel() else 0.0  # NaN compares False below: a failure


CTOR = list(itertools.product([False, True], [False, True], [False, True], [False, True], [(None, None), (3, 5)]))
ATTN = [(None, False)] + [((f, d), c) for f in ("bool", "float") for d in (2, 3) for c in (False, True)]
WEIGHTS = [(False, True), (True, True), (True, False)]  # need_weights, average_attn_weights
FORWARD = list(itertools.product([True, False], [None, "bool", "float"], ATTN, WEIGHTS))


@pytest.mark.filterwarnings("ignore:Support for mismatched")
@pytest.mark.parametrize("batch_first, bias, add_bias_kv, add_zero_attn, kv", CTOR)
def test_softmax_equals_torch_multihead_attention_on_every_option(batch_first, bias, add_bias_kv, add_zero_attn, kv):
    """α = 1: every constructor option × every forward option (batched or not, bool/float key padding,
    bool/float 2-D/3-D attn_mask, is_causal, need_weights, average_attn_weights) equals torch to 1e-12 in float64."""
    ref, ours = _pair(batch_first, bias, add_bias_kv, add_zero_attn, kv)
    g = torch.Generator().manual_seed(1)
    bad = []
    with torch.no_grad():  # (training mode: torch's fused inference path stays off; dropout is 0)
        for batched, kpm_fmt, (attn, causal), (need, avg) in FORWARD:
            q, k, v = _inputs(batch_first, batched, kv, g)
            n = DN if batched else 1
            kpm = _torch_kpm(kpm_fmt, n, DS, g)
            kw = dict(
                key_padding_mask=kpm if kpm is None or batched else kpm[0],
                need_weights=need,
                attn_mask=_torch_attn_mask(attn, causal, n, DS, g),
                average_attn_weights=avg,
                is_causal=causal,
            )
            (o_ref, w_ref), (o, w) = ref(q, k, v, **kw), ours(q, k, v, **kw)
            errs = [_err(o, o_ref)] + ([_err(w, w_ref)] if need else [0.0 if w is None and w_ref is None else 1.0])
            if not max(errs) <= 1e-12:
                bad.append((batched, kpm_fmt, attn, causal, need, avg, errs))
    assert not bad, f"{len(bad)}/{len(FORWARD)} cases differ from torch, e.g. {bad[:3]}"


@pytest.mark.parametrize("kv", [(None, None), (3, 5)])
def test_softmax_equals_torch_in_float32_and_for_self_attention(kv):
    """float32 to 1e-6; and the three ways of passing inputs (query is key is value, key is value, all distinct),
    which take different projection paths, in both parameter layouts."""
    ref, ours = _pair(True, kv=kv, dtype=torch.float32)
    g = torch.Generator().manual_seed(2)
    pad = torch.zeros(DN, DL, dtype=torch.bool)
    pad[0, -1] = True
    causal = ~torch.ones(DL, DL, dtype=torch.bool).tril()
    x, k, v = _inputs(True, True, kv, g, dtype=torch.float32, k_len=DL)
    calls = [(x, k, v), (x, k, k if kv[0] == kv[1] else v)]
    if kv[0] is None:
        calls.append((x, x, x))
    for q, key, val in calls:
        for need in (True, False):
            kw = dict(key_padding_mask=pad, attn_mask=causal, is_causal=True, need_weights=need)
            (o_ref, w_ref), (o, w) = ref(q, key, val, **kw), ours(q, key, val, **kw)
            torch.testing.assert_close(o, o_ref, atol=1e-6, rtol=1e-6)
            if need:
                torch.testing.assert_close(w, w_ref, atol=1e-6, rtol=1e-6)


def test_dropout_in_training_equals_torch_with_the_same_seed():
    """dropout > 0 in training: the same random stream as torch, so the same output and (dropped) weights."""
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(8, 2, dropout=0.4)
    ours = MultiheadAttention(8, 2, dropout=0.4, normalizer="softmax")
    ours.load_state_dict(ref.state_dict())
    q, k = _x(5, 3, 8), _x(6, 3, 8, seed=1)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 3:] = True
    for need in (True, False):
        torch.manual_seed(5)
        o_ref, w_ref = ref(q, k, k, key_padding_mask=pad, need_weights=need)
        torch.manual_seed(5)
        o, w = ours(q, k, k, key_padding_mask=pad, need_weights=need)
        torch.testing.assert_close(o, o_ref, atol=1e-6, rtol=0)
        if need:
            torch.testing.assert_close(w, w_ref, atol=1e-6, rtol=0)
            assert (w == 0).any()  # some weights were dropped
    assert not torch.equal(ours(q, k, k)[0], ours.eval()(q, k, k)[0])


@pytest.mark.parametrize("which", ["attn_mask", "key_padding_mask", "causal+bias"])
def test_a_learned_float_mask_that_starts_at_zero_gets_torchs_gradient(which):
    """A float mask that is a parameter (a learned position bias, zero at the start, or a causal -inf mask plus
    such a bias) takes part in autograd as in PyTorch: it gets the same gradient, not None."""
    ref, ours = _pair(batch_first=True)
    x = _x(DN, DL, DE).double()  # (N, L, E)
    causal = torch.zeros(DL, DL, dtype=torch.float64).masked_fill(~torch.ones(DL, DL, dtype=torch.bool).tril(), NEG)
    grads = []
    for m in (ref, ours):
        shape = (DN, DL) if which == "key_padding_mask" else (DL, DL)
        bias = nn.Parameter(torch.zeros(shape, dtype=torch.float64))
        if which == "key_padding_mask":
            out = m(x, x, x, key_padding_mask=bias)[0]
        else:
            out = m(x, x, x, attn_mask=bias + causal if which == "causal+bias" else bias)[0]
        out.pow(2).sum().backward()
        assert bias.grad is not None
        grads.append(bias.grad)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-10, rtol=1e-8)


def _bisect_entmax(z: Tensor, alpha: Tensor) -> Tensor:
    """Independent float64 α-entmax (α > 1) by bisection on τ: p = [(α−1)z − τ]₊^{1/(α−1)}, Σp = 1."""
    x = z * (alpha - 1)
    hi = x.max(-1, keepdim=True).values
    lo = hi - 1
    for _ in range(120):
        tau = (lo + hi) / 2
        big = ((x - tau).clamp_min(0) ** (1 / (alpha - 1))).sum(-1, keepdim=True) >= 1
        lo, hi = torch.where(big, tau, lo), torch.where(big, hi, tau)
    p = (x - (lo + hi) / 2).clamp_min(0) ** (1 / (alpha - 1))
    return p / p.sum(-1, keepdim=True)


def _reference_mha(m: MultiheadAttention, q, k, v, bias) -> tuple[Tensor, Tensor]:
    """torch.nn.MultiheadAttention's math written out (batch-first, packed weights, no extra keys), with
    `_bisect_entmax` at the module's α in place of softmax; bias (N, H, L, S) float with -inf = masked."""
    wq, wk, wv = m.in_proj_weight.chunk(3)
    bq, bk, bv = m.in_proj_bias.chunk(3)
    n, lq, e = q.shape

    def heads(t):
        return t.reshape(n, t.shape[1], DH, e // DH).transpose(1, 2)  # (N, H, ·, D)

    qh, kh, vh = heads(F.linear(q, wq, bq)), heads(F.linear(k, wk, bk)), heads(F.linear(v, wv, bv))
    scores = qh @ kh.transpose(-2, -1) / math.sqrt(e // DH) + bias
    alpha = torch.as_tensor(m.alpha_module(), dtype=torch.float64).detach()  # a float (fixed α) or θ's (H,)
    p = _bisect_entmax(scores, alpha.expand(DH).reshape(1, DH, 1, 1))
    out = (p @ vh).transpose(1, 2).reshape(n, lq, e)
    return F.linear(out, m.out_proj.weight, m.out_proj.bias), p


@pytest.mark.parametrize("normalizer", ["sparsemax", "entmax15", 1.3, "learned"])
def test_entmax_equals_an_independent_float64_reference(normalizer):
    """α ≠ 1 against the written-out math with a bisection entmax: bool masks (the kernel path) and float masks
    with a finite bias (the materialised path), with and without weights."""
    _, m = _pair(True, normalizer=normalizer)
    g = torch.Generator().manual_seed(3)
    q, k, v = _inputs(True, True, (None, None), g)
    kpm = _torch_kpm("bool", DN, DS, g)
    blocked = _blocked(("bool", 3), False, DN, DS, g)  # (N·H, L, S)
    float_mask = torch.randn(blocked.shape, generator=g, dtype=torch.float64).masked_fill(blocked, NEG)
    for attn_mask, extra in ((blocked, 0.0), (float_mask, float_mask.masked_fill(blocked, 0.0))):
        bias = (attn_mask.view(DN, DH, DL, DS) * 0.0).masked_fill(blocked.view(DN, DH, DL, DS), NEG)
        bias = (bias + (extra if isinstance(extra, float) else extra.view(DN, DH, DL, DS))).masked_fill(
            kpm[:, None, None, :], NEG
        )
        o_ref, p_ref = _reference_mha(m, q, k, v, bias)
        for need in (False, True):
            o, w = m(q, k, v, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=need, average_attn_weights=False)
            torch.testing.assert_close(o, o_ref, atol=1e-9, rtol=0)
            if need:
                torch.testing.assert_close(w, p_ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_masked_keys_get_exactly_zero_weight_at_every_alpha(normalizer):
    """Keys masked by a bool or -inf mask (padding or attn_mask, with or without a float bias) get weight 0.0
    exactly, and changing their values changes nothing, in both paths (weights asked for or not)."""
    _, m = _pair(True, normalizer=normalizer)
    g = torch.Generator().manual_seed(4)
    q, k, v = _inputs(True, True, (None, None), g)
    for fmt in ("bool", "float"):
        kpm = _torch_kpm(fmt, DN, DS, g)
        attn = _torch_attn_mask((fmt, 3), False, DN, DS, g)
        blocked = (attn if fmt == "bool" else attn == NEG).view(DN, DH, DL, DS) | (
            kpm if fmt == "bool" else kpm == NEG
        )[:, None, None, :]
        assert blocked.any() and not blocked.all(-1).any() and blocked.shape == (DN, DH, DL, DS)
        kw = dict(key_padding_mask=kpm, attn_mask=attn)
        out, w = m(q, k, v, average_attn_weights=False, **kw)
        assert (w[blocked] == 0).all() and (w[~blocked] > 0).any()
        torch.testing.assert_close(w.sum(-1), torch.ones(DN, DH, DL, dtype=w.dtype))
        # the last key of the last sequence is padding: its value cannot matter, on either path
        v2 = v.clone()
        v2[-1, -1] = 1e3
        for need in (False, True):
            torch.testing.assert_close(m(q, k, v2, need_weights=need, **kw)[0], out, atol=1e-12, rtol=0)


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_rows_with_no_attendable_key_give_out_proj_bias(normalizer):
    """A query whose keys are all masked: zero weights, attention output zero → ``out_proj.bias``, finite gradients.
    At α = 1 this is exactly torch's need_weights=False result (torch's need_weights=True gives NaN)."""
    ref, m = _pair(True, normalizer=normalizer)
    g = torch.Generator().manual_seed(5)
    q, k, v = _inputs(True, True, (None, None), g)
    q.requires_grad_(True)
    kpm = torch.zeros(DN, DS, dtype=torch.bool)
    kpm[1] = True  # sequence 1: every key is padding
    attn = torch.zeros(DL, DS, dtype=torch.bool)
    attn[0] = True  # query 0: no key allowed
    dead = torch.zeros(DN, DL, dtype=torch.bool)
    dead[1], dead[:, 0] = True, True
    for need in (False, True):
        out, w = m(q, k, v, key_padding_mask=kpm, attn_mask=attn, need_weights=need, average_attn_weights=False)
        torch.testing.assert_close(out[dead], m.out_proj.bias.expand(int(dead.sum()), DE), atol=1e-12, rtol=0)
        if need:
            assert (w.transpose(1, 2)[dead] == 0).all()
        if normalizer == "softmax":
            o_ref, _ = ref(q, k, v, key_padding_mask=kpm, attn_mask=attn, need_weights=False)
            torch.testing.assert_close(out, o_ref, atol=1e-12, rtol=0)
        (grad,) = torch.autograd.grad(out.sum(), q)
        assert torch.isfinite(grad).all() and (grad[dead] == 0).all()


@pytest.mark.parametrize("need_weights, float_mask", [(False, False), (True, False), (False, True), (True, True)])
def test_gradients_reach_learned_alpha_on_every_path(need_weights, float_mask):
    """The kernel path, the weights path and the float-bias path give the same output and the same θ gradient:
    a float mask that adds one constant to every allowed score (α-entmax is shift-invariant) equals the bool mask."""
    _, m = _pair(True, normalizer="learned")
    g = torch.Generator().manual_seed(6)
    q, k, v = _inputs(True, True, (None, None), g)
    blocked = _blocked(("bool", 2), False, DN, DS, g)
    shifted = torch.full((DL, DS), 0.7, dtype=torch.float64).masked_fill(blocked, NEG)  # finite part ≠ 0
    out, _ = m(q, k, v, attn_mask=shifted if float_mask else blocked, need_weights=need_weights)
    (out**2).sum().backward()
    grad = m.alpha_module.theta.grad.clone()
    assert torch.isfinite(grad).all() and (grad != 0).all()
    m.zero_grad()
    base, _ = m(q, k, v, attn_mask=blocked, need_weights=False)
    (base**2).sum().backward()
    torch.testing.assert_close(out, base, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, m.alpha_module.theta.grad, atol=1e-10, rtol=1e-8)


def test_same_core_as_the_models_attention():
    """The drop-in with Attention's weights (packed) and PyTorch's conventions gives Attention's output."""
    torch.manual_seed(0)
    inner = Attention(E, H, normalizer="learned").eval()
    outer = MultiheadAttention(E, H, normalizer="learned", batch_first=True).eval()
    with torch.no_grad():
        outer.in_proj_weight.copy_(torch.cat([inner.q_proj.weight, inner.k_proj.weight, inner.v_proj.weight]))
        outer.in_proj_bias.copy_(torch.cat([inner.q_proj.bias, inner.k_proj.bias, inner.v_proj.bias]))
        outer.out_proj.load_state_dict(inner.out_proj.state_dict())
        outer.alpha_module.load_state_dict(inner.alpha_module.state_dict())
    x, mem = _x(B, T, E), _x(B, S, E, seed=1)
    real = torch.ones(B, S, dtype=torch.bool)
    real[1, 3:] = False
    expected, _ = inner(x, mem, key_padding_mask=real)
    out, _ = outer(x, mem, mem, key_padding_mask=~real, need_weights=False)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kv", [(None, None), (3, 5)])
def test_state_dicts_load_both_ways(kv):
    """torch → ours with strict=True in both layouts, also for a learned α (absent from torch's state dict: it keeps
    its initialisation), also nested in a parent; ours (fixed α) → torch strict; a missing projection still fails."""
    ref = nn.MultiheadAttention(DE, DH, kdim=kv[0], vdim=kv[1], add_bias_kv=True)
    names = set(ref.state_dict())
    assert ("in_proj_weight" in names) == (kv == (None, None))
    torch.manual_seed(1)
    ours = MultiheadAttention(DE, DH, kdim=kv[0], vdim=kv[1], add_bias_kv=True)  # learned α
    theta = ours.alpha_module.theta.detach().clone()
    assert set(ours.state_dict()) == names | {"alpha_module.theta"}
    assert ours.load_state_dict(ref.state_dict()) is not None
    assert torch.equal(ours.alpha_module.theta, theta)
    for n, t in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[n], t), n
    # nested: a parent's state dict with a prefix
    parent = nn.ModuleDict({"attn": MultiheadAttention(DE, DH, kdim=kv[0], vdim=kv[1], add_bias_kv=True)})
    parent.load_state_dict({f"attn.{n}": t for n, t in ref.state_dict().items()})
    # ours with a fixed normalizer has exactly torch's state dict
    fixed = MultiheadAttention(DE, DH, kdim=kv[0], vdim=kv[1], add_bias_kv=True, normalizer="sparsemax")
    nn.MultiheadAttention(DE, DH, kdim=kv[0], vdim=kv[1], add_bias_kv=True).load_state_dict(fixed.state_dict())
    broken = dict(ref.state_dict())
    del broken["out_proj.weight"]
    with pytest.raises(RuntimeError, match="out_proj.weight"):
        ours.load_state_dict(broken)
    # and a state dict with α loads α
    other = MultiheadAttention(DE, DH, kdim=kv[0], vdim=kv[1], add_bias_kv=True)
    other.load_state_dict(ours.state_dict())
    assert torch.equal(other.alpha_module.theta, ours.alpha_module.theta)


def test_parameters_device_dtype_and_attributes_are_torchs():
    ref = nn.MultiheadAttention(DE, DH, 0.1, False, True, True, 3, 5, True, dtype=torch.float64)
    ours = MultiheadAttention(DE, DH, 0.1, False, True, True, 3, 5, True, dtype=torch.float64)
    assert [(n, p.shape, p.dtype) for n, p in ref.named_parameters()] == [
        (n, p.shape, p.dtype) for n, p in ours.named_parameters() if not n.startswith("alpha_module.")
    ]
    assert ours.alpha_module.theta.dtype == torch.float64
    for attr in ("embed_dim", "num_heads", "head_dim", "kdim", "vdim", "dropout", "batch_first", "add_zero_attn"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert ours.in_proj_weight is None and ours.in_proj_bias is None and ours.bias_k.shape == (1, 1, DE)
    assert MultiheadAttention(DE, DH).batch_first is False  # PyTorch's default layout
    # PyTorch's initialisation, draw for draw: with the same seed the same starting parameters (α is drawn last)
    for kv, normalizer in itertools.product([(None, None), (3, 5)], ["softmax", "learned"]):
        torch.manual_seed(7)
        ref = nn.MultiheadAttention(DE, DH, add_bias_kv=True, kdim=kv[0], vdim=kv[1])
        torch.manual_seed(7)
        ours = MultiheadAttention(DE, DH, add_bias_kv=True, kdim=kv[0], vdim=kv[1], normalizer=normalizer)
        mine = ours.state_dict()
        assert all(torch.equal(mine[n], t) for n, t in ref.state_dict().items()), (kv, normalizer)


def _with_our_attention(layer: nn.TransformerEncoderLayer, normalizer: str) -> nn.TransformerEncoderLayer:
    layer = copy.deepcopy(layer)
    mha = MultiheadAttention(8, 2, batch_first=True, normalizer=normalizer)
    mha.load_state_dict(layer.self_attn.state_dict())
    layer.self_attn = mha
    return layer


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True", "ignore:The PyTorch API of nested tensors")
def test_inside_torch_transformer_encoder_the_fused_softmax_path_is_never_taken():
    """torch's TransformerEncoderLayer/TransformerEncoder run a fused *softmax* kernel on their self_attn's weights
    in eval under no_grad; with ours as self_attn the α-entmax forward runs in every mode (equal to torch at α = 1)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    x = _x(3, 5, 8)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[1, 3:] = True
    real = ~pad
    with torch.no_grad():
        expected_layer = layer(x, src_key_padding_mask=pad)
        expected = nn.TransformerEncoder(layer, 2).eval()(x, src_key_padding_mask=pad)  # nested: zeros at pads
    for normalizer in ("softmax", "sparsemax"):
        ours = _with_our_attention(layer, normalizer).eval()
        stack = nn.TransformerEncoder(ours, 2).eval()  # built from a layer that holds ours: no nested tensors
        for module, ref in ((ours, expected_layer), (stack, expected)):
            with torch.no_grad():
                fast = module(x, src_key_padding_mask=pad)  # where torch would take its fused path
            slow = module(x, src_key_padding_mask=pad).detach()  # grad enabled: torch's plain path
            assert not fast.is_nested
            torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
            if normalizer == "softmax":
                torch.testing.assert_close(fast[real], ref[real], atol=1e-5, rtol=0)
            else:
                assert (fast[real] - ref[real]).abs().max() > 1e-3
    # an encoder built with torch's attention converts padded batches to nested tensors: a clear error, not a wrong result
    stack = nn.TransformerEncoder(layer, 2).eval()
    stack.layers[0] = _with_our_attention(stack.layers[0], "sparsemax")
    with torch.no_grad(), pytest.raises(ValueError, match="enable_nested_tensor=False"):
        stack(x, src_key_padding_mask=pad)


def test_dropin_validation_errors():
    m = MultiheadAttention(DE, DH, normalizer="softmax")
    q, k = torch.randn(DL, DN, DE), torch.randn(DS, DN, DE)
    with pytest.raises(ValueError, match="needs attn_mask"):
        m(q, k, k, is_causal=True)
    with pytest.raises(ValueError, match=r"key_padding_mask must be a tensor of shape \(2, 4\)"):
        m(q, k, k, key_padding_mask=torch.zeros(DS, DN, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask must be a tensor of shape \(L, S\) = \(3, 4\)"):
        m(q, k, k, attn_mask=torch.zeros(DS, DL, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask must be"):
        m(q, k, k, attn_mask=torch.zeros(DN, DL, DS, dtype=torch.bool))  # 3-D needs N·num_heads
    with pytest.raises(TypeError, match="attn_mask must be a bool or floating-point tensor"):
        m(q, k, k, attn_mask=torch.zeros(DL, DS, dtype=torch.long))
    with pytest.raises(ValueError, match="query must be"):
        m(q[None], k[None], k[None])
    with pytest.raises(ValueError, match="key and value must have the dims of query"):
        m(q, k[:, 0], k[:, 0])
    with pytest.raises(ValueError, match="key must have 4 features"):
        m(q, k[..., :3], k)
    with pytest.raises(ValueError, match="same length and batch"):
        m(q, k, k[:2])
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="kdim must be a positive int"):
        MultiheadAttention(DE, DH, kdim=0)
    with pytest.raises(ValueError, match="dropout"):
        MultiheadAttention(DE, DH, dropout=1.0)
    with pytest.raises(ValueError, match="normalizer='relu' is not allowed"):
        MultiheadAttention(DE, DH, normalizer="relu")


def test_inside_torch_transformer_decoder_layer():
    """Self- and cross-attention of torch's TransformerDecoderLayer replaced by ours: at α = 1 the layer's output is
    torch's (causal hint, float causal mask as nn.Transformer makes it, memory padding)."""
    torch.manual_seed(0)
    ref = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0).eval()  # sequence-first, as torch's default
    ours = copy.deepcopy(ref)
    for name in ("self_attn", "multihead_attn"):
        mha = MultiheadAttention(8, 2, normalizer="softmax")
        mha.load_state_dict(getattr(ref, name).state_dict())
        setattr(ours, name, mha)
    tgt, memory = _x(4, 3, 8), _x(6, 3, 8, seed=1)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[2, 4:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(4)  # float, 0 / -inf
    kw = dict(tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=pad)
    torch.testing.assert_close(ours(tgt, memory, **kw), ref(tgt, memory, **kw), atol=1e-5, rtol=0)
