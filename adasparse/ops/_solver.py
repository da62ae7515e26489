"""Forward solver for α-entmax: find the threshold τ of every row, return the probabilities.

This module holds the numerics only; autograd lives in :mod:`adasparse.ops.entmax`.

Problem, per row of scores z (length n) and α ≥ 1::

    p = argmax_{p ∈ simplex} pᵀz + H_α(p)   ⇒   p_i = [(α−1) z_i − τ]₊^{1/(α−1)},  Σ p_i = 1.

We shift z by its row maximum (so x = (α−1)(z − max z) ≤ 0 and x_max = 0) and solve
f(τ) = Σ [x_i − τ]₊^d − 1 = 0 with d = 1/(α−1).  The root lies in [−1, −n^{1−α}].

* For 1 < α ≤ 2, f is convex and decreasing on that bracket, so Newton's method started at
  the left end τ = −1 climbs monotonically to the root without overshooting.  For α = 2
  (sparsemax) f is piecewise linear and Newton stops *exactly* once the support is found;
  for α = 1.5 it is piecewise quadratic and we finish with the closed form on the support.
* For α > 2, f is concave between the kinks, with an infinite slope at each of them, and Newton
  may overshoot; those calls use bisection, always in float64: p = r^{1/(α−1)} has an infinite
  slope at r = 0, so the float32 rounding of r = x − τ (≈ 1e-6 for |x| ≈ 10) would move the
  entries near the threshold by up to 0.1 at α = 10.  60 halvings of the bracket (width < 1)
  reach float64's resolution, so α > 2 is as accurate as α ≤ 2, at a higher cost.

On CPU the work is done by the fused kernel of :mod:`adasparse.ops._cpu` (one pass per row
while it sits in L1, Newton on the ℓ_d-norm form of the threshold equation); the PyTorch code
below is the reference, the fallback when no compiler is available, and the path for other
devices.

Rows converge at different speeds: after each Newton step only the rows that have not
converged are carried on (active-set compaction), so the cost is a few full passes plus a
tail on a handful of rows.  Everything runs in float32 for half-precision inputs (float64
stays float64).  The solver is a ``torch.library.custom_op`` so that ``torch.compile`` sees
one opaque node (no graph break, no data-dependent Python in the graph) and ``vmap`` has a
rule (the op is row-wise, so a batched call is the same call on a larger batch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import _cpu

__all__ = ["solve_entmax", "entmax_forward", "plain_eager"]

_MAX_NEWTON = 100  # Newton from the left converges in far fewer; this is a safety net


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _solve_dtype(dtype: torch.dtype, alpha: Tensor | None, alpha_value: float) -> torch.dtype:
    """The forward's compute dtype: :func:`_compute_dtype`, or float64 when some α > 2 (see the module doc)."""
    if dtype == torch.float64:
        return dtype
    big = alpha_value > 2.0 if alpha is None else bool((alpha > 2.0).any())
    return torch.float64 if big else torch.float32


def _softmax_rows(z: Tensor, dead: Tensor) -> Tensor:
    """Softmax over the last dim with zeros for the fully masked rows ``dead`` (rows, 1)."""
    return torch.softmax(z, -1).masked_fill_(dead, 0.0)


def _normalise(p: Tensor) -> Tensor:
    """Divide each row by its sum (rows summing to 0, i.e. fully masked, stay 0)."""
    s = p.sum(-1, keepdim=True)
    return p.div_(torch.where(s > 0, s, torch.ones_like(s)))


def _sparsemax_sort(x: Tensor) -> Tensor:
    """Exact sparsemax threshold by sorting (fallback for the rare slow-converging row)."""
    xs, _ = torch.sort(x, dim=-1, descending=True)
    k = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    cs = xs.cumsum(-1) - 1
    support = (xs * k > cs).sum(-1, keepdim=True).clamp_min(1)
    return cs.gather(-1, support - 1) / support.to(x.dtype)


def _newton_power(x: Tensor, tau: Tensor, d, *, count_mask: bool) -> tuple[Tensor, Tensor]:
    """One Newton step on f(τ) = Σ [x−τ]₊^d − 1 for general d (scalar or per row).

    Returns the new τ and the step taken.
    """
    r = (x - tau).clamp_min_(0)
    if isinstance(d, float):
        if d == 1.0:  # sparsemax
            f = r.sum(-1, keepdim=True) - 1
            fp = (r > 0).sum(-1, keepdim=True).to(x.dtype)
        elif d == 2.0:  # 1.5-entmax
            f = (r * r).sum(-1, keepdim=True) - 1
            fp = 2 * r.sum(-1, keepdim=True)
        else:
            rd1 = r.pow(d - 1)
            f = (rd1 * r).sum(-1, keepdim=True) - 1
            fp = d * rd1.sum(-1, keepdim=True)
    else:
        rd1 = r.pow(d - 1)
        if count_mask:  # some rows have d == 1, where 0**0 == 1 must not be counted
            rd1 = torch.where(r > 0, rd1, 0.0)
        f = (rd1 * r).sum(-1, keepdim=True) - 1
        fp = d * rd1.sum(-1, keepdim=True)
    # fp == 0 only for a row with no positive entry (never for a valid row: the max gives
    # r ≥ x_max − τ > 0 while τ < 0); guard it anyway so masked rows stay finite.
    step = torch.where(fp > 0, f / fp, torch.zeros_like(f))
    return tau + step, step


