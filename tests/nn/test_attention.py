"""The functional kernel: SDPA agreement for softmax, α-entmax reference values, masks, α tensors, backends."""

import ast
import functools
import inspect
import itertools
import math
import random

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


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny shapes


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
        ({"attn_mask": torch.ones(Q, K, dtype=torch.int64)}, TypeError, "boolean .* or floating"),
        ({"attn_mask": torch.ones(Q, K).tolist()}, TypeError, "attn_mask must be a torch.Tensor"),
        ({"attn_mask": torch.ones(Q, K - 1, dtype=torch.bool)}, ValueError, "does not broadcast"),
        ({"attn_mask": torch.zeros(4, B, H, Q, K)}, ValueError, "does not broadcast"),  # SDPA: would grow the output
        ({"dropout_p": 1.5}, ValueError, "dropout_p"),
        ({"dropout_p": -0.1}, ValueError, "dropout_p"),
        ({"is_causal": "yes"}, TypeError, "is_causal"),
        ({"scale": "big"}, TypeError, "scale"),
        ({"scale": float("inf")}, TypeError, "scale"),
        ({"alpha": torch.full((3, H, Q, 1), 1.5)}, ValueError, "does not broadcast"),
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
    with pytest.raises(TypeError, match="share one dtype"):
        entmax_attention(q, k.double(), v)
    with pytest.raises(ValueError, match="at least 2 dims"):
        entmax_attention(q[0, 0, 0], k[0, 0, 0], v[0, 0, 0])
    with pytest.raises(ValueError, match="must broadcast"):
        entmax_attention(q, torch.cat([k, k], 0), torch.cat([v, v], 0))


# --------------------------------------------------------------------------- SDPA drop-in


def test_signature_is_sdpas():
    """The parameters, their order, defaults and which ones may be positional are SDPA's (read from its docstring
    and found by calling it), then our keyword-only options."""
    doc = F.scaled_dot_product_attention.__doc__
    header = doc[: doc.index(")") + 1]  # "scaled_dot_product_attention(query, key, ..., enable_gqa=False)"
    sdpa = ast.parse(f"def {header}: pass").body[0].args
    names = [a.arg for a in sdpa.args]
    defaults = dict(zip(names[len(names) - len(sdpa.defaults) :], (ast.literal_eval(d) for d in sdpa.defaults)))
    q, k, v = _qkv(k_len=Q)
    values = [q, k, v, _random_mask(k_len=Q), 0.0, False, 0.3, False]
    n_positional = 0
    for n in range(3, len(names) + 1):
        try:
            F.scaled_dot_product_attention(*values[:n])
            n_positional = n
        except TypeError:  # "takes from 3 to 6 positional arguments"
            break
    assert n_positional >= 6
    ours = list(inspect.signature(entmax_attention).parameters.values())
    assert [p.name for p in ours[: len(names)]] == names
    assert [p.kind == p.POSITIONAL_OR_KEYWORD for p in ours[: len(names)]] == [i < n_positional for i in range(8)]
    assert {p.name: p.default for p in ours[3 : len(names)]} == defaults
    assert all(p.kind == p.KEYWORD_ONLY for p in ours[len(names) :])  # ours: alpha, return_stats, backend
    # a positional call means the same thing as SDPA's, and one SDPA refuses is refused
    torch.testing.assert_close(
        entmax_attention(*values[:n_positional], alpha=1), F.scaled_dot_product_attention(*values[:n_positional])
    )
    if n_positional < len(names):
        with pytest.raises(TypeError):
            entmax_attention(*values[: n_positional + 1], alpha=1)


def _sdpa_case_mask(kind, lead, hq, q_len, k_len, g):
    """A mask of the given kind for scores (*lead, Hq, Q, K), with a fully masked query row where it has rows."""
    full = (*lead, hq, q_len, k_len)
    shapes = {"qk": (q_len, k_len), "kpm": (*lead, 1, 1, k_len), "head": (hq, q_len, k_len), "full": full}
    if kind == "none":
        return None
    dtype, shape_name = kind.split("_")
    shape = shapes[shape_name]
    keep = torch.rand(shape, generator=g) > 0.3
    if shape_name == "kpm":
        keep[..., 0] = True  # padding: the first key is real
    else:
        keep[..., 1, :] = False  # query 1 attends nothing
    if dtype == "bool":
        return keep
    bias = torch.randn(shape, generator=g)
    return bias.masked_fill(~keep, float("-inf"))


