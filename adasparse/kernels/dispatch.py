"""The ``"triton"`` backend of :func:`adasparse.entmax_attention`, chosen by ``backend="auto"`` on CUDA.

It accepts what the fused kernel handles — CUDA tensors (on CPU, under ``TRITON_INTERPRET=1``, only with ``backend="triton"``), head dim
≤ 128, one dtype for q/k/v, q/k/v of one shape ``(B, H, L, D)`` (GQA key/value arrive already expanded to the
query's heads), α a number or one α per head in [1, 2], boolean masks that are a key-padding mask
(broadcastable to ``(B, 1, 1, K)``) and/or causal, no dropout, no probabilities asked for — and leaves
everything else, floating (additive) masks included, to the reference path. Triton is imported only when a
CUDA call asks for it.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

__all__ = ["triton_backend", "triton_supports"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _key_padding(attn_mask: Tensor | None, B: int, K: int) -> Tensor | None | bool:
    """(B, K) key-padding mask from a mask broadcastable to (B, 1, 1, K); False if it is another kind of mask."""
    if attn_mask is None:
        return None
    m = attn_mask
    while m.dim() < 4:
        m = m.unsqueeze(0)
    if m.dim() != 4 or m.shape[1] != 1 or m.shape[2] != 1 or m.shape[3] != K or m.shape[0] not in (1, B):
        return False
    return m[:, 0, 0, :].expand(B, K)


def _alpha_per_head(alpha, H: int):
    """A float, or an (H,) tensor, from the resolved α; None if α varies along other dims."""
    if not isinstance(alpha, Tensor):
        return float(alpha)
    a = alpha
    if a.numel() == 1:
        return a.reshape(1).expand(H)
    if a.dim() == 4 and a.shape[0] == 1 and a.shape[1] == H and a.shape[2] == 1 and a.shape[3] == 1:
        return a.reshape(H)
    return None


def triton_supports(q, k, v, alpha, *, attn_mask=None, is_causal=False, dropout_p=0.0, need_probs=False) -> bool:
    if need_probs or dropout_p > 0 or q.dim() != 4:
        return False
    # "auto" picks the kernel on CUDA only; on CPU (Triton's interpreter) it must be asked for by name
    if not q.is_cuda or not _triton_available():
        return False
    B, H, Lq, D = q.shape
    if k.shape[:2] != (B, H) or v.shape != k.shape or Lq == 0 or k.shape[2] == 0:
        return False
    if attn_mask is not None and attn_mask.dtype != torch.bool:  # additive masks: the reference path
        return False
    if D > 128 or v.shape[-1] != D or q.dtype not in _DTYPES or not (q.dtype == k.dtype == v.dtype):
        return False
    if _key_padding(attn_mask, B, k.shape[-2]) is False:
        return False
    a = _alpha_per_head(alpha, H)
    if a is None:
        return False
    if isinstance(a, float):
        return 1.0 <= a <= 2.0
    if torch.compiler.is_compiling():
        return False
    return bool(((a >= 1) & (a <= 2)).all())


def triton_backend(q, k, v, alpha, attn_mask, is_causal, scale, dropout_p, need_probs):
    from .triton_entmax_attention import triton_entmax_attention

    if need_probs or dropout_p > 0:
        raise ValueError("the triton backend returns no probabilities and has no dropout: use backend='reference'")
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise ValueError(f"the triton backend takes boolean masks only, got a {attn_mask.dtype} (additive) mask")
    B, H = q.shape[0], q.shape[1]
    kpm = _key_padding(attn_mask, B, k.shape[-2])
    if kpm is False:
        raise ValueError("the triton backend takes key-padding (B, 1, 1, K) and causal masks only")
    a = _alpha_per_head(alpha, H)
    if a is None:
        raise ValueError("the triton backend takes one α per head (H,) or a number")
    out = triton_entmax_attention(q, k, v, a, key_padding_mask=kpm, is_causal=is_causal, scale=scale)
    return out, None