def _newton(x: Tensor, d, tol: float, count_mask: bool) -> Tensor:
    """Newton from τ = −1 for all rows, carrying on only rows not yet converged."""
    rows = x.shape[0]
    tau = x.new_full((rows, 1), -1.0)
    if isinstance(d, float) and d == 1.0:
        # a better lower bound for sparsemax: (Σ x − 1)/n ≤ τ*
        finite = torch.isfinite(x)
        n = finite.sum(-1, keepdim=True).clamp_min(1).to(x.dtype)
        lb = (torch.where(finite, x, 0.0).sum(-1, keepdim=True) - 1) / n
        tau = torch.maximum(tau, lb)
    idx = None  # indices (into all rows) of the rows still iterating; None = all
    xa, da = x, d
    for _ in range(_MAX_NEWTON):
        new, step = _newton_power(xa, tau if idx is None else tau[idx], da, count_mask=count_mask)
        if idx is None:
            tau = new
        else:
            tau[idx] = new
        # a row continues while its step is above tolerance (NaN rows stop: NaN > tol is False)
        go = (step.abs() > tol).squeeze(-1)
        n_go = int(go.sum())
        if n_go == 0:
            return tau
        if n_go < 0.5 * xa.shape[0]:  # compact the active set
            sel = go.nonzero().squeeze(-1)
            idx = sel if idx is None else idx[sel]
            xa = xa[sel]
            if not isinstance(d, float):
                da = da[sel]
    if isinstance(d, float) and d == 1.0:
        rest = torch.arange(rows, device=x.device) if idx is None else idx
        tau[rest] = _sparsemax_sort(x[rest])
    return tau


def _entmax15_closed_form(x: Tensor, tau: Tensor) -> Tensor:
    """Exact 1.5-entmax threshold given a converged τ: closed form on its support.

    On the support S, Σ_S (x_i − τ)² = 1 ⇒ τ = μ − sqrt(μ² − (Σ_S x² − 1)/|S|), μ = mean_S x.
    """
    on = x > tau
    k = on.sum(-1, keepdim=True).clamp_min(1).to(x.dtype)
    xs = torch.where(on, x, 0.0)
    mu = xs.sum(-1, keepdim=True) / k
    ss = (xs * xs).sum(-1, keepdim=True) / k
    disc = (mu * mu - ss + 1 / k).clamp_min(0)
    exact = mu - disc.sqrt()
    # keep the Newton value where the closed form is not better defined (masked rows)
    return torch.where(torch.isfinite(exact), exact, tau)


def _bisect(x: Tensor, d, n: Tensor, iters: int) -> Tensor:
    """Bisection on [−1, −n^{1−α}] (used for α > 2, where f is concave)."""
    lo = x.new_full((x.shape[0], 1), -1.0)
    hi = -n.pow(-1.0 / d)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        f = (x - mid).clamp_min(0).pow(d).sum(-1, keepdim=True) - 1
        big = f > 0
        lo = torch.where(big, mid, lo)
        hi = torch.where(big, hi, mid)
    return 0.5 * (lo + hi)


# float32 rows with α − 1 below this get their last Newton step and p in float64: p = r^d amplifies the
# float rounding of r = x − τ (absolute, ~6e-8 near r = 1) d-fold, past 1e-6 for d > 16
_FLOAT_SMALL_AM1 = 0.125


def _refined_in_double(z: Tensor, m: Tensor, am1, tau: Tensor, d) -> Tensor:
    """p from the float32 τ after one Newton step in float64 (quadratic: τ's float error squared), in float64."""
    f64 = torch.float64
    am1 = am1.to(f64) if isinstance(am1, Tensor) else am1
    d = d.to(f64) if isinstance(d, Tensor) else d
    x = (z.to(f64) - m.to(f64)).mul_(am1)
    tau, _ = _newton_power(x, tau.to(f64), d, count_mask=isinstance(d, Tensor))
    return _normalise((x - tau).clamp_min_(0).pow_(d))


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-13 if dtype == torch.float64 else 1e-7