def _sdpa_expected(q, k, v, mask, causal, scale, gqa):
    """torch's SDPA, the causal mask combined by hand (SDPA documents attn_mask and is_causal as exclusive);
    queries with no attendable key are zero (our convention; torch 2.13's SDPA on CPU agrees)."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    if causal:
        tril = torch.ones(q_len, k_len, dtype=torch.bool).tril()
        if mask is None:
            mask = tril
        elif mask.dtype == torch.bool:
            mask = mask & tril
        else:
            mask = mask.masked_fill(~tril, float("-inf"))
    kw = {"enable_gqa": True} if gqa else {}
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, **kw)
    if mask is None:
        return out, None
    live = (mask if mask.dtype == torch.bool else mask > float("-inf")).any(-1, keepdim=True)
    return torch.where(live, out, torch.zeros(())), live


_SDPA_MASKS = ["none", "bool_qk", "bool_kpm", "bool_full", "float_qk", "float_kpm", "float_head", "float_full"]


def test_alpha_one_equals_sdpa_on_every_combination():
    """α = 1 is SDPA, forward and backward (q, k, v and the float mask), on the product of mask kind × broadcast
    shape × is_causal × GQA/MQA × leading batch dims × scale × Q ≠ K, fully masked rows included, by the three
    α = 1 paths: α 1.0 (SDPA fast path), α 1.0 with return_stats (materialised softmax), α a per-head tensor of
    ones (the entmax solver)."""
    g = torch.Generator().manual_seed(0)
    d = 4
    n = 0
    for lead, (hq, hkv), (q_len, k_len), kind, causal, scale in itertools.product(
        [(), (2,), (2, 1)], [(4, 4), (4, 2), (4, 1)], [(5, 5), (3, 6), (6, 3)], _SDPA_MASKS, [False, True], [None, 0.7]
    ):
        gqa = hq != hkv
        q = torch.randn(*lead, hq, q_len, d, generator=g).requires_grad_()
        k = torch.randn(*lead, hkv, k_len, d, generator=g).requires_grad_()
        v = torch.randn(*lead, hkv, k_len, d + 1, generator=g).requires_grad_()
        mask = _sdpa_case_mask(kind, lead, hq, q_len, k_len, g)
        if mask is not None and mask.is_floating_point():
            mask.requires_grad_()
        expected, live = _sdpa_expected(q, k, v, mask, causal, scale, gqa)
        w = torch.randn(expected.shape, generator=g)
        if live is not None:
            w = w * live  # SDPA's gradient through a dead row is version-dependent (NaN on some kernels)
        leaves = [t for t in (q, k, v, mask) if t is not None and t.requires_grad]
        exp_grads = torch.autograd.grad((expected * w).sum(), leaves)
        for mode, alpha in [("fast", 1.0), ("stats", 1.0), ("tensor", torch.ones(hq))]:
            case = f"lead={lead} heads={hq, hkv} Q,K={q_len, k_len} mask={kind} causal={causal} scale={scale} {mode}"
            res = entmax_attention(
                q, k, v, mask, 0.0, causal, scale=scale, enable_gqa=gqa, alpha=alpha, return_stats=mode == "stats"
            )
            out = res[0] if mode == "stats" else res
            torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5, msg=lambda m, c=case: f"{c}: {m}")
            grads = torch.autograd.grad((out * w).sum(), leaves)
            for name, a, b in zip("qkvm", grads, exp_grads):
                torch.testing.assert_close(
                    a, b, atol=1e-6, rtol=1e-5, msg=lambda m, c=case, n=name: f"{c} grad {n}: {m}"
                )
            if live is not None:  # fully masked rows: exactly zero
                assert (out.detach() * ~live == 0).all(), case
            n += 1
    assert n == 3 * 3 * 3 * len(_SDPA_MASKS) * 2 * 2 * 3


def test_torch_sdpa_attn_mask_with_is_causal():
    """Where torch's SDPA itself takes attn_mask together with is_causal (it and-s them), α = 1 agrees with it."""
    q, k, v = _qkv(k_len=Q + 2)
    g = torch.Generator().manual_seed(3)
    for mask in (torch.rand(Q, Q + 2, generator=g) > 0.3, torch.randn(Q, Q + 2, generator=g)):
        try:
            ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=True)
        except RuntimeError as e:  # older torch: "Explicit attn_mask should not be set when is_causal=True"
            pytest.skip(f"this torch refuses attn_mask with is_causal: {e}")
        torch.testing.assert_close(entmax_attention(q, k, v, mask, is_causal=True, alpha=1), ref)


