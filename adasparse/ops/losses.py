"""Fenchel–Young losses of the α-entmax family (Blondel, Martins & Niculae 2020).

For scores z, a target distribution y and p = entmax_α(z)::

    L(z; y) = H_α(p) − H_α(y) + (p − y)ᵀz   ≥ 0,     ∂L/∂z = p − y,

with H_α the Tsallis entropy (Shannon at α = 1, where L is the cross-entropy). (Written with
Ω = −H_α this is the usual Ω(y) + Ω*(z) − yᵀz.) L is zero exactly when p = y, which for a
one-hot y happens as soon as the target's score beats the others by a margin (α > 1), unlike
the cross-entropy. Because p maximises pᵀz + H_α(p), the envelope theorem gives the gradient in
α without differentiating p: ∂L/∂α = ∂_α H_α(p) − ∂_α H_α(y).

``sparsemax_loss`` and ``entmax15_loss`` are the ``entmax`` package's names, so they return what the
package returns: **one loss per sample** (``reduction="none"``), and take its partial-sort argument ``k``
third; ``entmax_loss`` follows them. Pass ``reduction="mean"`` or ``"sum"`` for a scalar.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._solver import entmax_forward
from .entmax import _check_k, _check_scores
from .normalizers import check_alpha_tensor, check_alpha_value

__all__ = ["entmax_loss", "sparsemax_loss", "entmax15_loss"]

_REDUCTIONS = ("mean", "sum", "none")
# the C-level Function.apply, which skips the per-call signature binding (≈ 35 µs) that functorch needs
_C_APPLY = getattr(torch._C._FunctionBase, "__dict__", {}).get("apply")


# 1/k! for k = 2 … 18: e^t − 1 − t = t² Σ_k t^{k−2}/k! for |t| < 1 (truncation below 1e-16 relative)
_PHI_TERMS = [1.0 / math.factorial(k) for k in range(2, 19)]


def _phi(t: Tensor) -> Tensor:
    """e^t − 1 − t for any real t, accurate relative to its value for small |t| (its series below 1)."""
    poly = torch.full_like(t, _PHI_TERMS[-1])
    for c in reversed(_PHI_TERMS[:-1]):
        poly = poly * t + c
    return torch.where(t.abs() < 1, t * t * poly, torch.expm1(t) - t)


def _tsallis(p: Tensor, a: Tensor) -> Tensor:
    """H_α(p) over the last dim (keepdim), ``a`` (..., 1), any α > 0; the Shannon entropy where α = 1.

    Written −Σ p·expm1((α−1) log p)/(α(α−1)) (equal to (1 − Σ p^α)/(α(α−1)) as Σ p = 1), which does not cancel
    as α → 1.
    """
    logp = torch.where(p > 0, p.log(), 0.0)
    am1 = a - 1
    safe = torch.where(am1 == 0, torch.ones_like(am1), am1)
    e = torch.where(p > 0, torch.expm1(am1 * logp), 0.0)
    general = -(p * e).sum(-1, keepdim=True) / (a * safe)
    return torch.where(am1 == 0, -(p * logp).sum(-1, keepdim=True), general)


def _tsallis_dalpha(p: Tensor, a: Tensor) -> Tensor:
    """∂H_α(p)/∂α with p fixed (keepdim), any α > 0.

    With t = (α−1) log p, E = e^t − 1 and K = Σ p E/(α−1): ∂H/∂α = K/α² − Σ p (t E − φ(t))/(α (α−1)²),
    φ(t) = e^t − 1 − t; each term is free of cancellation (t E − φ = t²/2 + …), so float32 stays accurate next to
    α = 1, where the textbook form loses everything (α = 1.0002: off by 0.8 in float32). At α = 1 exactly, the limit
    Σ p log p − ½ Σ p log² p.
    """
    logp = torch.where(p > 0, p.log(), 0.0)
    am1 = a - 1
    safe = torch.where(am1 == 0, torch.ones_like(am1), am1)
    t = am1 * logp
    e = torch.expm1(t)
    k = (p * e).sum(-1, keepdim=True) / safe
    general = k / a**2 - (p * (t * e - _phi(t))).sum(-1, keepdim=True) / (a * safe**2)
    limit = (p * logp).sum(-1, keepdim=True) - 0.5 * (p * logp * logp).sum(-1, keepdim=True)
    return torch.where(am1 == 0, limit, general)


def _tsallis_value(p: Tensor, alpha: float) -> Tensor:
    """H_α(p) over the last dim for a Python α (fewer ops than :func:`_tsallis` for the named α)."""
    if alpha == 2.0:
        return (1 - (p * p).sum(-1, keepdim=True)) / 2
    if alpha == 1.5:
        return (1 - (p * p.sqrt()).sum(-1, keepdim=True)) / 0.75
    if alpha == 1.0:
        return -(p * torch.where(p > 0, p.log(), 0.0)).sum(-1, keepdim=True)
    return (1 - p.pow(alpha).sum(-1, keepdim=True)) / (alpha * (alpha - 1))


class _FYLoss(torch.autograd.Function):
    """z (N, C), y (N, C) target distribution, a (N, 1) → per-row loss (N,).

    ``smoothed``: y is not one-hot (H_α(y) ≠ 0; for a one-hot y it is 0 at every α, as is its α-derivative).
    """

    @staticmethod
    def forward(z: Tensor, y: Tensor, a: Tensor, alpha_value: float, is_tensor: bool, smoothed: bool) -> Tensor:
        p = entmax_forward(z, a if is_tensor else None, alpha_value).to(z.dtype)
        loss = _tsallis(p, a) if is_tensor else _tsallis_value(p, alpha_value)
        if smoothed:
            loss = loss - _tsallis(y, a)
        loss = loss + ((p - y) * torch.nan_to_num(z, neginf=0.0)).sum(-1, keepdim=True)
        return loss.squeeze(-1), p

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, y, a, _, _, smoothed = inputs
        ctx.smoothed = smoothed
        ctx.save_for_backward(output[1], y, a)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, g: Tensor, _gp):
        p, y, a = ctx.saved_tensors
        g = g.unsqueeze(-1)
        gz = (p - y) * g if ctx.needs_input_grad[0] else None
        ga = None
        if ctx.needs_input_grad[2]:
            ga = _tsallis_dalpha(p, a)
            if ctx.smoothed:
                ga = ga - _tsallis_dalpha(y, a)
            ga = ga * g
        return gz, None, ga, None, None, None


def _fy_apply(*args):
    """``_FYLoss.apply`` without its per-call signature binding in plain eager mode (as :mod:`.entmax` does)."""
    if _C_APPLY is None or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return _FYLoss.apply(*args)
    return _C_APPLY.__get__(None, _FYLoss)(*args)


def entmax_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float | Tensor = 1.5,
    ignore_index: int = -100,
    reduction: str = "none",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Fenchel–Young loss of α-entmax: ``H_α(p) − H_α(y) + (p − y)ᵀz`` with ``p = entmax_α(z)``.

    Args:
        logits: scores ``(..., C)``; classes on the **last** dim. ``-inf`` masks a class (a target
            on a masked class costs ``inf``).
        target: class indices ``(...)`` (int64); entries equal to ``ignore_index`` add nothing.
        alpha: number ≥ 1 (1 = cross-entropy, ``F.cross_entropy``) or tensor broadcastable to ``(..., 1)``;
            may require grad (the loss then gives ∂L/∂α).
        reduction: ``"none"`` (the default, as in the ``entmax`` package: one loss per sample, shape
            ``(...)``, 0 where ignored), ``"mean"`` (over non-ignored targets) or ``"sum"``.
        label_smoothing: ε in [0, 1): the target becomes y = (1 − ε)·onehot + ε/C, as in ``F.cross_entropy``.
            The loss stays a Fenchel–Young loss, 0 when p = y, so it is ``F.cross_entropy(...,
            label_smoothing=ε)`` **minus the constant H_α(y)** at α = 1 (the same gradient p − y); the constant
            is left out because with a learned α it would pull α toward less smoothing (its ∂/∂α ≠ 0).

    The gradient in the logits is exactly ``p − y`` (times the reduction's weight).
    """
    _check_scores(logits, "logits")
    if target.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) or target.dtype == torch.bool:
        raise TypeError(f"target must hold class indices (an integer tensor), got {target.dtype}")
    if logits.dim() < 1 or target.shape != logits.shape[:-1]:
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal logits shape without its last (class) dim, "
            f"{tuple(logits.shape[:-1])}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not (0.0 <= float(label_smoothing) < 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    C = logits.shape[-1]
    z = logits.reshape(-1, C)
    t = target.reshape(-1)
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= C))
    if bool(bad.any()):
        raise ValueError(f"target contains class index {int(t[bad][0])} outside [0, {C}) (ignore_index={ignore_index})")
    cd = torch.float64 if z.dtype == torch.float64 else torch.float32
    tc = torch.where(keep, t, torch.zeros_like(t))
    y = torch.zeros(z.shape, dtype=cd, device=z.device).scatter_(1, tc.unsqueeze(1), 1.0)
    if label_smoothing > 0:
        y = y * (1 - label_smoothing) + label_smoothing / C
    if isinstance(alpha, Tensor):
        check_alpha_tensor(alpha)
        a = alpha.to(cd).reshape((1,) * (logits.dim() - alpha.dim()) + tuple(alpha.shape))
        if a.shape[-1] != 1:
            raise ValueError(f"alpha of shape {tuple(alpha.shape)} must have size 1 on the class dim")
        try:
            a = a.expand(*logits.shape[:-1], 1).reshape(-1, 1)
        except RuntimeError:
            raise ValueError(
                f"alpha of shape {tuple(alpha.shape)} does not broadcast to the logits' shape {tuple(logits.shape)} "
                f"with size 1 on the class dim, i.e. to {(*logits.shape[:-1], 1)}"
            ) from None
        loss, _ = _fy_apply(z.to(cd), y, a, 0.0, True, label_smoothing > 0)
    else:
        av = check_alpha_value(alpha)
        a = torch.full((1, 1), av, dtype=cd, device=z.device).expand(z.shape[0], 1)
        loss, _ = _fy_apply(z.to(cd), y, a, av, False, label_smoothing > 0)
    # a target on a masked class (score −inf) cannot be predicted: its loss is +inf (the masked classes' 0 · (−inf)
    # terms are dropped above, which would otherwise hide it)
    target_masked = z.gather(1, tc.unsqueeze(1)).squeeze(1) == -math.inf
    loss = torch.where(keep & target_masked, math.inf, loss)
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    if reduction == "none":
        return loss.reshape(target.shape).to(logits.dtype)
    if reduction == "sum":
        return loss.sum().to(logits.dtype)
    return (loss.sum() / keep.sum().clamp_min(1)).to(logits.dtype)


def sparsemax_loss(
    logits: Tensor,
    target: Tensor,
    k: int | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "none",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Sparsemax loss: :func:`entmax_loss` with α = 2 (Martins & Astudillo 2016); one loss per sample by default.

    ``k`` is the ``entmax`` package's partial-sort size, accepted for its callers: the exact solver here
    does not sort, so it has no effect on the result (checked: None or a positive int).
    """
    _check_k(k)
    return entmax_loss(
        logits, target, 2.0, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )


def entmax15_loss(
    logits: Tensor,
    target: Tensor,
    k: int | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "none",
    label_smoothing: float = 0.0,
) -> Tensor:
    """1.5-entmax loss: :func:`entmax_loss` with α = 1.5 (Peters, Niculae & Martins 2019); one loss per sample
    by default. ``k`` as in :func:`sparsemax_loss` (no effect on the result)."""
    _check_k(k)
    return entmax_loss(
        logits, target, 1.5, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing
    )
