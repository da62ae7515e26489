"""Sparsemax and 1.5-entmax with the ``entmax`` package's API (``entmax.activations``), on adasparse's exact kernels.

``k`` is the package's partial-sort size: it tells the package how many top scores to sort first (doubling
when the support is larger), so it changes the package's speed, never its result. adasparse's solver does not
sort, so ``k`` is checked (None or a positive int) and has no further effect.

Beyond the package: fully masked rows (all ``-inf``) give zeros instead of NaN, and float16/bfloat16 are
computed in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function

from ...ops import entmax15 as _entmax15
from ...ops import sparsemax as _sparsemax
from ._args import check_dim, check_input, check_k, from_rows, to_rows
from ._solvers import entmax_backward_rows

__all__ = [
    "sparsemax",
    "entmax15",
    "Sparsemax",
    "Entmax15",
    "SparsemaxFunction",
    "Entmax15Function",
    "_sparsemax_threshold_and_support",
    "_entmax_threshold_and_support",
]


def _apply_fast(fn, X: Tensor, dim: int) -> Tensor:
    if X.dim() == 0:  # one entry: probability 1, as torch.softmax gives
        return fn(X.unsqueeze(0), 0).squeeze(0)
    return fn(X, dim)


def sparsemax(X: Tensor, dim: int = -1, k: int | None = None) -> Tensor:
    r"""Sparsemax along ``dim``: the Euclidean projection onto the simplex,

        ``argmin_p ‖p − X‖²  s.t.  p ≥ 0, Σ p = 1``  (Martins & Astudillo 2016),

    i.e. ``p = [X − τ]₊`` with τ such that ``Σ p = 1``; exact, with exact zeros.

    Args:
        X: scores, any floating dtype; ``-inf`` entries get exactly 0.
        dim: the dimension that sums to one.
        k: the package's partial-sort size (None or a positive int); it does not change the result.
    """
    check_input(X)
    dim = check_dim(X, dim)
    check_k(k)
    return _apply_fast(_sparsemax, X, dim)


def entmax15(X: Tensor, dim: int = -1, k: int | None = None) -> Tensor:
    r"""1.5-entmax along ``dim``:

        ``argmax_p ⟨X, p⟩ + H_{1.5}(p)  s.t.  p ≥ 0, Σ p = 1``  (Peters, Niculae & Martins 2019),

    with ``H_{1.5}`` the Tsallis entropy, i.e. ``p = [X/2 − τ]₊²``; exact, with exact zeros.

    Args:
        X: scores, any floating dtype; ``-inf`` entries get exactly 0.
        dim: the dimension that sums to one.
        k: the package's partial-sort size (None or a positive int); it does not change the result.
    """
    check_input(X)
    dim = check_dim(X, dim)
    check_k(k)
    return _apply_fast(_entmax15, X, dim)


class _MappingFunction(Function):
    """Common autograd for the Function classes: forward by adasparse's kernel, backward s⊙g − s (Σ s⊙g)/Σ s."""

    _alpha = 2.0
    _fast = staticmethod(_sparsemax)

    @classmethod
    def _forward(cls, ctx, X, dim, k):
        check_input(X)
        dim = check_dim(X, dim)
        check_k(k)
        out = _apply_fast(cls._fast, X, dim)
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @classmethod
    def backward(cls, ctx, dY):
        (Y,) = ctx.saved_tensors
        p, g = to_rows(Y, ctx.dim), to_rows(dY, ctx.dim)
        gz, _ = entmax_backward_rows(p, g, torch.full_like(p[:, :1], cls._alpha), False)
        return from_rows(gz, dY, ctx.dim), None, None


class SparsemaxFunction(_MappingFunction):
    """``SparsemaxFunction.apply(X, dim=-1, k=None)``: sparsemax as an autograd Function (the package's class)."""

    _alpha = 2.0
    _fast = staticmethod(_sparsemax)

    @classmethod
    def forward(cls, ctx, X, dim=-1, k=None):
        return cls._forward(ctx, X, dim, k)


