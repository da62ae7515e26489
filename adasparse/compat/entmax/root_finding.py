"""The ``entmax`` package's bisection mappings (``entmax.root_finding``): α-entmax, sparsemax, α-normmax and budget
sparsemax, with its names, signatures and defaults.

Where adasparse has an exact solver and the package's answer is the converged one, the exact solver serves the
call: ``entmax_bisect`` with every α in [1, 2] and ``n_iter`` ≥ 24 (the package: "for float32, 24 iterations should
suffice for machine precision"; its default is 50) runs adasparse's α-entmax kernels, forward and backward, with
the gradient in α; ``sparsemax_bisect`` always does (the package ignores its ``n_iter`` and ``ensure_sum_one``).
``normmax_bisect`` (α > 1) runs the exact α'-entmax kernel its threshold equation reduces to (α' = 2 − 1/α).
Everything else — α-entmax for α < 1 or α > 2 or mixed per-row α, budget sparsemax, and any call with fewer than
24 steps — is solved here: converged, by Newton steps safeguarded by bisection in float64 (for α > 2 around the
support's smallest score, which keeps the digits the package's bisection on τ loses: it is off by 0.016 at
α = 10 and 0.3 at α = 50 on N(0, 1) scores); with fewer than 24 steps, by exactly ``n_iter`` bisection steps on
the package's bracket, so that such a coarse answer is the one the package gives. ``n_iter=None`` means converged.

Beyond the package: α = 1 gives softmax (the package: NaN), normmax with α ≤ 1 gives its true maximiser (a vertex,
see :func:`normmax_bisect`), fully masked rows give zeros, an α tensor keeps its gradient for normmax and a budget
tensor for budget sparsemax (the package returns none), and bad arguments raise a ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd import Function

from ...ops import entmax as _entmax
from ._args import (
    check_dim,
    check_input,
    check_n_iter,
    check_param,
    converged,
    from_rows,
    in_range,
    param_rows,
    rows_to_param_grad,
    to_rows,
)
from ._solvers import (
    budget_backward_rows,
    budget_rows,
    entmax_backward_rows,
    entmax_rows,
    normmax_backward_rows,
    normmax_rows,
)

__all__ = [
    "entmax_bisect",
    "sparsemax_bisect",
    "normmax_bisect",
    "budget_bisect",
    "EntmaxBisect",
    "SparsemaxBisect",
    "NormmaxBisect",
    "BudgetBisect",
    "EntmaxBisectFunction",
    "SparsemaxBisectFunction",
    "NormmaxBisectFunction",
    "BudgetBisectFunction",
]

_ALPHA_HINT = "α = 2 is sparsemax, α → 1 softmax"


def _check_alpha(alpha):
    return check_param(alpha, "alpha", lower=0.0, lower_ok=False, hint=_ALPHA_HINT)


def _fast_entmax(X: Tensor, alpha, dim: int) -> Tensor:
    """adasparse's exact α-entmax (α in [1, 2]); a 0-dim X is one entry (probability 1)."""
    if X.dim() == 0:
        return _fast_entmax(X.unsqueeze(0), alpha.unsqueeze(0) if isinstance(alpha, Tensor) else alpha, 0).squeeze(0)
    if isinstance(alpha, Tensor):
        # the package's rule: alpha expands to X's shape with size 1 on dim
        shape = list(X.shape)
        shape[dim] = 1
        if alpha.dim() > X.dim():
            raise ValueError(f"alpha of shape {tuple(alpha.shape)} has more dims than X of shape {tuple(X.shape)}")
        try:
            alpha = alpha.expand(*shape)
        except RuntimeError:
            raise ValueError(
                f"alpha of shape {tuple(alpha.shape)} must expand to {tuple(shape)} (X's shape {tuple(X.shape)} "
                f"with size 1 along dim={dim}, the dim that sums to one)"
            ) from None
    if not isinstance(alpha, Tensor) and alpha == 1.0:
        return _softmax_masked(X, dim)
    return _entmax(X, alpha, dim)