def solve_entmax_2d(z: Tensor, alpha: Tensor | None, alpha_value: float) -> Tensor:
    """α-entmax over the last dim of a 2-D tensor ``z`` (rows, n).

    ``alpha`` is None (use the Python float ``alpha_value``) or a (rows, 1) tensor.
    Returns probabilities in the compute dtype.
    """
    cd = _solve_dtype(z.dtype, alpha, alpha_value)
    z = z.to(cd)
    m = z.amax(-1, keepdim=True)
    dead = m == -math.inf  # fully masked rows
    if alpha is None and alpha_value == 1.0:
        return _softmax_rows(z, dead)
    m = torch.where(dead, torch.zeros_like(m), m)
    tol = _tolerance(cd)
    if alpha is None:
        am1 = alpha_value - 1.0
        x = (z - m).mul_(am1)
        d = 1.0 / am1
        if alpha_value > 2.0:
            n = torch.isfinite(z).sum(-1, keepdim=True).clamp_min(1).to(cd)
            tau = _bisect(x, d, n, 60)
        else:
            tau = _newton(x, d, tol, count_mask=False)
            if d == 2.0:
                tau = _entmax15_closed_form(x, tau)
            elif cd == torch.float32 and am1 < _FLOAT_SMALL_AM1:
                return _refined_in_double(z, m, am1, tau, d).to(cd)
        r = (x - tau).clamp_min_(0)
        if d == 1.0:
            p = r
        elif d == 2.0:
            p = r.mul_(r)
        else:
            p = r.pow_(d)
        return _normalise(p)

    alpha = alpha.to(cd)
    is_one = alpha == 1.0
    any_one = bool(is_one.any())
    a = torch.where(is_one, torch.full_like(alpha, 2.0), alpha) if any_one else alpha
    am1 = a - 1
    x = (z - m).mul_(am1)
    d = 1.0 / am1
    if bool((a > 2.0).any()):
        n = torch.isfinite(z).sum(-1, keepdim=True).clamp_min(1).to(cd)
        tau = _bisect(x, d, n, 60)
    else:
        tau = _newton(x, d, tol, count_mask=bool((a == 2.0).any()))
    if cd == torch.float32 and bool((am1 < _FLOAT_SMALL_AM1).any()):
        p = _refined_in_double(z, m, am1, tau, d).to(cd)
    else:
        p = _normalise((x - tau).clamp_min_(0).pow_(d))
    if any_one:
        p = torch.where(is_one, _softmax_rows(z, dead), p)
    return p


def _forward_rows(z2: Tensor, a2: Tensor | None, alpha_value: float) -> Tensor:
    """(rows, n) scores → probabilities in the compute dtype: fused CPU kernel, else the reference."""
    if _cpu.usable(z2):
        cd = _solve_dtype(z2.dtype, a2, alpha_value)
        a = None if a2 is None else a2.to(cd).reshape(-1).contiguous()
        return _cpu.forward(z2.to(cd).contiguous(), a, alpha_value)
    return solve_entmax_2d(z2, a2, alpha_value)


def _solve(z: Tensor, alpha: Tensor | None, alpha_value: float) -> Tensor:
    lead, n = z.shape[:-1], z.shape[-1]
    if z.numel() == 0:
        return torch.zeros_like(z)
    z2 = z.reshape(-1, n)  # (rows, n)
    a2 = None if alpha is None else alpha.reshape(-1, 1)  # (rows, 1)
    return _forward_rows(z2, a2, alpha_value).to(z.dtype).reshape(*lead, n)


@torch.library.custom_op("adasparse::entmax_forward", mutates_args=())
def solve_entmax(z: Tensor, alpha: Tensor | None, alpha_value: float) -> Tensor:
    """α-entmax over the last dim of ``z`` (any leading shape), no autograd.

    ``alpha``: None (use ``alpha_value``) or a tensor of shape ``z.shape[:-1] + (1,)``.
    Output has ``z``'s dtype.
    """
    return _solve(z, alpha, alpha_value)


def plain_eager(*tensors: Tensor | None) -> bool:
    """True when nothing traces or transforms these tensors (no compile, vmap/grad, fake or dispatch mode,
    no meta tensor): they hold real data.

    Then the custom-op dispatch (about 20 µs a call) can be skipped and the implementation called directly.
    """
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    if _get_current_dispatch_mode() is not None:
        return False
    return all(t is None or (type(t) is Tensor and not t.is_meta) for t in tensors)


def entmax_forward(z: Tensor, alpha: Tensor | None, alpha_value: float) -> Tensor:
    """:func:`solve_entmax`, called directly in plain eager mode and through the custom op otherwise."""
    if plain_eager(z, alpha):
        return _solve(z, alpha, alpha_value)
    return solve_entmax(z, alpha, alpha_value)


@solve_entmax.register_fake
def _(z, alpha, alpha_value):
    return torch.empty_like(z)


def _vmap_rule(info, in_dims, z, alpha, alpha_value):
    zd, ad = in_dims[0], in_dims[1] if len(in_dims) > 1 else None
    size = info.batch_size
    z = z.unsqueeze(0).expand(size, *z.shape) if zd is None else z.movedim(zd, 0)
    if alpha is not None:
        alpha = alpha.unsqueeze(0) if ad is None else alpha.movedim(ad, 0)
        alpha = alpha.expand(*z.shape[:-1], 1)
    return solve_entmax(z, alpha, alpha_value), 0


solve_entmax.register_vmap(_vmap_rule)
