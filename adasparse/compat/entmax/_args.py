"""Argument checks and row reshaping shared by the compat mappings and losses.

Every check raises a ``TypeError``/``ValueError`` (``IndexError`` for a dim, as PyTorch does) that says
what was given and what is allowed, where the ``entmax`` package would fail deep inside (or not at all).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
from torch import Tensor

# The package documents "for float32, 24 iterations should suffice for machine precision": from this many
# bisection steps on, its answer is the converged one (to its own tolerance), so an exact solver may serve it.
CONVERGED_N_ITER = 24


def check_input(X, name: str = "X") -> None:
    if not isinstance(X, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(X).__name__}")
    if not X.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), got {X.dtype}")


def check_dim(X: Tensor, dim) -> int:
    """``dim`` in ``[0, X.dim())`` (a 0-dim tensor has one dim, as for ``torch.softmax``)."""
    if isinstance(dim, bool) or not isinstance(dim, Integral):
        raise TypeError(f"dim must be an int, got {dim!r}")
    n = max(X.dim(), 1)
    if not -n <= dim < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return int(dim) % n


def check_k(k) -> int | None:
    """The package's partial-sort size: None or a positive int. It changes how the package sorts, not the result."""
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise TypeError(f"k must be None or a positive int (how many top scores to partial-sort), got {k!r}")
    if k < 1:
        raise ValueError(f"k must be None or a positive int (how many top scores to partial-sort), got {k}")
    return int(k)


def check_n_iter(n_iter) -> int | None:
    """None (iterate to convergence) or a positive int: the number of bisection steps."""
    if n_iter is None:
        return None
    if isinstance(n_iter, bool) or not isinstance(n_iter, Integral):
        raise TypeError(f"n_iter must be a positive int (bisection steps) or None, got {n_iter!r}")
    if n_iter < 1:
        raise ValueError(f"n_iter must be a positive int (bisection steps) or None, got {n_iter}")
    return int(n_iter)


def converged(n_iter: int | None) -> bool:
    """Whether the package, given ``n_iter`` steps, returns the converged solution (to its own tolerance)."""
    return n_iter is None or n_iter >= CONVERGED_N_ITER


def check_param(value, name: str, *, lower: float, lower_ok: bool, hint: str) -> Tensor | float:
    """A number or a floating tensor (integer tensors are converted, as the package's arithmetic would).

    Its values must be finite and ``> lower`` (``>= lower`` when ``lower_ok``). Tensor values are read (one
    synchronisation), as the package's users expect an error, not NaN, for a bad α or budget.
    """
    allowed = f"finite and {'>=' if lower_ok else '>'} {lower:g} ({hint})"
    if isinstance(value, Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a number or a real tensor, got a {value.dtype} tensor")
        if not value.is_floating_point():
            value = value.to(torch.get_default_dtype())
        v = value.detach()
        if v.numel():
            bad = ~torch.isfinite(v) | ((v < lower) if lower_ok else (v <= lower))
            if bool(bad.any()):
                raise ValueError(f"{name} must be {allowed}; found {v[bad].flatten()[0].item():.6g}")
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or (v < lower if lower_ok else v <= lower):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return v


def in_range(value: Tensor | float, lo: float, hi: float) -> bool:
    """Whether every value of ``value`` lies in ``[lo, hi]``."""
    if isinstance(value, Tensor):
        v = value.detach()
        return bool(((v >= lo) & (v <= hi)).all())
    return lo <= value <= hi


def row_shape(X: Tensor, dim: int) -> list[int]:
    """X's shape with ``dim`` set to 1: the shape a per-row parameter is expanded to (the package's rule)."""
    shape = list(X.shape) if X.dim() else [1]
    shape[dim] = 1
    return shape


def param_rows(value: Tensor | float, X: Tensor, dim: int, name: str) -> Tensor:
    """A number or tensor → one float64 value per row, shape ``(rows, 1)`` (rows = X's other dims, in order)."""
    shape = row_shape(X, dim)
    if not isinstance(value, Tensor):
        rows = math.prod(shape)
        return torch.full((rows, 1), float(value), dtype=torch.float64, device=X.device)
    if value.dim() > len(shape):
        raise ValueError(f"{name} of shape {tuple(value.shape)} has more dims than X of shape {tuple(X.shape)}")
    try:
        v = value.detach().expand(*shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} must expand to {tuple(shape)} (X's shape {tuple(X.shape)} with "
            f"size 1 along dim={dim}, the dim that sums to one)"
        ) from None
    return v.movedim(dim, -1).reshape(-1, 1).to(device=X.device, dtype=torch.float64)


def to_rows(X: Tensor, dim: int, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """``X`` with ``dim`` moved last, as a 2-D ``(rows, n)`` tensor (a 0-dim X is one row of one entry)."""
    z = X.reshape(1) if X.dim() == 0 else X
    z = z.movedim(dim, -1)
    z = z.reshape(-1, z.shape[-1])
    return z if dtype is None else z.to(dtype)


def from_rows(p: Tensor, X: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """Inverse of :func:`to_rows`: back to X's shape (and ``dtype``, X's by default)."""
    if X.dim() == 0:
        return p.reshape(()).to(dtype or X.dtype)
    moved = list(X.movedim(dim, -1).shape)
    return p.reshape(moved).movedim(-1, dim).to(dtype or X.dtype)


def rows_to_param_grad(g: Tensor, X: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """A per-row gradient ``(rows, 1)`` → X's shape with size 1 on ``dim`` (autograd sums it to the parameter's shape)."""
    shape = row_shape(X, dim)
    moved = [s for i, s in enumerate(shape) if i != dim] + [1]
    return g.reshape(moved).movedim(-1, dim).reshape(shape).to(dtype)