def _softmax_masked(X: Tensor, dim: int) -> Tensor:
    """Softmax, with zeros and zero gradient (not NaN) on fully masked rows, as every other α gives."""
    empty = (X == -math.inf).all(dim, keepdim=True)
    p = torch.softmax(torch.where(empty, torch.zeros_like(X), X), dim)
    return torch.where(empty, torch.zeros_like(p), p)


def _entmax_values(X: Tensor, alpha, dim: int, n_iter: int | None, ensure_sum_one: bool) -> Tensor:
    """α-entmax values only (no autograd), X's shape and dtype: the exact kernel where it serves, else bisection."""
    if converged(n_iter) and in_range(alpha, 1.0, 2.0):
        with torch.no_grad():
            return _fast_entmax(X, alpha.detach() if isinstance(alpha, Tensor) else alpha, dim)
    steps = None if converged(n_iter) else n_iter
    p = entmax_rows(to_rows(X, dim), param_rows(alpha, X, dim, "alpha"), steps, ensure_sum_one)
    return from_rows(p, X, dim)


def _normmax_exact(z: Tensor, alpha, a: Tensor) -> Tensor:
    """α-normmax of the rows of ``z`` (rows, n) by adasparse's exact α-entmax, in float64.

    Its threshold equation Σ [z − τ]₊^{α/(α−1)} = 1 is α'-entmax's, α' = 2 − 1/α ∈ (1, 2) for α > 1, on the scores
    z' = z/(α'−1) = α z/(α−1): that mapping returns q^α, q = [z − τ]₊^{1/(α−1)}, and p = q/Σ q. (α = 2 is the
    1.5-entmax kernel.) Rows with α ≤ 1 take their vertex from :func:`normmax_rows`.
    """
    cd = _compute_dtype(z.dtype)
    if not isinstance(alpha, Tensor):
        if alpha <= 1:
            return normmax_rows(z.to(torch.float64), a, None).to(cd)
        with torch.no_grad():
            p_prime = _entmax(z * (alpha / (alpha - 1)), 2.0 - 1.0 / alpha, -1).to(cd)
        q = p_prime.sqrt() if alpha == 2 else p_prime.pow(1 / alpha)
    else:
        le1 = a <= 1
        a2 = torch.where(le1, torch.full_like(a, 2.0), a)
        with torch.no_grad():
            p_prime = _entmax(z * (a2 / (a2 - 1)).to(z.dtype), (2 - 1 / a2).to(z.dtype), -1).to(cd)
        q = p_prime.pow((1 / a2).to(cd))
        if bool(le1.any()):
            q = torch.where(le1, normmax_rows(z.to(torch.float64), a, None).to(cd), q)
    s = q.sum(-1, keepdim=True)
    return q / torch.where(s > 0, s, torch.ones_like(s))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32 and half precision are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class EntmaxBisectFunction(Function):
    """``EntmaxBisectFunction.apply(X, alpha=1.5, dim=-1, n_iter=50, ensure_sum_one=True)``: α-entmax as an
    autograd Function, differentiable in X and in a tensor α (the package's class; see :func:`entmax_bisect`)."""

    @staticmethod
    def forward(ctx, X, alpha=1.5, dim=-1, n_iter=50, ensure_sum_one=True):
        check_input(X)
        dim = check_dim(X, dim)
        n_iter = check_n_iter(n_iter)
        alpha = _check_alpha(alpha)
        out = _entmax_values(X, alpha, dim, n_iter, bool(ensure_sum_one))
        ctx.dim = dim
        ctx.alpha_dtype = alpha.dtype if isinstance(alpha, Tensor) else None
        ctx.save_for_backward(out, param_rows(alpha, X, dim, "alpha"))
        return out

    @staticmethod
    def backward(ctx, dY):
        Y, a = ctx.saved_tensors
        need_alpha = ctx.needs_input_grad[1]
        gz, ga = entmax_backward_rows(to_rows(Y, ctx.dim), to_rows(dY, ctx.dim), a, need_alpha)
        gz = from_rows(gz, dY, ctx.dim)
        ga = rows_to_param_grad(ga, Y, ctx.dim, ctx.alpha_dtype) if need_alpha else None
        return gz, ga, None, None, None