def test_two_dim_inputs_and_broadcast_batch():
    """SDPA takes (L, D) inputs (no head dim) and key/value whose batch dims broadcast against the query's."""
    g = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g), torch.randn(7, 3, generator=g)
    bias = torch.randn(5, 7, generator=g)
    for kw in [{}, {"is_causal": True}, {"attn_mask": bias}, {"attn_mask": bias > 0}]:
        torch.testing.assert_close(
            entmax_attention(q, k, v, alpha=1, **kw), F.scaled_dot_product_attention(q, k, v, **kw)
        )
        out = entmax_attention(q, k, v, alpha=1.5, **kw)
        per_batch = entmax_attention(q[None, None], k[None, None], v[None, None], alpha=1.5, **kw)
        torch.testing.assert_close(out, per_batch[0, 0])
    q, k, v = _qkv()
    for kw in [{}, {"attn_mask": _random_mask()}]:
        torch.testing.assert_close(
            entmax_attention(q, k[:1], v[:1], alpha=1, **kw), F.scaled_dot_product_attention(q, k[:1], v[:1], **kw)
        )
        torch.testing.assert_close(
            entmax_attention(q, k[:1], v[:1], alpha=1.5, **kw),
            entmax_attention(q, k[:1].expand_as(k), v[:1].expand_as(v), alpha=1.5, **kw),
        )
    with pytest.raises(ValueError, match="one α per head, but the inputs have no head dim"):
        entmax_attention(q[0, 0], k[0, 0], v[0, 0], alpha=torch.tensor([1.5, 2.0]))


def _bias_reference(q, k, v, alpha, bias=None, causal=False, scale=None, gqa_groups=1):
    """float64: α-entmax of (q kᵀ · scale + bias), causal top-left, GQA by repeat_interleave (SDPA's definition)."""
    if gqa_groups > 1:
        k, v = k.repeat_interleave(gqa_groups, -3), v.repeat_interleave(gqa_groups, -3)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.double() @ k.double().transpose(-2, -1)) * scale
    if bias is not None:
        s = s.masked_fill(~bias, float("-inf")) if bias.dtype == torch.bool else s + bias.double()
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), float("-inf"))
    p = entmax_bisect_reference(s, alpha.double() if isinstance(alpha, torch.Tensor) else alpha, dim=-1)
    return p @ v.double(), p


