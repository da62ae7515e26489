"""The hook of the attention module for what acts on projected queries and keys before the kernel.

:class:`QKTransform` holds a :class:`~adasparse.nn.positions.RotaryEmbedding` and/or a
:class:`~adasparse.nn.length_scaling.LengthScaling`; the attention module calls it twice::

    q, k = qk_transform.positions(q, k_new, offset)      # after projecting, before the KV cache (it keeps rotated keys)
    q = qk_transform.scale(q, mask, is_causal, k_len)     # right before the kernel, with the kernel's final mask

``offset`` is the number of keys already cached (0 without a cache), so incremental decoding rotates each
new query and key at its true position; ``mask``/``is_causal`` are exactly what the kernel receives, so the
length scaling counts the keys each query really attends to.
"""

from __future__ import annotations

from torch import Tensor, nn

from .length_scaling import LengthScaling
from .positions import RotaryEmbedding

__all__ = ["QKTransform"]


class QKTransform(nn.Module):
    """RoPE and/or length scaling on the heads ``(B, H, L, D)`` of one attention layer (either may be None)."""

    def __init__(self, rotary: RotaryEmbedding | None = None, scaling: LengthScaling | None = None):
        super().__init__()
        if rotary is not None and not isinstance(rotary, RotaryEmbedding):
            raise TypeError(f"rotary must be a RotaryEmbedding or None, got {type(rotary).__name__}")
        if scaling is not None and not isinstance(scaling, LengthScaling):
            raise TypeError(f"scaling must be a LengthScaling or None, got {type(scaling).__name__}")
        self.rotary = rotary
        self.scaling = scaling

    def positions(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        """New queries ``(B, H, Q, D)`` and keys ``(B, H, K_new, D)`` at positions ``offset, offset + 1, …``."""
        return (q, k) if self.rotary is None else self.rotary(q, k, offset)

    def scale(self, q: Tensor, mask: Tensor | None, is_causal: bool, k_len: int) -> Tensor:
        """Queries times their length factor ``s(n)`` (identity without scaling)."""
        return q if self.scaling is None else self.scaling(q, mask, is_causal, k_len)
