"""The ``entmax`` package's losses (``entmax.losses``): Fenchel–Young losses of its mappings, as functions that
return **one loss per sample** and as modules with its ``ignore_index=-100`` and ``reduction="elementwise_mean"``.

For scores X (n_samples, n_classes), integer targets y and p the mapping of X, each loss is
``Ω(p) + (p − e_y)ᵀX`` with Ω the mapping's regulariser (Tsallis entropy H_α for entmax/sparsemax,
``1 − ‖p‖_α`` for normmax; both vanish at a one-hot target), ≥ 0, with gradient ``p − e_y`` in X
(Blondel, Martins & Niculae 2020).

The sparsemax, 1.5-entmax and α-entmax losses with α in [1, 2] (and ``n_iter`` ≥ 24, the converged regime)
run on adasparse's Fenchel–Young losses (:mod:`adasparse.ops.losses`); the others (normmax, α < 1 or > 2, few
steps) on this package's own solvers. Beyond the package: a tensor α that requires grad gets its gradient
(by the envelope theorem, ∂L/∂α = ∂Ω_α(p)/∂α at fixed p; the package returns none), a target on a masked
class (score ``-inf``) costs ``inf`` instead of NaN, and a target equal to a negative ``ignore_index`` is ignored
(where the package fails with an index error).
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
from torch import Tensor, nn
from torch.autograd import Function

from ...ops import losses as _ops_losses
from ._args import check_input, check_k, check_n_iter, check_param, converged, in_range, param_rows
from ._solvers import normmax_omega, normmax_omega_dalpha, tsallis, tsallis_dalpha
from .activations import entmax15, sparsemax
from .root_finding import _ALPHA_HINT, _entmax_values, normmax_bisect

__all__ = [
    "sparsemax_loss",
    "entmax15_loss",
    "sparsemax_bisect_loss",
    "entmax_bisect_loss",
    "normmax_bisect_loss",
    "SparsemaxLoss",
    "SparsemaxBisectLoss",
    "Entmax15Loss",
    "EntmaxBisectLoss",
    "NormmaxBisectLoss",
    "SparsemaxLossFunction",
    "SparsemaxBisectLossFunction",
    "Entmax15LossFunction",
    "EntmaxBisectLossFunction",
    "NormmaxBisectLossFunction",
]

_REDUCTIONS = ("elementwise_mean", "sum", "none", "mean")  # "mean": PyTorch's name for elementwise_mean


def _check_loss_inputs(X, target) -> None:
    check_input(X)
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_classes), got shape {tuple(X.shape)}")
    if (
        not isinstance(target, Tensor)
        or target.dtype.is_floating_point
        or target.is_complex()
        or target.dtype == torch.bool
    ):
        got = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"target must be an integer tensor of class indices, got {got}")
    if target.shape != X.shape[:1]:
        raise ValueError(f"target must have shape (n_samples,) = {tuple(X.shape[:1])}, got {tuple(target.shape)}")
    if target.numel():
        bad = (target < 0) | (target >= X.shape[1])
        if bool(bad.any()):
            raise ValueError(f"target contains class index {int(target[bad][0])} outside [0, {X.shape[1]})")


def _check_alpha(alpha):
    return check_param(alpha, "alpha", lower=0.0, lower_ok=False, hint=_ALPHA_HINT)


class _FenchelYoungLossFunction(Function):
    """Per-sample ``Ω(p) + (p − e_y)ᵀX``; backward ``g (p − e_y)`` in X and ``g ∂Ω/∂α`` in a tensor α.

    Subclasses give ``_project`` (p, float64) and ``_omega``/``_omega_dalpha`` (per row, p fixed).
    """

    @staticmethod
    def _project(X: Tensor, alpha, options) -> Tensor:
        raise NotImplementedError

    _omega = staticmethod(tsallis)
    _omega_dalpha = staticmethod(tsallis_dalpha)

    @classmethod
    def _forward(cls, ctx, X, target, alpha, options):
        _check_loss_inputs(X, target)
        a = param_rows(alpha, X, 1, "alpha")
        p = cls._project(X, alpha, options).to(torch.float64)
        x = X.to(torch.float64)
        y = torch.zeros_like(p).scatter_(1, target.unsqueeze(1), 1.0)
        loss = cls._omega(p, a) + ((p - y) * torch.nan_to_num(x, neginf=0.0)).sum(1)
        loss = torch.where(x.gather(1, target.unsqueeze(1)).squeeze(1) == -math.inf, math.inf, loss)
        ctx.alpha_dtype = alpha.dtype if isinstance(alpha, Tensor) else None
        ctx.save_for_backward(p - y, p, a)
        return loss.to(X.dtype)

    @classmethod
    def _backward(cls, ctx, g, n_none):
        d, p, a = ctx.saved_tensors
        gx = (g.to(d.dtype).unsqueeze(1) * d).to(g.dtype) if ctx.needs_input_grad[0] else None
        ga = None
        if len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2]:
            ga = (g.to(p.dtype) * cls._omega_dalpha(p, a)).unsqueeze(1).to(ctx.alpha_dtype)
        return (gx, None, ga) + (None,) * n_none


class SparsemaxLossFunction(_FenchelYoungLossFunction):
    """``SparsemaxLossFunction.apply(X, target, k=None)``: per-sample sparsemax loss (``k`` checked, no effect)."""

    @staticmethod
    def _project(X, alpha, options):
        return sparsemax(X, dim=-1, k=options)

    @classmethod
    def forward(cls, ctx, X, target, k=None):
        return cls._forward(ctx, X, target, 2.0, check_k(k))

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g, 0)[:3]


class SparsemaxBisectLossFunction(SparsemaxLossFunction):
    """``SparsemaxBisectLossFunction.apply(X, target, n_iter=50)``: the sparsemax loss (exact; ``n_iter`` checked)."""

    @classmethod
    def forward(cls, ctx, X, target, n_iter=50):
        check_n_iter(n_iter)
        return cls._forward(ctx, X, target, 2.0, None)


class Entmax15LossFunction(_FenchelYoungLossFunction):
    """``Entmax15LossFunction.apply(X, target, k=None)``: per-sample 1.5-entmax loss (``k`` checked, no effect)."""

    @staticmethod
    def _project(X, alpha, options):
        return entmax15(X, dim=-1, k=options)

    @classmethod
    def forward(cls, ctx, X, target, k=None):
        return cls._forward(ctx, X, target, 1.5, check_k(k))

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g, 0)[:3]


class EntmaxBisectLossFunction(_FenchelYoungLossFunction):
    """``EntmaxBisectLossFunction.apply(X, target, alpha=1.5, n_iter=50)``: per-sample α-entmax loss, any α > 0."""

    @staticmethod
    def _project(X, alpha, options):
        return _entmax_values(X, alpha, 1, options, True)

    @classmethod
    def forward(cls, ctx, X, target, alpha=1.5, n_iter=50):
        return cls._forward(ctx, X, target, _check_alpha(alpha), check_n_iter(n_iter))

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g, 1)


class NormmaxBisectLossFunction(_FenchelYoungLossFunction):
    """``NormmaxBisectLossFunction.apply(X, target, alpha=2, n_iter=50)``: per-sample α-normmax loss."""

    _omega = staticmethod(normmax_omega)
    _omega_dalpha = staticmethod(normmax_omega_dalpha)

    @staticmethod
    def _project(X, alpha, options):
        with torch.no_grad():
            return normmax_bisect(X, alpha.detach() if isinstance(alpha, Tensor) else alpha, -1, options)

    @classmethod
    def forward(cls, ctx, X, target, alpha=2, n_iter=50):
        return cls._forward(ctx, X, target, _check_alpha(alpha), check_n_iter(n_iter))

    @classmethod
    def backward(cls, ctx, g):
        return cls._backward(ctx, g, 1)


def sparsemax_loss(X: Tensor, target: Tensor, k: int | None = None) -> Tensor:
    """Sparsemax loss, one per sample: ``X`` (n_samples, n_classes), ``target`` (n_samples,) class indices in
    [0, n_classes). ``k`` (the package's partial-sort size) is checked and does not change the result."""
    _check_loss_inputs(X, target)
    check_k(k)
    return _ops_losses.sparsemax_loss(X, target, reduction="none")


def sparsemax_bisect_loss(X: Tensor, target: Tensor, n_iter: int | None = 50) -> Tensor:
    """Sparsemax loss, one per sample (exact: the package's bisection always converges; ``n_iter`` is checked)."""
    _check_loss_inputs(X, target)
    check_n_iter(n_iter)
    return _ops_losses.sparsemax_loss(X, target, reduction="none")


def entmax15_loss(X: Tensor, target: Tensor, k: int | None = None) -> Tensor:
    """1.5-entmax loss, one per sample (arguments as :func:`sparsemax_loss`)."""
    _check_loss_inputs(X, target)
    check_k(k)
    return _ops_losses.entmax15_loss(X, target, reduction="none")


def entmax_bisect_loss(X: Tensor, target: Tensor, alpha=1.5, n_iter: int | None = 50) -> Tensor:
    """α-entmax loss, one per sample. ``alpha``: a number > 0 or a tensor that expands to (n_samples, 1); it may
    require grad. ``n_iter`` as in :func:`~adasparse.compat.entmax.root_finding.entmax_bisect`."""
    _check_loss_inputs(X, target)
    n_iter = check_n_iter(n_iter)
    alpha = _check_alpha(alpha)
    if converged(n_iter) and in_range(alpha, 1.0, 2.0):
        if isinstance(alpha, Tensor):
            param_rows(alpha, X, 1, "alpha")  # the package's shape rule, with its message
        return _ops_losses.entmax_loss(X, target, alpha, reduction="none")
    return EntmaxBisectLossFunction.apply(X, target, alpha, n_iter)


def normmax_bisect_loss(X: Tensor, target: Tensor, alpha=2, n_iter: int | None = 50) -> Tensor:
    """α-normmax loss, one per sample (arguments as :func:`entmax_bisect_loss`)."""
    return NormmaxBisectLossFunction.apply(X, target, alpha, n_iter)


class _GenericLoss(nn.Module):
    """Common module: per-sample ``self.loss(X, target)``, targets equal to ``ignore_index`` zeroed, then reduced.

    ``reduction``: ``"elementwise_mean"`` (the default: the sum over non-ignored samples divided by their number;
    NaN when all are ignored, as in the package), ``"sum"``, ``"none"`` (one loss per sample); ``"mean"`` is accepted
    for ``"elementwise_mean"``.
    """

    def __init__(self, ignore_index: int = -100, reduction: str = "elementwise_mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS[:3]}, got {reduction!r}")
        bad_tensor = isinstance(ignore_index, Tensor) and (
            ignore_index.numel() != 1 or ignore_index.is_floating_point()
        )
        if bad_tensor or isinstance(ignore_index, bool) or not isinstance(ignore_index, Integral | Tensor):
            raise TypeError(f"ignore_index must be an int (or a one-element integer tensor), got {ignore_index!r}")
        self.ignore_index = ignore_index
        self.reduction = reduction

    def loss(self, X: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, X: Tensor, target: Tensor) -> Tensor:
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be an integer tensor of class indices, got {type(target).__name__}")
        keep = target != self.ignore_index
        loss = self.loss(X, torch.where(keep, target, torch.zeros_like(target)))
        loss = loss.masked_fill(~keep, 0.0)
        if self.reduction == "sum":
            return loss.sum()
        if self.reduction in ("elementwise_mean", "mean"):
            return loss.sum() / keep.sum()
        return loss

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


class SparsemaxLoss(_GenericLoss):
    """Sparsemax loss module (see :func:`sparsemax_loss`)."""

    def __init__(self, k: int | None = None, ignore_index: int = -100, reduction: str = "elementwise_mean"):
        super().__init__(ignore_index, reduction)
        self.k = check_k(k)

    def loss(self, X: Tensor, target: Tensor) -> Tensor:
        return sparsemax_loss(X, target, self.k)


class SparsemaxBisectLoss(_GenericLoss):
    """Sparsemax loss module (see :func:`sparsemax_bisect_loss`)."""

    def __init__(self, n_iter: int | None = 50, ignore_index: int = -100, reduction: str = "elementwise_mean"):
        super().__init__(ignore_index, reduction)
        self.n_iter = check_n_iter(n_iter)

    def loss(self, X: Tensor, target: Tensor) -> Tensor:
        return sparsemax_bisect_loss(X, target, self.n_iter)


class Entmax15Loss(_GenericLoss):
    """1.5-entmax loss module (see :func:`entmax15_loss`); ``k`` defaults to 100, as in the package."""

    def __init__(self, k: int | None = 100, ignore_index: int = -100, reduction: str = "elementwise_mean"):
        super().__init__(ignore_index, reduction)
        self.k = check_k(k)

    def loss(self, X: Tensor, target: Tensor) -> Tensor:
        return entmax15_loss(X, target, self.k)


class EntmaxBisectLoss(_GenericLoss):
    """α-entmax loss module (see :func:`entmax_bisect_loss`); an ``nn.Parameter`` α is registered and trained."""

    def __init__(
        self, alpha=1.5, n_iter: int | None = 50, ignore_index: int = -100, reduction: str = "elementwise_mean"
    ):
        super().__init__(ignore_index, reduction)
        _check_alpha(alpha)
        self.n_iter = check_n_iter(n_iter)
        self.alpha = alpha

    def loss(self, X: Tensor, target: Tensor) -> Tensor:
        return entmax_bisect_loss(X, target, self.alpha, self.n_iter)


class NormmaxBisectLoss(_GenericLoss):
    """α-normmax loss module (see :func:`normmax_bisect_loss`); α as in :class:`EntmaxBisectLoss`."""

    def __init__(self, alpha=2, n_iter: int | None = 50, ignore_index: int = -100, reduction: str = "elementwise_mean"):
        super().__init__(ignore_index, reduction)
        _check_alpha(alpha)
        self.n_iter = check_n_iter(n_iter)
        self.alpha = alpha

    def loss(self, X: Tensor, target: Tensor) -> Tensor:
        return normmax_bisect_loss(X, target, self.alpha, self.n_iter)
