"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer"), applied to projected queries and keys.

Convention: the **half-split** one of GPT-NeoX and Llama (Hugging Face's ``rotate_half``): a head vector
``x = [x₁, x₂]`` (two halves of ``D/2``) at position ``m`` becomes ``x · cos(mθ) + rotate_half(x) · sin(mθ)``
with ``rotate_half(x) = [−x₂, x₁]`` and ``θ_i = base^(−2i/D)`` for ``i < D/2`` (each frequency used for the
pair ``(x_i, x_{i+D/2})``).  So the score ``q_m · k_n`` depends on ``m − n`` only.  The interleaved convention
of the RoFormer paper (pairs ``(x_{2i}, x_{2i+1})``) is the same rotation on permuted coordinates; weights
trained with one do not transfer to the other.

Positions start at ``offset`` (the number of cached keys during incremental decoding), so a query decoded
step by step gets the same rotation as in the full forward.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor, nn

__all__ = ["RotaryEmbedding", "rotate_half", "apply_rotary", "POSITIONS"]

#: position schemes of :class:`~adasparse.models.DecoderOnlyConfig`: absolute sinusoidal embeddings added to
#: the token embeddings (Vaswani et al. 2017), rotary (RoPE) on queries and keys, or none (NoPE: causal
#: masking alone tells positions apart, Kazemnejad et al. 2023)
POSITIONS = ("sinusoidal", "rope", "none")


def rotate_half(x: Tensor) -> Tensor:
    """``[x₁, x₂] → [−x₂, x₁]`` on the last dim (halves of size ``D/2``)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x · cos + rotate_half(x) · sin`` with ``cos``/``sin`` ``(L, D)`` broadcast over ``x`` ``(..., L, D)``."""
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """RoPE on heads ``(..., L, D)``: ``forward(q, k, offset=0) → (q, k)`` rotated at positions
    ``offset, …, offset + L − 1`` (``q`` and ``k`` may have different lengths; both start at ``offset``).

    Args:
        head_dim: ``D``, even.
        base: the wavelength base (10000 in RoFormer and Llama 2).

    No parameters and no persistent buffers: the angles are computed in float32 for the positions asked
    (any length, no table to outgrow) and cast to the input dtype.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RoPE needs a positive even head dim, got {head_dim!r}")
        if isinstance(base, bool) or not isinstance(base, Real) or not math.isfinite(base) or base <= 1:
            raise ValueError(f"RoPE base must be a finite number > 1, got {base!r}")
        self.head_dim = head_dim
        self.base = float(base)
        inv = self.base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
        self.register_buffer("inv_freq", inv, persistent=False)

    def cos_sin(self, offset: int, length: int, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """``(cos, sin)``, each ``(length, D)``, for positions ``offset … offset + length − 1``."""
        inv = self.inv_freq.to(device) if device is not None else self.inv_freq
        pos = torch.arange(offset, offset + length, dtype=torch.float32, device=inv.device)
        ang = torch.outer(pos, inv)  # (L, D/2)
        ang = torch.cat((ang, ang), dim=-1)  # (L, D): frequency i for coordinates i and i + D/2
        return ang.cos().to(dtype), ang.sin().to(dtype)

    def rotate(self, x: Tensor, offset: int = 0) -> Tensor:
        """One tensor ``(..., L, D)`` rotated at positions ``offset …``."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"RoPE was built for head dim {self.head_dim}, got a tensor of shape {tuple(x.shape)}")
        cos, sin = self.cos_sin(offset, x.shape[-2], x.device, x.dtype)
        return apply_rotary(x, cos, sin)

    def forward(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        return self.rotate(q, offset), self.rotate(k, offset)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}, convention=half-split"