class SparsemaxBisectFunction(Function):
    """``SparsemaxBisectFunction.apply(X, dim=-1, n_iter=50, ensure_sum_one=True)``: sparsemax (exact; the package
    runs 50 steps whatever ``n_iter`` says, so ``n_iter`` and ``ensure_sum_one`` are only checked)."""

    @staticmethod
    def forward(ctx, X, dim=-1, n_iter=50, ensure_sum_one=True):
        check_input(X)
        dim = check_dim(X, dim)
        check_n_iter(n_iter)
        with torch.no_grad():
            out = _fast_entmax(X, 2.0, dim)
        ctx.dim = dim
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, dY):
        (Y,) = ctx.saved_tensors
        p = to_rows(Y, ctx.dim)
        gz, _ = entmax_backward_rows(p, to_rows(dY, ctx.dim), torch.full_like(p[:, :1], 2.0), False)
        return from_rows(gz, dY, ctx.dim), None, None, None


class NormmaxBisectFunction(Function):
    """``NormmaxBisectFunction.apply(X, alpha=2, dim=-1, n_iter=50)``: α-normmax as an autograd Function,
    differentiable in X and in a tensor α (see :func:`normmax_bisect`)."""

    @staticmethod
    def forward(ctx, X, alpha=2, dim=-1, n_iter=50):
        check_input(X)
        dim = check_dim(X, dim)
        n_iter = check_n_iter(n_iter)
        alpha = _check_alpha(alpha)
        a = param_rows(alpha, X, dim, "alpha")
        if converged(n_iter):
            out = from_rows(_normmax_exact(to_rows(X, dim, None), alpha, a), X, dim)
        else:
            out = from_rows(normmax_rows(to_rows(X, dim), a, n_iter), X, dim)
        ctx.dim = dim
        ctx.alpha_dtype = alpha.dtype if isinstance(alpha, Tensor) else None
        ctx.save_for_backward(out, a)
        return out

    @staticmethod
    def backward(ctx, dY):
        Y, a = ctx.saved_tensors
        need_alpha = ctx.needs_input_grad[1]
        cd = _compute_dtype(Y.dtype)  # the gradient has no cancellation: float32 suffices for float32 inputs
        p, g = to_rows(Y, ctx.dim, cd), to_rows(dY, ctx.dim, cd)
        gz, ga = normmax_backward_rows(p, g, a.to(cd), need_alpha)
        gz = from_rows(gz, dY, ctx.dim)
        ga = rows_to_param_grad(ga, Y, ctx.dim, ctx.alpha_dtype) if need_alpha else None
        return gz, ga, None, None


class BudgetBisectFunction(Function):
    """``BudgetBisectFunction.apply(X, budget=2, dim=-1, n_iter=50)``: budget sparsemax as an autograd Function,
    differentiable in X and in a tensor budget (see :func:`budget_bisect`)."""

    @staticmethod
    def forward(ctx, X, budget=2, dim=-1, n_iter=50):
        check_input(X)
        dim = check_dim(X, dim)
        n_iter = check_n_iter(n_iter)
        budget = check_param(budget, "budget", lower=0.0, lower_ok=True, hint="the sum of the output")
        z = to_rows(X, dim)
        b = param_rows(budget, X, dim, "budget")
        n = torch.isfinite(z).sum(-1, keepdim=True)
        too_big = (b > n) & (n > 0)
        if bool(too_big.any()):
            i = int(too_big.nonzero()[0, 0])
            raise ValueError(
                f"budget {b[i, 0].item():.6g} exceeds the {int(n[i, 0])} unmasked entries of a row along dim={dim}: "
                f"no p with 0 ≤ p ≤ 1 sums to it"
            )
        out = from_rows(budget_rows(z, b, None if converged(n_iter) else n_iter), X, dim)
        ctx.dim = dim
        ctx.budget_dtype = budget.dtype if isinstance(budget, Tensor) else None
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, dY):
        (Y,) = ctx.saved_tensors
        need_budget = ctx.needs_input_grad[1]
        gz, gb = budget_backward_rows(to_rows(Y, ctx.dim), to_rows(dY, ctx.dim), need_budget)
        gz = from_rows(gz, dY, ctx.dim)
        gb = rows_to_param_grad(gb, Y, ctx.dim, ctx.budget_dtype) if need_budget else None
        return gz, gb, None, None