class Entmax15Function(_MappingFunction):
    """``Entmax15Function.apply(X, dim=0, k=None)``: 1.5-entmax as an autograd Function (the package's class,
    whose ``apply`` defaults to ``dim=0``; :func:`entmax15` defaults to ``dim=-1``)."""

    _alpha = 1.5
    _fast = staticmethod(_entmax15)

    @classmethod
    def forward(cls, ctx, X, dim=0, k=None):
        return cls._forward(ctx, X, dim, k)


class Sparsemax(nn.Module):
    """Sparsemax along ``dim`` (see :func:`sparsemax`); ``k`` as there."""

    def __init__(self, dim: int = -1, k: int | None = None):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {dim!r}")
        self.dim = dim
        self.k = check_k(k)

    def forward(self, X: Tensor) -> Tensor:
        return sparsemax(X, dim=self.dim, k=self.k)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, k={self.k}"


class Entmax15(nn.Module):
    """1.5-entmax along ``dim`` (see :func:`entmax15`); ``k`` as there."""

    def __init__(self, dim: int = -1, k: int | None = None):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {dim!r}")
        self.dim = dim
        self.k = check_k(k)

    def forward(self, X: Tensor) -> Tensor:
        return entmax15(X, dim=self.dim, k=self.k)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, k={self.k}"


# --- the package's threshold helpers (private there too, but its own tests import them) ------------------------


def _sorted_with_ranks(X: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    xs, _ = torch.sort(X, dim=dim, descending=True)
    shape = [1] * X.dim()
    shape[dim] = -1
    rho = torch.arange(1, X.shape[dim] + 1, device=X.device, dtype=X.dtype).view(shape)
    return xs, rho


def _sparsemax_threshold_and_support(X: Tensor, dim: int = -1, k: int | None = None) -> tuple[Tensor, Tensor]:
    """Sparsemax threshold τ and support size of ``X`` along ``dim`` (both with ``dim`` kept, size 1).

    τ solves Σ [X − τ]₊ = 1. Sorted decreasingly, the top ρ entries are the support while
    1 + ρ x_(ρ) > Σ_{j ≤ ρ} x_(j); then τ = (Σ_{j ≤ |S|} x_(j) − 1)/|S|. ``k`` (the package's partial-sort size)
    is checked and does not change the result.
    """
    check_input(X)
    dim = check_dim(X, dim)
    check_k(k)
    xs, rho = _sorted_with_ranks(X, dim)
    cums = xs.cumsum(dim) - 1
    size = (rho * xs > cums).sum(dim=dim, keepdim=True)
    tau = cums.gather(dim, (size - 1).clamp_min(0)) / size.clamp_min(1).to(X.dtype)
    return tau, size


def _entmax_threshold_and_support(X: Tensor, dim: int = -1, k: int | None = None) -> tuple[Tensor, Tensor]:
    """Threshold τ and support size of ``p = [X − τ]₊²`` (1.5-entmax of ``2X``) along ``dim``, ``dim`` kept.

    On a support made of the top ρ entries, Σ (x_(j) − τ)² = 1 gives τ_ρ = μ_ρ − sqrt((1 − ρ σ²_ρ)/ρ)
    (μ, σ² the mean and variance of those entries, the root clamped at the mean where 1 < ρ σ²_ρ); the support
    is the set of ranks with τ_ρ ≤ x_(ρ). ``k`` is checked and does not change the result.
    """
    check_input(X)
    dim = check_dim(X, dim)
    check_k(k)
    xs, rho = _sorted_with_ranks(X, dim)
    mean = xs.cumsum(dim) / rho
    var = (xs * xs).cumsum(dim) / rho - mean * mean
    tau = mean - ((1 - rho * var) / rho).clamp_min(0).sqrt()
    size = (tau <= xs).sum(dim=dim, keepdim=True)
    return tau.gather(dim, (size - 1).clamp_min(0)), size
