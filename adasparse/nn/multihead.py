"""Multi-head attention with an α-entmax normalizer (fixed or learned per head) and a KV cache.

The module owns the projections, the α and the cache; the math is :func:`adasparse.nn.attention.entmax_attention`.
The normalizer is chosen once in ``__init__`` (as x-transformers' ``Attend`` does), so ``forward`` has a
single path: ``self.alpha_module()`` returns either a Python float (fixed normalizer, which lets the
kernel use SDPA for softmax and the exact sparsemax/1.5-entmax solvers) or the learned α ``(H,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
from torch import Tensor, nn

from .activations import LearnableAlpha
from .attention import NORMALIZER_ALPHAS, AttentionStats, entmax_attention

__all__ = ["MultiheadAttention", "KVCache", "FixedAlpha", "canonical_normalizer"]

NORMALIZERS = ("softmax", "sparsemax", "entmax15", "learned")


def canonical_normalizer(normalizer: str | float, name: str = "normalizer") -> str | float:
    """Validate a normalizer setting: one of ``"softmax"``, ``"sparsemax"``, ``"entmax15"``, ``"learned"``
    or a number α ≥ 1 (returned as float).  Raises ``ValueError``/``TypeError`` otherwise."""
    if isinstance(normalizer, str):
        if normalizer not in NORMALIZERS:
            raise ValueError(f"{name}={normalizer!r} is not allowed; use one of {list(NORMALIZERS)} or a number α >= 1")
        return normalizer
    if isinstance(normalizer, bool) or not isinstance(normalizer, Real):
        raise TypeError(f"{name} must be a string in {list(NORMALIZERS)} or a number α >= 1, got {normalizer!r}")
    a = float(normalizer)
    if not math.isfinite(a) or a < 1.0:
        raise ValueError(f"{name} must be a finite number >= 1 (1 = softmax, 2 = sparsemax), got {normalizer!r}")
    return a


class FixedAlpha(nn.Module):
    """A constant α for every head: calling it returns the Python float (for the kernel);
    :attr:`alpha` returns it as an ``(H,)`` tensor (for reporting, like :class:`LearnableAlpha`)."""

    def __init__(self, value: float, num_heads: int):
        super().__init__()
        self.value = float(value)
        self.register_buffer("_alpha", torch.full((num_heads,), self.value), persistent=False)

    def forward(self) -> float:
        return self.value

    @property
    def alpha(self) -> Tensor:
        return self._alpha

    def extra_repr(self) -> str:
        return f"alpha={self.value}, heads={self._alpha.numel()}"


@dataclass
class KVCache:
    """Projected keys/values of one attention layer, kept across decoding steps.

    Attributes:
        k: keys ``(B, H, S, D)`` or None before the first step.
        v: values ``(B, H, S, Dv)`` or None.
        key_mask: ``(B, S)`` boolean, True = real key (may attend); None means all real.
        static: True for cross-attention: ``k``/``v`` are computed once from the memory and reused;
            False for self-attention: each call appends the new keys/values.

    :meth:`reorder` selects rows (e.g. surviving beam-search hypotheses).
    """

    k: Tensor | None = None
    v: Tensor | None = None
    key_mask: Tensor | None = None
    static: bool = False

    @property
    def length(self) -> int:
        """Number of cached keys ``S`` (0 when empty)."""
        return 0 if self.k is None else self.k.shape[-2]

    def reorder(self, index: Tensor) -> KVCache:
        """Keep rows ``index`` (a 1-D long tensor into the batch dim), in place; returns self."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)
        if self.key_mask is not None:
            self.key_mask = self.key_mask.index_select(0, index)
        return self


