"""Length scaling of attention scores: each query's scores multiplied by a factor that grows with ``log n``,
``n`` the number of keys that query may attend to.

As the context grows, softmax spreads its mass over more and more keys (its attention *disperses*);
multiplying the scores by a factor growing like ``log n`` keeps the gap between the top key and the rest
large enough to stay focused (Scalable-Softmax, Nakanishi 2025).  Sparse normalizers (α-entmax) give
exact zeros to low-scoring keys and need this less, but still gain from it (ASEntmax, Vasylenko et al.,
ICLR 2026).  Modes:

* ``"learned"``: ``s = δ + β · log n`` with ``δ``, ``β`` learned per head, initialised to ``δ = 1``,
  ``β = 0`` (plain attention at initialisation, exactly).  ASEntmax's form with its exponent on ``log n``
  fixed to 1 and its offset ``δ`` learned too.
* ``"ssmax"``: Scalable-Softmax's ``s = σ · log n`` with ``σ`` learned per head, initialised to 1 (as the
  ASEntmax code does for it); a query with a single key (``n = 1``) has all scores 0, which changes
  nothing for a single key.

Multiplying a query's scores ``q·kⱼ`` by ``s`` is the same as multiplying the query vector by ``s`` before
``q kᵀ``, so :meth:`LengthScaling.forward` scales ``q`` (after RoPE) and the attention kernels need no change:
the gradients of ``δ``, ``β``, ``σ`` (and of a learned α) come from autograd through the existing kernels.

``n`` is exact for every mask: causal rows count ``position + 1`` keys, padded keys are not counted, and
during cached decoding a new query at position ``past + i`` counts the cached keys too (the caller passes
the full mask of the keys it attends to).  A query with no attendable key uses ``n = 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LengthScaling", "attendable_keys", "LENGTH_SCALINGS"]

#: values of :class:`~adasparse.models.DecoderOnlyConfig`'s ``length_scaling``
LENGTH_SCALINGS = ("none", "learned", "ssmax")


def attendable_keys(mask: Tensor | None, is_causal: bool, q_len: int, k_len: int, device=None) -> Tensor:
    """Number of keys each query may attend to, as an int64 tensor broadcastable to ``(..., Q, 1)``.

    Args:
        mask: boolean, **True = may attend**, broadcastable to ``(B, H, Q, K)``, or None (all keys).
        is_causal: also mask keys ``j > i`` (top-left aligned, as in ``scaled_dot_product_attention``).
        q_len, k_len: ``Q`` and ``K``.
    """
    if mask is None:
        if not is_causal:
            return torch.full((1, 1), k_len, dtype=torch.long, device=device)
        return torch.arange(1, q_len + 1, device=device).clamp_max(k_len)[:, None]  # (Q, 1)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
    m = mask.reshape((1,) * max(0, 2 - mask.dim()) + tuple(mask.shape))  # at least (Q or 1, K or 1)
    if m.shape[-1] == 1:  # broadcast over keys
        m = m.expand(*m.shape[:-1], k_len)
    if not is_causal:
        return m.sum(-1, keepdim=True)
    if m.shape[-2] == 1:  # the same keys for every query (padding): a running count along the keys
        counts = m.cumsum(-1)  # (..., 1, K)
        idx = torch.arange(q_len, device=m.device).clamp_max(k_len - 1)
        return counts[..., 0, idx].unsqueeze(-1)  # (..., Q, 1)
    causal = torch.ones(q_len, k_len, dtype=torch.bool, device=m.device).tril()  # (Q, K)
    return (m & causal).sum(-1, keepdim=True)


class LengthScaling(nn.Module):
    """Per-head length scaling of the scores, applied to the queries: ``forward(q, mask, is_causal) → q · s``.

    Args:
        num_heads: ``H``; one ``δ``/``β`` (``"learned"``) or one ``σ`` (``"ssmax"``) per head.
        mode: ``"learned"`` (``s = δ + β log n``) or ``"ssmax"`` (``s = σ log n``); see the module docstring.

    ``q`` is ``(B, H, Q, D)``; ``mask`` and ``is_causal`` are those given to the attention kernel (so ``n``
    is the number of keys each query really attends to).  :meth:`factor` returns ``s`` ``(…, H, Q, 1)``.
    """

    def __init__(self, num_heads: int, mode: str = "learned"):
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if mode not in LENGTH_SCALINGS[1:]:
            raise ValueError(f"length scaling mode must be one of {list(LENGTH_SCALINGS[1:])}, got {mode!r}")
        self.num_heads = num_heads
        self.mode = mode
        if mode == "learned":
            self.delta = nn.Parameter(torch.ones(num_heads))
            self.beta = nn.Parameter(torch.zeros(num_heads))
        else:
            self.sigma = nn.Parameter(torch.ones(num_heads))

    def factor(self, log_n: Tensor) -> Tensor:
        """``s`` for ``log n`` of shape ``(Q, 1)`` or ``(..., H or 1, Q, 1)`` → ``(..., H, Q, 1)``."""
        if self.mode == "learned":
            return self.delta.view(-1, 1, 1) + self.beta.view(-1, 1, 1) * log_n  # (…, H, Q, 1)
        return self.sigma.view(-1, 1, 1) * log_n

    def forward(
        self, q: Tensor, mask: Tensor | None = None, is_causal: bool = False, k_len: int | None = None
    ) -> Tensor:
        """``q`` ``(..., H, Q, D)`` times ``s`` of each (head, query); ``k_len`` defaults to ``mask``'s last dim."""
        if q.dim() < 3 or q.shape[-3] != self.num_heads:
            raise ValueError(f"q must be (..., H={self.num_heads}, Q, D), got {tuple(q.shape)}")
        if k_len is None:
            if mask is None or mask.shape[-1] == 1:
                raise ValueError("k_len is needed when the mask does not give the number of keys")
            k_len = mask.shape[-1]
        n = attendable_keys(mask, is_causal, q.shape[-2], k_len, q.device)
        log_n = n.clamp_min(1).to(q.dtype).log()  # (Q, 1), (B, 1, Q, 1) or (B, H, Q, 1): the mask's dims
        return q * self.factor(log_n).to(q.dtype)  # (H, 1, 1) parameters broadcast against it → (…, H, Q, 1)

    def extra_repr(self) -> str:
        form = "delta + beta*log(n)" if self.mode == "learned" else "sigma*log(n)"
        return f"heads={self.num_heads}, mode={self.mode!r} ({form})"
