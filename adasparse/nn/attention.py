"""α-entmax attention: the functional kernel ``q, k, v, mask → output (, stats)``.

This file holds the math only; projections, the learned α and caches live in
:mod:`adasparse.nn.multihead`.  Conventions follow :func:`torch.nn.functional.scaled_dot_product_attention`:

* shapes: q ``(B, H, Q, D)``, k ``(B, H, K, D)``, v ``(B, H, K, Dv)``, output ``(B, H, Q, Dv)``;
  any number of leading batch dims is allowed as long as the last three are ``(H, ·, ·)``;
* ``attn_mask`` is boolean, **True = may attend**, broadcastable to ``(B, H, Q, K)``;
* ``is_causal`` masks key ``j > i`` for query ``i`` (top-left aligned, as in SDPA);
* default scale ``1/√D``; dropout is applied to the attention probabilities.

Unlike SDPA, a query with no attendable key returns a **zero** output row (and zero gradient),
never NaN, for every normalizer, and ``attn_mask`` may be combined with ``is_causal``.

Backends: the computation is looked up by name in a small registry, so that faster kernels
(e.g. a fused Triton kernel on CUDA) can be plugged in without touching callers::

    register_attention_backend("mine", fn, supports=lambda q, k, v, alpha, **kw: q.is_cuda)

``backend="auto"`` picks the most recently registered backend whose ``supports`` predicate
accepts the inputs, falling back to ``"reference"`` (materialised scores + :func:`adasparse.entmax`,
or :func:`~torch.nn.functional.scaled_dot_product_attention` when α = 1 and no probabilities are asked for).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.entmax import entmax

__all__ = [
    "AttentionStats",
    "entmax_attention",
    "register_attention_backend",
    "available_attention_backends",
    "NORMALIZER_ALPHAS",
    "resolve_alpha",
]

#: names accepted wherever a fixed normalizer is given, and the α each one means
NORMALIZER_ALPHAS: dict[str, float] = {"softmax": 1.0, "entmax15": 1.5, "sparsemax": 2.0}


@dataclass(frozen=True)
class AttentionStats:
    """What :func:`entmax_attention` returns with ``return_stats=True`` (for analysis).

    Attributes:
        probs: attention probabilities ``(B, H, Q, K)`` before dropout; rows of fully masked
            queries are all zero, masked keys get exactly 0.
        support: number of keys with non-zero weight per query ``(B, H, Q)`` (int64).
        alpha: the α used, detached: a 0-dim tensor for a fixed α, otherwise the given tensor
            reshaped to broadcast against ``(B, H, Q, 1)`` (e.g. ``(1, H, 1, 1)`` for one α per head).
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
    """Canonical α for the kernel: a Python float ≥ 1, or a tensor broadcastable to ``(B, H, Q, 1)``.

    Accepts a number, ``"softmax"`` (1), ``"entmax15"`` (1.5), ``"sparsemax"`` (2), or a floating
    tensor: 0-dim, one α per head ``(H,)``, or any shape broadcastable to ``(B, H, Q, K)`` with
    size 1 on the last (key) dim.

    Raises:
        ValueError: an unknown name, α < 1 or not finite, or a tensor of the wrong shape.
        TypeError: ``alpha`` is of another type.
    """
    if isinstance(alpha, str):
        if alpha not in NORMALIZER_ALPHAS:
            raise ValueError(f"alpha={alpha!r} is not a known normalizer; allowed: {sorted(NORMALIZER_ALPHAS)}")
        return NORMALIZER_ALPHAS[alpha]
    if isinstance(alpha, Tensor):
        if not alpha.is_floating_point():
            raise TypeError(f"alpha must be a floating-point tensor, got dtype {alpha.dtype}")
        if alpha.dim() == 0:
            return alpha.reshape((1,) * ndim)
        if alpha.dim() == 1:
            if num_heads is not None and alpha.shape[0] not in (1, num_heads):
                raise ValueError(
                    f"a 1-D alpha holds one α per head: expected shape ({num_heads},), got {tuple(alpha.shape)}"
                )
            return alpha.reshape((1,) * (ndim - 3) + (-1, 1, 1))  # (1, H, 1, 1)
        if alpha.dim() > ndim:
            raise ValueError(f"alpha of shape {tuple(alpha.shape)} has more dims than the scores (B, H, Q, K)")
        if alpha.shape[-1] != 1:
            raise ValueError(
                f"alpha of shape {tuple(alpha.shape)} must have size 1 on the last (key) dim, "
                "e.g. (H, 1, 1) or (B, H, Q, 1)"
            )
        return alpha.reshape((1,) * (ndim - alpha.dim()) + tuple(alpha.shape))
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(
            f"alpha must be a number, one of {sorted(NORMALIZER_ALPHAS)}, or a floating tensor; "
            f"got {type(alpha).__name__}"
        )
    a = float(alpha)
    if not math.isfinite(a) or a < 1.0:
        raise ValueError(f"alpha must be a finite number >= 1 (1 = softmax, 2 = sparsemax), got {alpha!r}")
    return a


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 3:
            raise ValueError(f"{name} must have shape (..., H, L, D), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k need the same head dim, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v need the same number of keys, got k {tuple(k.shape)} and v {tuple(v.shape)}")


def combined_mask(
    attn_mask: Tensor | None, is_causal: bool, q_len: int, k_len: int, device: torch.device
) -> Tensor | None:
    """``attn_mask`` (bool, True = may attend) and the top-left causal mask, combined; None if neither."""
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise TypeError(f"attn_mask must be a boolean tensor (True = may attend), got dtype {attn_mask.dtype}")
    if not is_causal:
        return attn_mask
    causal = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()  # (Q, K)
    return causal if attn_mask is None else attn_mask & causal


# --------------------------------------------------------------------------- backends