class MultiheadAttention(nn.Module):
    """Multi-head attention whose normalizer is softmax, sparsemax, 1.5-entmax, a fixed α, or a learned α per head.

    Args:
        embed_dim: model dimension ``E`` (query input and output size).
        num_heads: number of heads ``H``; ``embed_dim`` must be divisible by it.
        normalizer: ``"softmax"``, ``"sparsemax"``, ``"entmax15"``, a number α ≥ 1, or ``"learned"``
            (one α per head, ``α = clamp(1 + sigmoid(θ), alpha_min, alpha_max)``, Correia et al. 2019).
        alpha_init: for ``"learned"``: ``"normal"`` (θ ~ N(0, 1), the paper) or an α in (1, 2) for every head.
        alpha_min, alpha_max: range of the learned α (default [1.01, 2]).
        alpha_parametrization: ``"clamp"`` (the paper's) or ``"sigmoid"`` (no dead zone), see
            :class:`adasparse.nn.LearnableAlpha`.
        bias: biases in the projections.
        dropout: dropout on the attention probabilities (training only).
        kdim, vdim: input sizes of key and value (default ``embed_dim``), for cross-attention.
        batch_first: inputs are ``(B, L, E)`` (default) or ``(L, B, E)``.
        backend: attention backend name passed to :func:`entmax_attention` (default ``"auto"``).
        qk_transform: optional :class:`adasparse.nn.qk_transform.QKTransform` (RoPE, length scaling) applied
            to the projected queries and keys: ``positions(q, k_new, offset)`` before the cache,
            ``scale(q, mask, is_causal, k_len)`` right before the kernel.

    Call as ``out, stats = mha(query, key=None, value=None, ...)`` (see :meth:`forward`).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        normalizer: str | float = "learned",
        alpha_init: str | float = "normal",
        alpha_min: float = 1.01,
        alpha_max: float = 2.0,
        alpha_parametrization: str = "clamp",
        bias: bool = True,
        dropout: float = 0.0,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        backend: str = "auto",
        qk_transform: nn.Module | None = None,
    ):
        super().__init__()
        if not isinstance(embed_dim, int) or not isinstance(num_heads, int) or embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be positive ints, got {embed_dim!r} and {num_heads!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.backend = backend
        self.normalizer = canonical_normalizer(normalizer)

        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        # the normalizer, chosen once: calling alpha_module() gives the kernel's alpha (float or (H,) tensor)
        if self.normalizer == "learned":
            self.alpha_module: nn.Module = LearnableAlpha(
                num_heads, alpha_init, alpha_min, alpha_max, alpha_parametrization
            )
        else:
            value = NORMALIZER_ALPHAS.get(self.normalizer, self.normalizer)
            self.alpha_module = FixedAlpha(value, num_heads)
        self.qk_transform = qk_transform
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections and zero biases (as ``torch.nn.MultiheadAttention``)."""
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    @property
    def alpha(self) -> Tensor:
        """Current α of every head ``(H,)`` (constants for a fixed normalizer)."""
        return self.alpha_module.alpha

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)  # (B, H, L, D)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        return_stats: bool = False,
    ) -> tuple[Tensor, AttentionStats | None]:
        """Attend from ``query`` to ``key``/``value`` (self-attention when ``key`` is None).

        Args:
            query: ``(B, Q, E)`` (``(Q, B, E)`` if not ``batch_first``).
            key, value: ``(B, K, kdim)``/``(B, K, vdim)``; ``value`` defaults to ``key``; both default
                to ``query`` (self-attention).
            key_padding_mask: ``(B, K)`` boolean, **True = real key** (may attend).  With a self-attention
                cache, it covers only the new keys and is appended to the cached ones.
            attn_mask: boolean, True = may attend, broadcastable to ``(B, H, Q, K_total)``.
            is_causal: query ``i`` attends to keys ``j ≤ i`` (bottom-right aligned when a cache holds
                earlier positions, so step-by-step decoding equals the full forward).
            cache: a :class:`KVCache`, updated in place: self-attention appends the new keys/values;
                a ``static`` cache (cross-attention) is filled from ``key``/``value``/``key_padding_mask``
                on the first call and reused afterwards (those arguments are then ignored and may be None).
            return_stats: also return :class:`AttentionStats` (probabilities ``(B, H, Q, K)`` etc.).

        Returns:
            ``(out, stats)``: ``out`` ``(B, Q, E)`` (or ``(Q, B, E)``), ``stats`` None unless asked.
        """
        if not self.batch_first:
            query = query.transpose(0, 1)
            key = None if key is None else key.transpose(0, 1)
            value = None if value is None else value.transpose(0, 1)
        self_attention = key is None and not (cache is not None and cache.static)
        if key is None:
            key = query if self_attention else None
        if value is None:
            value = key
        b, q_len, _ = query.shape
        q = self._heads(self.q_proj(query))  # (B, H, Q, D)

        past = 0
        if cache is not None and cache.static and cache.k is not None:
            k, v, kpm = cache.k, cache.v, cache.key_mask  # (B, H, K, D): reused memory projections and mask
        else:
            if key is None:
                raise ValueError("cross-attention needs `key` (or a static cache already filled)")
            k = self._heads(self.k_proj(key))  # (B, H, K_new, D)
            v = self._heads(self.v_proj(value))  # (B, H, K_new, Dv)
            if self.qk_transform is not None:  # positions (RoPE) of the new queries and keys; the cache keeps them
                q, k = self.qk_transform.positions(q, k, cache.length if cache is not None and not cache.static else 0)
            kpm = key_padding_mask
            if cache is not None:
                past = cache.length
                if kpm is not None or cache.key_mask is not None:
                    new = kpm if kpm is not None else torch.ones(b, k.shape[-2], dtype=torch.bool, device=k.device)
                    old = cache.key_mask
                    if old is None and past:
                        old = torch.ones(b, past, dtype=torch.bool, device=k.device)
                    kpm = new if old is None else torch.cat([old, new], dim=1)  # (B, S + K_new)
                if past and not cache.static:
                    k = torch.cat([cache.k, k], dim=-2)  # (B, H, S + K_new, D)
                    v = torch.cat([cache.v, v], dim=-2)
                cache.k, cache.v, cache.key_mask = k, v, kpm

        mask = attn_mask
        if kpm is not None:
            if kpm.dtype != torch.bool or kpm.shape != (b, k.shape[-2]):
                raise ValueError(
                    f"key_padding_mask must be boolean (B, K) = ({b}, {k.shape[-2]}) with True = real key, "
                    f"got {kpm.dtype} {tuple(kpm.shape)}"
                )
            pad = kpm[:, None, None, :]  # (B, 1, 1, K)
            mask = pad if mask is None else mask & pad
        causal = is_causal
        if is_causal and past:  # bottom-right alignment: query i sits at position past + i
            q_pos = torch.arange(past, past + q_len, device=q.device)[:, None]
            cm = torch.arange(k.shape[-2], device=q.device)[None, :] <= q_pos  # (Q, K)
            mask = cm if mask is None else mask & cm
            causal = False
        if self.qk_transform is not None:  # length scaling: q × s(n), n = the keys each query attends to
            q = self.qk_transform.scale(q, mask, causal, k.shape[-2])
        res = entmax_attention(
            q,
            k,
            v,
            alpha=self.alpha_module(),
            attn_mask=mask,
            is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            return_stats=return_stats,
            backend=self.backend,
        )
        out, stats = res if return_stats else (res, None)
        out = self.out_proj(out.transpose(1, 2).reshape(b, q_len, self.embed_dim))  # (B, Q, E)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, stats

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, normalizer={self.normalizer!r}"
