"""α-entmax attention: the functional kernel ``query, key, value, mask → output (, stats)``.

This file holds the math only; projections, the learned α and caches live in
:mod:`adasparse.nn.multihead`.  :func:`entmax_attention` is a drop-in for
:func:`torch.nn.functional.scaled_dot_product_attention` (SDPA): the same positional arguments
``(query, key, value, attn_mask, dropout_p, is_causal, *, scale, enable_gqa)`` with SDPA's meanings,
then our keyword options (``alpha``, ``return_stats``, ``backend``).  At ``alpha=1`` it *is* SDPA:

* ``scale`` and ``enable_gqa`` are keyword-only, as in SDPA (which refuses them positionally);
* shapes: query ``(..., Hq, Q, D)``, key ``(..., Hk, K, D)``, value ``(..., Hv, K, Dv)``, output
  ``(..., Hq, Q, Dv)``; any number of leading batch dims (they broadcast, as in SDPA); 2-D inputs
  ``(L, D)`` have no head dim;
* ``attn_mask``: boolean, **True = may attend**, or floating, **added to the scores** (``-inf``
  excludes a key; ALiBi, T5 relative bias, …); broadcastable to the scores ``(..., Hq, Q, K)``;
  a :class:`torch.nn.attention.bias.CausalBias` (``causal_upper_left`` / ``causal_lower_right``) is
  accepted too;
* ``is_causal``: query ``i`` may attend key ``j`` iff ``j ≤ i`` — **top-left aligned**, as SDPA (its
  reference is ``torch.ones(Q, K).tril(diagonal=0)``; for ``Q ≠ K`` this is *not* the bottom-right
  alignment a KV cache needs: pass ``causal_lower_right(Q, K)`` or a boolean mask for that).  SDPA
  documents ``attn_mask`` and ``is_causal`` as exclusive (torch 2.13 ands them for a 2-D mask and refuses
  a 4-D one); here they always combine: both must allow a key;
* ``enable_gqa``: key/value may have fewer heads than query (grouped-query attention): query head
  ``h`` uses key/value head ``h // (Hq / Hk)``, as SDPA's ``repeat_interleave``; Hk and Hv must
  divide Hq.  Without it, different head counts are an error (SDPA gives a broadcast error);
* ``scale`` defaults to ``1/√D``; ``dropout_p`` zeroes probabilities with ``F.dropout`` semantics
  (kept ones scaled by ``1/(1−p)``) whenever it is > 0 — SDPA has no training flag: pass
  ``dropout_p=0`` in eval mode.

A query with no attendable key returns a **zero** output row and zero gradient, for every α.
(SDPA's own reference code gives NaN there; torch 2.13's CPU kernels give zeros; we never rely on it.)

Backends: the computation is looked up by name in a small registry, so that faster kernels
(e.g. the fused Triton kernel on CUDA) can be plugged in without touching callers::

    register_attention_backend("mine", fn, supports=lambda q, k, v, alpha, **kw: q.is_cuda)

``backend="auto"`` picks the most recently registered backend whose ``supports`` predicate
accepts the inputs, falling back to ``"reference"`` (materialised scores + :func:`adasparse.entmax`,
which runs the fused CPU kernel on CPU, or SDPA itself when α = 1 and no probabilities are asked
for).  Backends see key/value already expanded to the query's heads; a backend gets floating
(additive) masks only if registered with ``float_mask=True`` — ``"reference"`` is; ``"triton"`` is
not, so ``auto`` leaves float masks to the reference path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.bias import CausalBias, CausalVariant

from ..ops.entmax import entmax
from ..ops.normalizers import NORMALIZER_ALPHAS, check_alpha_dtype, normalizer_alpha

__all__ = [
    "AttentionStats",
    "entmax_attention",
    "register_attention_backend",
    "available_attention_backends",
    "NORMALIZER_ALPHAS",
    "resolve_alpha",
]


@dataclass(frozen=True)
class AttentionStats:
    """What :func:`entmax_attention` returns with ``return_stats=True`` (for analysis).

    Attributes:
        probs: attention probabilities ``(..., Hq, Q, K)`` before dropout; rows of fully masked
            queries are all zero, masked keys (``False`` or ``-inf`` in the mask) get exactly 0.
        support: number of keys with non-zero weight per query ``(..., Hq, Q)`` (int64).
        alpha: the α used, detached: a 0-dim tensor for a fixed α, otherwise the given tensor
            reshaped to broadcast against ``(..., Hq, Q, 1)`` (e.g. ``(1, H, 1, 1)`` for one α per head).
    """

    probs: Tensor
    support: Tensor
    alpha: Tensor

    @property
    def probabilities(self) -> Tensor:
        """Alias of :attr:`probs`."""
        return self.probs


# --------------------------------------------------------------------------- arguments


def resolve_alpha(alpha: float | str | Tensor, num_heads: int | None = None, ndim: int = 4) -> float | Tensor:
    """Canonical α for the kernel: a Python float ≥ 1, or a tensor broadcastable to ``(..., H, Q, 1)``.

    Accepts a number, ``"softmax"`` (1), ``"entmax15"`` (1.5), ``"sparsemax"`` (2), or a floating
    tensor: 0-dim, one α per head ``(H,)``, or any shape broadcastable to the scores ``(..., H, Q, K)``
    (``ndim`` dims) with size 1 on the last (key) dim.

    Raises:
        ValueError: an unknown name, α < 1 or not finite, or a tensor of the wrong shape.
        TypeError: ``alpha`` is of another type.
    """
    if isinstance(alpha, Tensor):
        check_alpha_dtype(alpha)
        if alpha.dim() == 0 or (alpha.dim() == 1 and alpha.shape[0] == 1):
            return alpha.reshape((1,) * ndim)
        if alpha.dim() == 1:
            if ndim < 3:
                raise ValueError(
                    f"a 1-D alpha holds one α per head, but the inputs have no head dim (scores with {ndim} dims); "
                    f"got alpha of shape {tuple(alpha.shape)}"
                )
            if num_heads is not None and alpha.shape[0] != num_heads:
                raise ValueError(
                    f"a 1-D alpha holds one α per head: expected shape ({num_heads},), got {tuple(alpha.shape)}"
                )
            return alpha.reshape((1,) * (ndim - 3) + (-1, 1, 1))  # (1, H, 1, 1)
        if alpha.dim() > ndim:
            raise ValueError(f"alpha of shape {tuple(alpha.shape)} has more dims than the scores ({ndim})")
        if alpha.shape[-1] != 1:
            raise ValueError(
                f"alpha of shape {tuple(alpha.shape)} must have size 1 on the last (key) dim, "
                "e.g. (H, 1, 1) or (B, H, Q, 1)"
            )
        return alpha.reshape((1,) * (ndim - alpha.dim()) + tuple(alpha.shape))
    return normalizer_alpha(alpha, "alpha", tensor=True)


def _broadcast(*shapes) -> tuple[int, ...] | None:
    """The broadcast of the given shapes, or None if they do not broadcast (plain Python on tuples: a few µs,
    where ``torch.broadcast_shapes`` takes tens)."""
    n = max(len(s) for s in shapes)
    out = [1] * n
    for s in shapes:
        off = n - len(s)
        for i, d in enumerate(s):
            o = out[off + i]
            if d != o:
                if o == 1:
                    out[off + i] = d
                elif d != 1:
                    return None
    return tuple(out)


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., L, D) with at least 2 dims, got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"query, key and value must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"query and key need the same head dim, got query {tuple(q.shape)} and key {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"key and value need the same number of keys, got key {tuple(k.shape)} and value {tuple(v.shape)}"
        )


def _group_heads(q: Tensor, k: Tensor, v: Tensor, enable_gqa: bool) -> tuple[Tensor, Tensor]:
    """Key and value with the query's number of heads: SDPA's GQA (``repeat_interleave`` on dim -3)."""
    hq = q.shape[-3] if q.dim() >= 3 else None
    heads = {"key": k.shape[-3] if k.dim() >= 3 else None, "value": v.shape[-3] if v.dim() >= 3 else None}
    if not enable_gqa:
        for name, h in heads.items():
            if hq is not None and h is not None and h != hq and h != 1 and hq != 1:
                raise ValueError(
                    f"query has {hq} heads but {name} has {h}: for grouped-query attention pass enable_gqa=True "
                    f"(the number of key/value heads must divide the number of query heads)"
                )
        return k, v
    if hq is None or None in heads.values():
        raise ValueError(
            "enable_gqa=True needs a head dim (-3) on query, key and value, got "
            f"query {tuple(q.shape)}, key {tuple(k.shape)}, value {tuple(v.shape)}"
        )
    out = []
    for name, t in (("key", k), ("value", v)):
        h = t.shape[-3]
        if hq % h:
            raise ValueError(
                f"enable_gqa=True: the number of {name} heads ({h}) must divide the number of query heads ({hq})"
            )
        out.append(t if h == hq else t.repeat_interleave(hq // h, dim=-3))  # (..., Hq, K, ·)
    return out[0], out[1]


def _normalise_mask(attn_mask, is_causal: bool, q_len: int, k_len: int, device) -> tuple[Tensor | None, bool]:
    """``attn_mask`` as None, a bool or a floating tensor (CausalBias resolved), and ``is_causal``."""
    if attn_mask is None:
        return None, is_causal
    if isinstance(attn_mask, CausalBias):
        if (attn_mask.seq_len_q, attn_mask.seq_len_kv) != (q_len, k_len):
            raise ValueError(
                f"attn_mask is a CausalBias for (Q, K) = ({attn_mask.seq_len_q}, {attn_mask.seq_len_kv}), "
                f"but the inputs have (Q, K) = ({q_len}, {k_len})"
            )
        if attn_mask.variant == CausalVariant.UPPER_LEFT:
            return None, True
        diag = k_len - q_len  # lower right: query i sits at position K − Q + i
        return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=diag), is_causal
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(
            "attn_mask must be boolean (True = may attend) or floating (added to the scores, -inf excludes), "
            f"got dtype {attn_mask.dtype}"
        )
    return attn_mask, is_causal


def _is_float_mask(attn_mask: Tensor | None) -> bool:
    return attn_mask is not None and attn_mask.dtype != torch.bool


def combined_mask(
    attn_mask: Tensor | None, is_causal: bool, q_len: int, k_len: int, device: torch.device
) -> Tensor | None:
    """``attn_mask`` and the top-left causal mask, combined; None if neither.

    A boolean mask (True = may attend) is and-ed with the causal mask; a floating one gets ``-inf``
    above the causal diagonal.
    """
    if not is_causal:
        return attn_mask
    causal = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()  # (Q, K)
    if attn_mask is None:
        return causal
    if attn_mask.dtype == torch.bool:
        return attn_mask & causal
    return attn_mask.masked_fill(~causal, float("-inf"))


# --------------------------------------------------------------------------- backends

# A backend is called as fn(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs)
# with alpha already resolved (float, or tensor broadcastable to (..., H, Q, 1)), k and v with the heads of q,
# and attn_mask None, bool (True = may attend) or — for backends registered with float_mask=True — floating
# (added to the scores). It returns (output (..., H, Q, Dv), probs (..., H, Q, K) or None).
AttentionBackend = Callable[..., tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class _Backend:
    fn: AttentionBackend
    supports: Callable[..., bool] | None
    float_mask: bool


_BACKENDS: dict[str, _Backend] = {}


def register_attention_backend(
    name: str,
    fn: AttentionBackend,
    *,
    supports: Callable[..., bool] | None = None,
    overwrite: bool = False,
    float_mask: bool = False,
) -> None:
    """Register an attention backend under ``name``.

    Args:
        name: the name given as ``backend=`` (``"auto"`` is reserved).
        fn: ``fn(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs) -> (out, probs)``,
            with ``alpha`` a float or a tensor broadcastable to ``(..., H, Q, 1)``, ``k``/``v`` already
            expanded to the heads of ``q`` (GQA), ``attn_mask`` None, a boolean tensor (True = may attend)
            or, with ``float_mask=True``, a floating tensor added to the scores (``-inf`` excludes),
            broadcastable to ``(..., H, Q, K)``, and ``probs`` ``(..., H, Q, K)`` (may be None unless
            ``need_probs``).  ``is_causal`` is top-left aligned.  Fully masked queries must give zero rows.
        supports: optional predicate ``supports(q, k, v, alpha, attn_mask=..., is_causal=..., dropout_p=...,
            need_probs=...) -> bool``; when given, ``backend="auto"`` uses this backend for the inputs it
            accepts (most recently registered first).
        overwrite: allow replacing an existing backend.
        float_mask: the backend accepts floating (additive) masks.  Otherwise it never receives one:
            ``"auto"`` passes it over for float masks and naming it with a float mask raises ValueError.
    """
    if name == "auto":
        raise ValueError("'auto' is reserved: it picks among the registered backends")
    if name in _BACKENDS and not overwrite:
        raise ValueError(f"attention backend {name!r} is already registered (pass overwrite=True to replace it)")
    _BACKENDS[name] = _Backend(fn, supports, bool(float_mask))


def available_attention_backends() -> list[str]:
    """Names accepted by ``backend=`` (besides ``"auto"``)."""
    return list(_BACKENDS)


def _pick_backend(name: str, q, k, v, alpha, *, attn_mask, **kw) -> AttentionBackend:
    float_mask = _is_float_mask(attn_mask)
    if name == "auto":
        for cand, b in reversed(list(_BACKENDS.items())):
            if cand == "reference" or b.supports is None or (float_mask and not b.float_mask):
                continue
            if b.supports(q, k, v, alpha, attn_mask=attn_mask, **kw):
                return b.fn
        return _BACKENDS["reference"].fn
    if not isinstance(name, str) or name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {['auto', *_BACKENDS]}")
    b = _BACKENDS[name]
    if float_mask and not b.float_mask:
        raise ValueError(
            f"attention backend {name!r} takes boolean masks only (True = may attend), got a {attn_mask.dtype} "
            "(additive) attn_mask: use backend='auto' or 'reference'"
        )
    return b.fn


def _reference_backend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: float | Tensor,
    attn_mask: Tensor | None,
    is_causal: bool,
    scale: float,
    dropout_p: float,
    need_probs: bool,
) -> tuple[Tensor, Tensor | None]:
    """Materialised scores + :func:`adasparse.entmax`; SDPA for α = 1 when no probabilities are needed."""
    mask = combined_mask(attn_mask, is_causal, q.shape[-2], k.shape[-2], q.device)
    if isinstance(alpha, float) and alpha == 1.0 and not need_probs:
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale), None
        # some SDPA kernels give NaN for a fully masked row: let such rows attend anywhere, then zero them
        if mask.dtype == torch.bool:
            live = mask.any(-1, keepdim=True)  # (..., Q, 1)
            safe = mask | ~live
        else:
            live = (mask != float("-inf")).any(-1, keepdim=True)  # (..., Q, 1)
            safe = mask.masked_fill(~live, 0.0)
            if safe.dtype not in (torch.float32, q.dtype):  # SDPA takes float32 or the query's dtype
                safe = safe.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=dropout_p, scale=scale)
        return torch.where(live, out, torch.zeros((), dtype=out.dtype, device=out.device)), None
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (..., H, Q, K)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    if isinstance(alpha, float) and alpha == 1.0:
        if mask is None:
            probs = torch.softmax(scores, dim=-1)
        else:  # fully masked rows: softmax of zeros (no NaN anywhere, not even in backward), then zeroed
            live = (scores != float("-inf")).any(-1, keepdim=True)  # (..., H, Q, 1)
            probs = torch.softmax(scores.masked_fill(~live, 0.0), dim=-1) * live
    else:
        probs = entmax(scores, alpha, dim=-1)  # -inf → exactly 0; fully masked rows → 0
    p = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs
    out = torch.matmul(p.to(v.dtype), v)  # (..., H, Q, Dv)
    return out, probs


register_attention_backend("reference", _reference_backend, float_mask=True)


# --------------------------------------------------------------------------- the kernel


def _check_scale(scale, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, Tensor) and scale.numel() == 1:
        scale = scale.item()
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(float(scale)):
        raise TypeError(f"scale must be None or a finite number, got {scale!r}")
    return float(scale)


def entmax_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
    alpha: float | str | Tensor = 1.5,
    return_stats: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, AttentionStats]:
    r"""Scaled dot-product attention with α-entmax in place of softmax; a drop-in for SDPA.

    ``out = entmax_α(query keyᵀ · scale + mask) value``, where α-entmax (Peters et al. 2019; Correia et al.
    2019) is ``argmax_{p ∈ Δ} pᵀz + H_α(p)`` and gives exact zeros to low-scoring keys for α > 1.  The
    positional arguments are those of :func:`torch.nn.functional.scaled_dot_product_attention`, with its
    meanings (``scale`` and ``enable_gqa`` keyword-only, as in SDPA); ``alpha=1`` gives its result.

    Args:
        query: ``(..., Hq, Q, D)`` (any leading batch dims; ``(Q, D)`` too).
        key: ``(..., Hk, K, D)``; ``Hk = Hq``, or dividing ``Hq`` with ``enable_gqa``.
        value: ``(..., Hv, K, Dv)``; ``Hv = Hq``, or dividing ``Hq`` with ``enable_gqa``.
        attn_mask: boolean (True = may attend) or floating (added to the scores, ``-inf`` excludes — e.g.
            an ALiBi or T5 relative-position bias; it may require grad), broadcastable to the scores
            ``(..., Hq, Q, K)``; or a :class:`torch.nn.attention.bias.CausalBias`.
        dropout_p: dropout probability in [0, 1] on the attention probabilities (always applied when > 0,
            as in SDPA: pass 0 in eval mode).
        is_causal: query ``i`` attends keys ``j ≤ i`` (top-left aligned, as SDPA); combines with
            ``attn_mask``.
        scale: multiplier of ``query keyᵀ``, default ``1/√D``.
        enable_gqa: grouped-query attention: query head ``h`` uses key/value head ``h // (Hq / Hk)``.
        alpha: a number ≥ 1 (1 = softmax, 1.5 = 1.5-entmax, 2 = sparsemax), one of ``"softmax"``,
            ``"entmax15"``, ``"sparsemax"``, or a floating tensor: one α per (query) head ``(Hq,)`` or any
            shape broadcastable to ``(..., Hq, Q, K)`` with size 1 on ``K``.  A tensor may require grad
            (exact gradient, the paper's Proposition 1).
        return_stats: also return :class:`AttentionStats` (probabilities before dropout, support, α).
        backend: ``"auto"`` or a registered backend name (see :func:`available_attention_backends`).

    Returns:
        ``out`` ``(..., Hq, Q, Dv)`` in the dtype of ``value``, or ``(out, stats)`` with ``return_stats=True``.
        A query with no attendable key gets a zero output row and zero gradient.

    Raises:
        TypeError: a non-floating or mixed-dtype query/key/value, a mask of another dtype.
        ValueError: mismatched shapes (head dim, number of keys, heads without ``enable_gqa``, a mask that
            does not broadcast to the scores), ``dropout_p`` outside [0, 1], a bad α, an unknown backend.
    """
    _check_qkv(query, key, value)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, Real) or not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout_p must be a number in [0, 1], got {dropout_p!r}")
    dropout_p = float(dropout_p)
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
    sc = _check_scale(scale, query.shape[-1])
    key, value = _group_heads(query, key, value, bool(enable_gqa))
    q_len, k_len = query.shape[-2], key.shape[-2]
    batch = _broadcast(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    if batch is None:
        raise ValueError(
            "the leading (batch, head) dims of query, key and value must broadcast, got "
            f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
        )
    scores_shape = (*batch, q_len, k_len)
    attn_mask, is_causal = _normalise_mask(attn_mask, is_causal, q_len, k_len, query.device)
    if attn_mask is not None:
        if _broadcast(attn_mask.shape, scores_shape) != scores_shape:
            raise ValueError(
                f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to the scores "
                f"(..., Hq, Q, K) = {scores_shape}"
            )
    a = resolve_alpha(alpha, num_heads=batch[-1] if len(batch) else None, ndim=len(scores_shape))
    if isinstance(a, Tensor):
        rows = (*batch, q_len, 1)
        if _broadcast(a.shape, rows) != rows:
            raise ValueError(f"alpha of shape {tuple(alpha.shape)} does not broadcast to (..., Hq, Q, 1) = {rows}")
    fn = _pick_backend(
        backend,
        query,
        key,
        value,
        a,
        attn_mask=attn_mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        need_probs=return_stats,
    )
    out, probs = fn(query, key, value, a, attn_mask, is_causal, sc, dropout_p, return_stats)
    if not return_stats:
        return out
    if probs is None:
        raise RuntimeError(f"attention backend {backend!r} returned no probabilities although need_probs=True")
    a_used = a.detach() if isinstance(a, Tensor) else torch.tensor(a)
    return out, AttentionStats(probs=probs, support=(probs > 0).sum(-1), alpha=a_used)


def _register_triton() -> None:
    from ..kernels.dispatch import triton_backend, triton_supports

    register_attention_backend("triton", triton_backend, supports=triton_supports)


_register_triton()