@pytest.mark.parametrize("alpha", [1.25, 1.5, 2.0, "per_head", "per_query"])
def test_additive_bias_exact_at_every_alpha(alpha):
    """A float attn_mask is added to the scores at every α: equal to a float64 bisection of (q kᵀ·scale + bias),
    with -inf entries at exactly zero weight; with is_causal, GQA, Q ≠ K, a custom scale and the stats."""
    g = torch.Generator().manual_seed(7)
    hq, hkv, q_len, k_len = 4, 2, 5, 6
    q = torch.randn(B, hq, q_len, D, generator=g)
    k, v = torch.randn(B, hkv, k_len, D, generator=g), torch.randn(B, hkv, k_len, D, generator=g)
    if alpha == "per_head":
        a = torch.tensor([1.1, 1.5, 1.8, 2.0])
    elif alpha == "per_query":
        a = 1 + torch.rand(B, hq, q_len, 1, generator=g)
    else:
        a = alpha
    ref_a = a.view(1, hq, 1, 1) if alpha == "per_head" else a
    for shape in [(q_len, k_len), (hq, q_len, k_len), (B, 1, 1, k_len)]:
        bias = 3 * torch.randn(shape, generator=g)
        bias = bias.masked_fill(torch.rand(shape, generator=g) < 0.25, float("-inf"))
        for causal, scale in [(False, None), (True, 0.5)]:
            out, st = entmax_attention(
                q, k, v, bias, 0.0, causal, scale=scale, enable_gqa=True, alpha=a, return_stats=True
            )
            ref_out, ref_p = _bias_reference(q, k, v, ref_a, bias, causal, scale, gqa_groups=hq // hkv)
            torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(st.probs.double(), ref_p, atol=1e-5, rtol=1e-4)
            excluded = (bias == float("-inf")).expand_as(st.probs)
            assert (st.probs[excluded] == 0).all()
            assert torch.equal(st.support, (st.probs > 0).sum(-1)) and st.probs.shape == (B, hq, q_len, k_len)
            # a bias is not a mask: adding a constant per query row changes nothing (entmax is shift-invariant)
            shifted = entmax_attention(
                q, k, v, bias + torch.randn(q_len, 1, generator=g), 0.0, causal, scale=scale, enable_gqa=True, alpha=a
            )
            torch.testing.assert_close(shifted, out, atol=1e-5, rtol=1e-4)


def test_bias_and_alpha_gradients_gradcheck():
    """A learned float bias (T5-style, per head) gets the exact gradient, together with q, k, v and per-head α,
    at α ≠ 1, with -inf entries, GQA and causal (finite differences in float64)."""
    g = torch.Generator().manual_seed(8)
    dt = torch.float64
    q = torch.randn(1, 4, 3, 4, generator=g, dtype=dt).requires_grad_()
    k = torch.randn(1, 2, 4, 4, generator=g, dtype=dt).requires_grad_()
    v = torch.randn(1, 2, 4, 4, generator=g, dtype=dt).requires_grad_()
    bias = torch.randn(4, 3, 4, generator=g, dtype=dt).requires_grad_()
    excluded = torch.zeros(4, 3, 4, dtype=dt).masked_fill(torch.rand(4, 3, 4, generator=g) < 0.2, float("-inf"))
    alpha = torch.tensor([1.2, 1.5, 1.7, 1.9], dtype=dt, requires_grad=True)

    def f(q, k, v, bias, alpha):
        return entmax_attention(q, k, v, bias + excluded, is_causal=True, enable_gqa=True, alpha=alpha)

    assert torch.autograd.gradcheck(f, (q, k, v, bias, alpha), atol=1e-6, rtol=1e-4)


def _alibi(slopes, q_len, k_len):
    """ALiBi: −slope_h · (i − j) for key j ≤ query i, (H, Q, K)."""
    dist = (torch.arange(q_len)[:, None] - torch.arange(k_len)[None, :]).clamp_min(0).to(slopes.dtype)
    return -slopes[:, None, None] * dist


def test_learned_alibi_slopes_get_sdpas_gradient_at_alpha_one_and_exact_ones_at_any_alpha():
    g = torch.Generator().manual_seed(9)
    q, k, v = (torch.randn(B, H, Q, D, generator=g) for _ in range(3))
    grads = {}
    for name in ("ours", "sdpa"):
        slopes = torch.tensor([0.5, 0.25, 0.125], requires_grad=True)
        qq = q.clone().requires_grad_()
        fn = F.scaled_dot_product_attention if name == "sdpa" else functools.partial(entmax_attention, alpha=1.0)
        out = fn(qq, k, v, _alibi(slopes, Q, Q), is_causal=False)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[name] = (out.detach(), slopes.grad, qq.grad)
    for a, b in zip(grads["ours"], grads["sdpa"]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # any α: slopes and α learned together (finite differences, float64)
    q64, k64, v64 = (t[:1, :, :3, :4].double() for t in (q, k, v))
    slopes = torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([1.3, 1.6, 2.0], dtype=torch.float64, requires_grad=True)

    def f(slopes, alpha):
        return entmax_attention(q64, k64, v64, _alibi(slopes, 3, 3), is_causal=True, alpha=alpha)

    assert torch.autograd.gradcheck(f, (slopes, alpha), atol=1e-6, rtol=1e-4)


def test_causal_is_top_left_aligned_for_q_not_k():
    """is_causal means key j ≤ query i whatever Q and K are (SDPA's torch.ones(Q, K).tril()), at every α."""
    g = torch.Generator().manual_seed(10)
    for q_len, k_len in [(3, 6), (6, 3)]:
        q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (q_len, k_len, k_len))
        tril = torch.ones(q_len, k_len, dtype=torch.bool).tril()
        torch.testing.assert_close(
            F.scaled_dot_product_attention(q, k, v, is_causal=True), F.scaled_dot_product_attention(q, k, v, tril)
        )  # what SDPA means (its docstring's reference code; checked here on this torch)
        for alpha in (1.0, 1.5, 2.0):
            out, st = entmax_attention(q, k, v, is_causal=True, alpha=alpha, return_stats=True)
            torch.testing.assert_close(out, entmax_attention(q, k, v, tril, alpha=alpha))
            assert (st.probs[..., ~tril] == 0).all()


def test_causal_bias_objects():
    """torch.nn.attention.bias.causal_upper_left / causal_lower_right are accepted as attn_mask, as SDPA does."""
    from torch.nn.attention.bias import causal_lower_right, causal_upper_left

    g = torch.Generator().manual_seed(11)
    q_len, k_len = 3, 6
    q, k, v = (torch.randn(B, H, n, D, generator=g) for n in (q_len, k_len, k_len))
    upper, lower = causal_upper_left(q_len, k_len), causal_lower_right(q_len, k_len)
    torch.testing.assert_close(
        entmax_attention(q, k, v, upper, alpha=1), F.scaled_dot_product_attention(q, k, v, upper)
    )
    torch.testing.assert_close(
        entmax_attention(q, k, v, lower, alpha=1), F.scaled_dot_product_attention(q, k, v, lower)
    )
    br = torch.ones(q_len, k_len, dtype=torch.bool).tril(diagonal=k_len - q_len)  # query i sits at K − Q + i
    torch.testing.assert_close(entmax_attention(q, k, v, lower, alpha=1.5), entmax_attention(q, k, v, br, alpha=1.5))
    torch.testing.assert_close(
        entmax_attention(q, k, v, upper, alpha=1.5), entmax_attention(q, k, v, is_causal=True, alpha=1.5)
    )
    with pytest.raises(ValueError, match="CausalBias for"):
        entmax_attention(q, k, v, causal_lower_right(q_len, k_len + 1))


def test_gqa_groups_query_heads_like_sdpa():
    """enable_gqa: query head h uses key/value head h // (Hq/Hk), at every α; heads per key and value may differ."""
    g = torch.Generator().manual_seed(12)
    q = torch.randn(B, 6, Q, D, generator=g)
    k, v = torch.randn(B, 2, K, D, generator=g), torch.randn(B, 3, K, D, generator=g)
    torch.testing.assert_close(
        entmax_attention(q, k, v, enable_gqa=True, alpha=1), F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    )
    alphas = torch.tensor([1.2, 1.4, 1.6, 1.8, 2.0, 1.5])
    out = entmax_attention(q, k, v, is_causal=True, enable_gqa=True, alpha=alphas)
    for h in range(6):
        one = entmax_attention(
            q[:, h : h + 1],
            k[:, h // 3 : h // 3 + 1],
            v[:, h // 2 : h // 2 + 1],
            is_causal=True,
            alpha=float(alphas[h]),
        )
        torch.testing.assert_close(out[:, h : h + 1], one)
    # heads that differ without enable_gqa: a clear error, not a broadcast error
    with pytest.raises(ValueError, match="query has 6 heads but key has 2: .*enable_gqa=True"):
        entmax_attention(q, k, v[:, :1])
    with pytest.raises(ValueError, match=r"key heads \(4\) must divide the number of query heads \(6\)"):
        entmax_attention(q, torch.randn(B, 4, K, D), v, enable_gqa=True)
    with pytest.raises(ValueError, match=r"query heads \(2\)"):  # more key heads than query heads
        entmax_attention(q[:, :2], torch.randn(B, 4, K, D), v[:, :2], enable_gqa=True)
    with pytest.raises(ValueError, match="needs a head dim"):
        entmax_attention(q[0, 0], k[0, 0], v[0, 0], enable_gqa=True)
    with pytest.raises(ValueError, match=r"expected shape \(6,\)"):  # one α per *query* head
        entmax_attention(q, k, v, enable_gqa=True, alpha=torch.tensor([1.5, 1.5]))


def _dropped_probs(alpha, dropout_p, seed, stats=False, mask=None, **kw):
    """Attention with value = identity: the output rows are the (dropped-out) probabilities themselves."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(B, H, Q, D, generator=g), 2 * torch.randn(B, H, K, D, generator=g)
    v = torch.eye(K).expand(B, H, K, K)
    torch.manual_seed(seed)
    return entmax_attention(q, k, v, mask, dropout_p, alpha=alpha, return_stats=stats, **kw), (q, k, v)


@pytest.mark.parametrize("stats", [False, True])
def test_dropout_equals_sdpa_with_the_same_seed(stats):
    """α = 1: dropout draws exactly what SDPA draws from the same seed (fast path and materialised path)."""
    g = torch.Generator().manual_seed(13)
    for mask in (None, _random_mask(), torch.randn(H, Q, K, generator=g)):
        res, (q, k, v) = _dropped_probs(1.0, 0.3, seed=5, stats=stats, mask=mask)
        out = res[0] if stats else res
        torch.manual_seed(5)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, mask, 0.3), atol=1e-6, rtol=1e-5)
    res, (q, k, v) = _dropped_probs(1.0, 1.0, seed=5, stats=stats)
    assert torch.equal(res[0] if stats else res, F.scaled_dot_product_attention(q, k, v, dropout_p=1.0))


@pytest.mark.parametrize("alpha", [1.5, 2.0, "per_head"])
def test_dropout_on_the_probabilities(alpha):
    """Every α: each weight is dropped with probability p, kept ones scaled by 1/(1 − p) (SDPA's torch.dropout);
    the stats hold the probabilities before dropout; the same seed gives the same draw; no dropout at p = 0."""
    a = torch.tensor([1.2, 1.5, 2.0]) if alpha == "per_head" else alpha
    p = 0.4
    (dropped, st), _ = _dropped_probs(a, p, seed=1, stats=True)
    (again, _), _ = _dropped_probs(a, p, seed=1, stats=True)
    assert torch.equal(dropped, again)
    kept = dropped != 0
    on_support = st.probs > 0
    assert not (kept & ~on_support).any()  # dropout never creates weight
    torch.testing.assert_close(dropped[kept], st.probs[kept] / (1 - p))
    n, n_dropped = 0, 0
    for seed in range(40):
        (d, st), _ = _dropped_probs(a, p, seed=seed, stats=True)
        n += int(on_support.sum())
        n_dropped += int((on_support & (d == 0)).sum())
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(n_dropped / n - p) < 5 * sigma, (n_dropped / n, n)
    undropped, _ = _dropped_probs(a, 0.0, seed=1)
    torch.testing.assert_close(undropped, st.probs)


@pytest.mark.filterwarnings("ignore:Lower right causal bias will produce NaNs")  # SDPA's NaN; ours: zeros
@pytest.mark.parametrize("alpha", [1.0, "stats", 1.5, 2.0, "per_head_one"])
def test_fully_masked_rows_zero_for_every_mask_kind(alpha):
    """A query with nothing to attend to gets a zero row and zero gradients (q, k, v, bias, α), whatever masks it:
    a bool row of False, a float row of -inf, a fully padded batch, the lower-right causal mask for Q > K.
    (torch 2.13's SDPA gives zeros too on CPU; its reference code and causal_lower_right's warning say NaN.)"""
    from torch.nn.attention.bias import causal_lower_right

    stats = alpha == "stats"
    a = {"stats": 1.0, "per_head_one": torch.tensor([1.0, 1.5, 2.0], requires_grad=True)}.get(alpha, alpha)
    g = torch.Generator().manual_seed(14)
    bool_row = torch.ones(Q, K, dtype=torch.bool)
    bool_row[2] = False
    float_row = torch.randn(H, Q, K, generator=g).masked_fill(~bool_row, float("-inf")).requires_grad_()
    padded = torch.ones(B, 1, 1, K, dtype=torch.bool)
    padded[1] = False

    def rows(q_len, index):  # (B, H, Q) bool: the queries with nothing to attend to
        dead = torch.zeros(B, H, q_len, dtype=torch.bool)
        dead[index] = True
        return dead

    cases = [
        (bool_row, Q, rows(Q, (..., 2))),
        (float_row, Q, rows(Q, (..., 2))),
        (padded, Q, rows(Q, 1)),
        (torch.where(padded, 0.0, float("-inf")), Q, rows(Q, 1)),
        (causal_lower_right(K + 2, K), K + 2, rows(K + 2, (..., slice(0, 2)))),  # query i sits at key i − 2
    ]
    for mask, q_len, dead in cases:
        q, k, v = _qkv(q_len=q_len, grad=True)
        res = entmax_attention(q, k, v, mask, alpha=a, return_stats=stats)
        out = res[0] if stats else res
        assert torch.isfinite(out).all() and (out[dead] == 0).all(), mask
        if stats:
            assert (res[1].probs[dead] == 0).all() and (res[1].support[dead] == 0).all()
        leaves = [t for t in (q, k, v, mask, a) if isinstance(t, torch.Tensor) and t.requires_grad]
        grads = torch.autograd.grad(out[dead].sum(), leaves, allow_unused=True, retain_graph=True)
        for t in grads:
            assert t is None or (t == 0).all()
        grads = torch.autograd.grad(out.square().sum(), leaves, allow_unused=True)
        assert all(t is None or torch.isfinite(t).all() for t in grads)


def test_backends_get_expanded_heads_and_float_masks_only_when_registered_for_them():
    seen = []

    def recording(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs):
        seen.append((tuple(k.shape), None if attn_mask is None else attn_mask.dtype))
        return attn_mod._reference_backend(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs)

    q, _, _ = _qkv()
    k, v = torch.randn(B, 1, K, D), torch.randn(B, 1, K, D)
    bias = torch.randn(Q, K)
    try:
        register_attention_backend("test_bool_only", recording, supports=lambda *a, **kw: True)
        out = entmax_attention(q, k, v, bias > 0, enable_gqa=True)  # bool mask: auto takes it
        assert seen == [((B, H, K, D), torch.bool)]
        torch.testing.assert_close(out, entmax_attention(q, k, v, bias > 0, enable_gqa=True, backend="reference"))
        entmax_attention(q, k, v, bias, enable_gqa=True)  # float mask: auto passes it over
        assert len(seen) == 1
        with pytest.raises(ValueError, match="'test_bool_only' takes boolean masks only"):
            entmax_attention(q, k, v, bias, enable_gqa=True, backend="test_bool_only")
        register_attention_backend("test_float", recording, supports=lambda *a, **kw: True, float_mask=True)
        out = entmax_attention(q, k, v, bias, enable_gqa=True)
        assert seen[-1] == ((B, H, K, D), torch.float32)
        torch.testing.assert_close(out, entmax_attention(q, k, v, bias, enable_gqa=True, backend="reference"))
    finally:
        attn_mod._BACKENDS.pop("test_bool_only", None)
        attn_mod._BACKENDS.pop("test_float", None)
    # the fused kernel takes boolean masks only: naming it with a float mask is a clear error (before Triton loads)
    with pytest.raises(ValueError, match="'triton' takes boolean masks only"):
        entmax_attention(q, k, v, bias, enable_gqa=True, backend="triton")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_float_mask(dtype):
    q, k, v = _qkv()
    bias = torch.randn(H, Q, K, generator=torch.Generator().manual_seed(15))
    for alpha in (1.0, 1.5):
        ref = entmax_attention(q, k, v, bias, alpha=alpha)
        for b in (bias, bias.to(dtype)):  # SDPA takes float32 masks or masks of the query's dtype
            out = entmax_attention(q.to(dtype), k.to(dtype), v.to(dtype), b, alpha=alpha)
            assert out.dtype == dtype
            torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


def test_fully_masked_rows_do_not_depend_on_sdpas_own_handling(monkeypatch):
    """The α = 1 fast path calls SDPA; some SDPA kernels (CUDA, older torch) return NaN for a query with no
    attendable key. With SDPA replaced by its docstring's plain-softmax definition (NaN there), rows are still
    zero and gradients finite, for bool and float masks."""

    def plain_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        s = q @ k.transpose(-2, -1) * scale
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
        return torch.softmax(s, -1) @ v  # NaN rows where everything is -inf

    monkeypatch.setattr(F, "scaled_dot_product_attention", plain_sdpa)
    keep = torch.ones(Q, K, dtype=torch.bool)
    keep[2] = False
    for mask in (keep, torch.randn(Q, K).masked_fill(~keep, float("-inf"))):
        q, k, v = _qkv(grad=True)
        assert torch.isnan(plain_sdpa(q, k, v, mask, scale=1.0)).any()  # the stand-in does give NaN
        out = entmax_attention(q, k, v, mask, alpha=1.0)
        assert torch.isfinite(out).all() and (out[..., 2, :] == 0).all()
        out.square().sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v)) and (q.grad[..., 2, :] == 0).all()


def test_shape_broadcast_helper_agrees_with_torch():
    """The plain-Python broadcast used for argument checks gives torch.broadcast_shapes' answer (None = error)."""
    rng = random.Random(0)
    for _ in range(2000):
        shapes = [tuple(rng.choice([1, 2, 3]) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 3))]
        try:
            expected = tuple(torch.broadcast_shapes(*shapes))
        except RuntimeError:
            expected = None
        assert attn_mod._broadcast(*shapes) == expected, shapes