# A backend is called as fn(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs)
# with alpha already resolved (float, or tensor broadcastable to (B, H, Q, 1)) and attn_mask bool or None.
# It returns (output (B, H, Q, Dv), probs (B, H, Q, K) or None); probs is required when need_probs.
AttentionBackend = Callable[..., tuple[Tensor, Tensor | None]]
_BACKENDS: dict[str, tuple[AttentionBackend, Callable[..., bool] | None]] = {}


def register_attention_backend(
    name: str, fn: AttentionBackend, *, supports: Callable[..., bool] | None = None, overwrite: bool = False
) -> None:
    """Register an attention backend under ``name``.

    Args:
        name: the name given as ``backend=`` (``"auto"`` is reserved).
        fn: ``fn(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs) -> (out, probs)``,
            with ``alpha`` a float or a tensor broadcastable to ``(B, H, Q, 1)``, ``attn_mask`` a
            boolean tensor (True = may attend) or None, and ``probs`` ``(B, H, Q, K)`` (may be None
            unless ``need_probs``).  Fully masked queries must give zero rows.
        supports: optional predicate ``supports(q, k, v, alpha, attn_mask=..., is_causal=..., dropout_p=...,
            need_probs=...) -> bool``; when given, ``backend="auto"`` uses this backend for the inputs it
            accepts (most recently registered first).
        overwrite: allow replacing an existing backend.
    """
    if name == "auto":
        raise ValueError("'auto' is reserved: it picks among the registered backends")
    if name in _BACKENDS and not overwrite:
        raise ValueError(f"attention backend {name!r} is already registered (pass overwrite=True to replace it)")
    _BACKENDS[name] = (fn, supports)


def available_attention_backends() -> list[str]:
    """Names accepted by ``backend=`` (besides ``"auto"``)."""
    return list(_BACKENDS)


def _pick_backend(name: str, q, k, v, alpha, **kw) -> AttentionBackend:
    if name == "auto":
        for cand, (fn, supports) in reversed(list(_BACKENDS.items())):
            if cand != "reference" and supports is not None and supports(q, k, v, alpha, **kw):
                return fn
        return _BACKENDS["reference"][0]
    try:
        return _BACKENDS[name][0]
    except KeyError:
        raise ValueError(f"unknown attention backend {name!r}; available: {['auto', *_BACKENDS]}") from None


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
        # SDPA gives NaN (or garbage) for a fully masked row: let such rows attend anywhere, then zero them
        live = mask.any(-1, keepdim=True)  # (B, H, Q, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~live, dropout_p=dropout_p, scale=scale)
        return torch.where(live, out, torch.zeros((), dtype=out.dtype, device=out.device)), None
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, Q, K)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if isinstance(alpha, float) and alpha == 1.0:
        if mask is None:
            probs = torch.softmax(scores, dim=-1)
        else:  # fully masked rows: softmax of zeros (no NaN anywhere, not even in backward), then zeroed
            live = mask.any(-1, keepdim=True)  # (B, H, Q, 1)
            probs = torch.softmax(scores.masked_fill(~live, 0.0), dim=-1) * live
    else:
        probs = entmax(scores, alpha, dim=-1)  # -inf → exactly 0; fully masked rows → 0
    p = F.dropout(probs, p=dropout_p) if dropout_p > 0 else probs
    out = torch.matmul(p.to(v.dtype), v)  # (B, H, Q, Dv)
    return out, probs


register_attention_backend("reference", _reference_backend)


# --------------------------------------------------------------------------- the kernel


def entmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    alpha: float | str | Tensor = 1.5,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_stats: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, AttentionStats]:
    r"""Scaled dot-product attention with α-entmax in place of softmax.

    ``out = entmax_α(q kᵀ · scale, masked) v``, where α-entmax (Peters et al. 2019; Correia et al. 2019)
    is ``argmax_{p ∈ Δ} pᵀz + H_α(p)`` and gives exact zeros to low-scoring keys for α > 1.

    Args:
        q: queries ``(B, H, Q, D)`` (more or fewer leading batch dims are fine).
        k: keys ``(B, H, K, D)``.
        v: values ``(B, H, K, Dv)``.
        alpha: a number ≥ 1 (1 = softmax, 1.5 = 1.5-entmax, 2 = sparsemax), one of ``"softmax"``,
            ``"entmax15"``, ``"sparsemax"``, or a floating tensor: one α per head ``(H,)`` or any
            shape broadcastable to ``(B, H, Q, K)`` with size 1 on ``K``.  A tensor may require grad
            (exact gradient, the paper's Proposition 1).
        attn_mask: boolean, True = may attend, broadcastable to ``(B, H, Q, K)``.
        is_causal: also mask keys after each query (top-left aligned, as in SDPA); may be combined
            with ``attn_mask``.
        scale: multiplier of the scores, default ``1/√D``.
        dropout_p: dropout on the probabilities (pass 0 in eval mode).
        return_stats: also return :class:`AttentionStats` (probabilities, support size, α).
        backend: ``"auto"`` or a registered backend name (see :func:`available_attention_backends`).

    Returns:
        ``out`` ``(B, H, Q, Dv)`` in the dtype of ``v``, or ``(out, stats)`` with ``return_stats=True``.
        A query with no attendable key gets a zero output row and zero gradient.
    """
    _check_qkv(q, k, v)
    a = resolve_alpha(alpha, num_heads=q.shape[-3], ndim=q.dim())
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise TypeError(f"attn_mask must be a boolean tensor (True = may attend), got dtype {attn_mask.dtype}")
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    fn = _pick_backend(
        backend, q, k, v, a, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p, need_probs=return_stats
    )
    out, probs = fn(q, k, v, a, attn_mask, is_causal, sc, dropout_p, return_stats)
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