def _promoted(X: Tensor, param) -> Tensor:
    """X in the dtype the package computes in: PyTorch's promotion of X with a tensor α (or budget), which the
    package applies to it row by row (float32 scores with a float64 α give float64 probabilities)."""
    if isinstance(X, Tensor) and isinstance(param, Tensor) and param.is_floating_point() and X.is_floating_point():
        dt = torch.promote_types(X.dtype, param.dtype)
        if dt != X.dtype:
            return X.to(dt)
    return X


def entmax_bisect(X: Tensor, alpha=1.5, dim: int = -1, n_iter: int | None = 50, ensure_sum_one: bool = True) -> Tensor:
    r"""α-entmax along ``dim``:

        ``argmax_p ⟨X, p⟩ + H_α(p)  s.t.  p ≥ 0, Σ p = 1``,  ``H_α(p) = (1 − Σ p^α)/(α(α−1))``,

    i.e. ``p = [(α−1) X − τ]₊^{1/(α−1)}``. Differentiable in X and in a tensor α (Correia et al. 2019).

    Args:
        X: scores, any floating dtype; ``-inf`` entries get exactly 0. The result has PyTorch's promoted dtype of
            X and a tensor α (as the package's), X's with a number.
        alpha: a number > 0 or a tensor that expands to X's shape with size 1 along ``dim`` (one α per row);
            it may require grad. 2 is sparsemax, 1 softmax (returned exactly; the package gives NaN there),
            α < 1 a dense mapping.
        dim: the dimension that sums to one.
        n_iter: bisection steps. From 24 (the default is 50) or ``None`` the converged answer is returned
            (adasparse's exact kernels for α in [1, 2]); below 24, exactly ``n_iter`` steps, as the package.
        ensure_sum_one: divide by the sum (only matters below 24 steps: the converged answer sums to one).
    """
    check_input(X)
    dim = check_dim(X, dim)
    n_iter = check_n_iter(n_iter)
    alpha = _check_alpha(alpha)
    X = _promoted(X, alpha)
    if converged(n_iter) and in_range(alpha, 1.0, 2.0):
        return _fast_entmax(X, alpha, dim)
    return EntmaxBisectFunction.apply(X, alpha, dim, n_iter, bool(ensure_sum_one))


def sparsemax_bisect(X: Tensor, dim: int = -1, n_iter: int | None = 50, ensure_sum_one: bool = True) -> Tensor:
    r"""Sparsemax along ``dim``: ``argmin_p ‖p − X‖²  s.t.  p ≥ 0, Σ p = 1``.

    Always the exact answer, by adasparse's kernel: the package runs its bisection to convergence whatever
    ``n_iter`` and ``ensure_sum_one`` say, so they are only checked (``n_iter``: a positive int or None).
    """
    check_input(X)
    dim = check_dim(X, dim)
    check_n_iter(n_iter)
    return _fast_entmax(X, 2.0, dim)


def normmax_bisect(X: Tensor, alpha=2, dim: int = -1, n_iter: int | None = 50) -> Tensor:
    r"""α-normmax along ``dim``:

        ``argmax_p ⟨X, p⟩ − ‖p‖_α  s.t.  p ≥ 0, Σ p = 1``,

    i.e. ``p ∝ [X − τ]₊^{1/(α−1)}`` with τ such that ``Σ [X − τ]₊^{α/(α−1)} = 1``. For α ≤ 1, ``‖p‖_α`` is
    concave and the maximum sits at a vertex: the one-hot of the top score (α = 1: the uniform mix of tied top
    scores); the package returns NaN or a non-optimal point there. Differentiable in X and in a tensor α.

    Args: as :func:`entmax_bisect` (α > 0, a number or a per-row tensor; ``n_iter`` ≥ 24 or None converged).
    """
    return NormmaxBisectFunction.apply(_promoted(X, alpha), alpha, dim, n_iter)


def budget_bisect(X: Tensor, budget=2, dim: int = -1, n_iter: int | None = 50) -> Tensor:
    r"""Budget sparsemax along ``dim``:

        ``argmax_p ⟨X, p⟩ − ½‖p‖²  s.t.  0 ≤ p ≤ 1, Σ p = budget``,

    i.e. ``p = clip(X − τ, 0, 1)``. ``budget`` is a number or a per-row tensor in [0, number of unmasked entries]
    (a larger budget has no solution: ``ValueError``); budget = 1 is sparsemax. Differentiable in X and in a tensor
    budget. ``n_iter`` as in :func:`entmax_bisect`.
    """
    return BudgetBisectFunction.apply(_promoted(X, budget), budget, dim, n_iter)


def _check_module_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {dim!r}")
    return dim


class SparsemaxBisect(nn.Module):
    """Sparsemax along ``dim`` (see :func:`sparsemax_bisect`; ``n_iter`` defaults to None, as in the package)."""

    def __init__(self, dim: int = -1, n_iter: int | None = None):
        super().__init__()
        self.dim = _check_module_dim(dim)
        self.n_iter = check_n_iter(n_iter)

    def forward(self, X: Tensor) -> Tensor:
        return sparsemax_bisect(X, dim=self.dim, n_iter=self.n_iter)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_iter={self.n_iter}"


class EntmaxBisect(nn.Module):
    """α-entmax along ``dim`` (see :func:`entmax_bisect`). ``alpha`` may be an ``nn.Parameter``: it is then registered
    and trained (the package refuses one: "cannot assign parameters before Module.__init__() call")."""

    def __init__(self, alpha=1.5, dim: int = -1, n_iter: int | None = 50):
        super().__init__()
        _check_alpha(alpha)
        self.dim = _check_module_dim(dim)
        self.n_iter = check_n_iter(n_iter)
        self.alpha = alpha  # an nn.Parameter is registered; any other value stays a plain attribute, as in the package

    def forward(self, X: Tensor) -> Tensor:
        return entmax_bisect(X, alpha=self.alpha, dim=self.dim, n_iter=self.n_iter)

    def extra_repr(self) -> str:
        a = self.alpha if not isinstance(self.alpha, Tensor) else f"tensor of shape {tuple(self.alpha.shape)}"
        return f"alpha={a}, dim={self.dim}, n_iter={self.n_iter}"


class NormmaxBisect(nn.Module):
    """α-normmax along ``dim`` (see :func:`normmax_bisect`); ``alpha`` as in :class:`EntmaxBisect`."""

    def __init__(self, alpha=2, dim: int = -1, n_iter: int | None = 50):
        super().__init__()
        _check_alpha(alpha)
        self.dim = _check_module_dim(dim)
        self.n_iter = check_n_iter(n_iter)
        self.alpha = alpha  # an nn.Parameter is registered; any other value stays a plain attribute, as in the package

    def forward(self, X: Tensor) -> Tensor:
        return normmax_bisect(X, alpha=self.alpha, dim=self.dim, n_iter=self.n_iter)

    def extra_repr(self) -> str:
        a = self.alpha if not isinstance(self.alpha, Tensor) else f"tensor of shape {tuple(self.alpha.shape)}"
        return f"alpha={a}, dim={self.dim}, n_iter={self.n_iter}"


class BudgetBisect(nn.Module):
    """Budget sparsemax along ``dim`` (see :func:`budget_bisect`); ``budget`` may be an ``nn.Parameter``."""

    def __init__(self, budget=2, dim: int = -1, n_iter: int | None = 50):
        super().__init__()
        check_param(budget, "budget", lower=0.0, lower_ok=True, hint="the sum of the output")
        self.dim = _check_module_dim(dim)
        self.n_iter = check_n_iter(n_iter)
        self.budget = budget  # as alpha in EntmaxBisect

    def forward(self, X: Tensor) -> Tensor:
        return budget_bisect(X, budget=self.budget, dim=self.dim, n_iter=self.n_iter)

    def extra_repr(self) -> str:
        b = self.budget if not isinstance(self.budget, Tensor) else f"tensor of shape {tuple(self.budget.shape)}"
        return f"budget={b}, dim={self.dim}, n_iter={self.n_iter}"
