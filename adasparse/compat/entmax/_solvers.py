"""Row-wise numerics for what adasparse's exact kernels do not cover, and the gradients of every mapping.

All functions take 2-D ``(rows, n)`` float64 tensors (parameters as ``(rows, 1)``) and work along the last
dim. Masked scores are ``-inf``: they get exactly 0 and zero gradient; a fully masked row gives zeros.

* α-entmax for any α > 0: ``p_i = [(α−1) z_i − τ]₊^{1/(α−1)}`` with ``Σ p = 1`` (for α < 1 every p_i > 0),
  the maximiser of ``pᵀz + H_α(p)`` over the simplex, ``H_α(p) = (1 − Σ p^α)/(α(α−1))`` (Tsallis).
* α-normmax: the maximiser of ``pᵀz − ‖p‖_α``. Its optimality conditions give ``p ∝ q``,
  ``q_i = [z_i − τ]₊^{1/(α−1)}`` with ``Σ q_i^α = 1``. For α ≤ 1 the objective is convex in p, so the
  maximum is at a vertex: the one-hot of the top score (α = 1: any mixture of the tied top scores; we
  return their uniform mix, the α → 1⁺ limit).
* budget sparsemax: the maximiser of ``pᵀz − ½‖p‖²`` over ``0 ≤ p ≤ 1, Σ p = B``: ``p = clip(z − τ, 0, 1)``.

τ is found on a bracket where the constraint changes sign: either by a given number of bisection steps (what
the ``entmax`` package does, for callers who ask for few steps), or (``n_iter=None``) to float64 precision by
Newton steps safeguarded by the bracket.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ...ops.losses import _phi as phi
from ...ops.losses import _tsallis, _tsallis_dalpha

_MAX_ITER = 200  # float64 bisection stops far earlier (the bracket reaches one ulp); a safety net
_REGROUP_BELOW = 0.125  # |α − 1| below which ∂p/∂α is taken from its regrouped (cancellation-free) form


def bisect(f_nonneg: Callable[[Tensor], Tensor], a: Tensor, b: Tensor, n_iter: int | None) -> tuple[Tensor, Tensor]:
    """Per-row bisection for the root of a monotone f, from ``a`` (f ≥ 0) and ``b`` (f ≤ 0), either order.

    ``f_nonneg(t)`` says where f(t) ≥ 0. Runs ``n_iter`` steps, or (``None``) until no row's midpoint differs
    from its ends. Returns the final ``a`` (f(a) ≥ 0) and the last midpoint evaluated.
    """
    mid = a
    limit = _MAX_ITER if n_iter is None else n_iter
    for it in range(1, limit + 1):
        mid = a + (b - a) / 2
        ge = f_nonneg(mid)
        a = torch.where(ge, mid, a)
        b = torch.where(ge, b, mid)
        if n_iter is None and it >= 40 and it % 4 == 0:
            nxt = a + (b - a) / 2
            if bool(((nxt == a) | (nxt == b) | torch.isnan(nxt)).all()):
                break
    return a, mid


def newton_bisect(
    fun: Callable[..., tuple[Tensor, Tensor]],
    a: Tensor,
    b: Tensor,
    data: tuple[Tensor, ...] = (),
    start: Tensor | None = None,
    rtol: float = 4e-16,
) -> Tensor:
    """Per-row root of a monotone f bracketed by ``a`` (f ≥ 0) and ``b`` (f ≤ 0), all (rows, 1).

    ``fun(t, *data)`` returns f(t) and f'(t) for the rows of ``data`` (tensors with one row per row of ``a``).
    Newton steps from ``start`` (default ``a``), each replaced by the bracket's midpoint when it would leave the
    (shrinking) bracket, so it converges wherever bisection does, and quadratically near the root; it stops at a
    step below ``rtol`` relative. Rows that have converged drop out (the rest carry on, compacted).
    """
    t = a if start is None else start
    out = t.clone()
    rows = None  # indices of the rows still iterating (None: all)
    for _ in range(_MAX_ITER):
        f, fp = fun(t, *data)
        ge = f >= 0
        a = torch.where(ge, t, a)
        b = torch.where(ge, b, t)
        cand = t - f / torch.where(fp != 0, fp, torch.full_like(fp, math.nan))
        tol = rtol * t.abs() + 1e-300
        inside = (cand - a) * (cand - b) < 0
        converged = (f == 0) | ((cand - t).abs() <= tol)  # (a zero step at an end of the bracket included)
        new = torch.where(converged, t, torch.where(inside, cand, a + (b - a) / 2))
        go = ((new - t).abs() > tol).squeeze(-1)  # NaN rows stop (NaN > tol is False)
        if rows is None:
            out = new
        else:
            out[rows] = new
        n_go = int(go.sum())
        if n_go == 0:
            break
        if n_go < 0.5 * go.numel():
            sel = go.nonzero().squeeze(-1)
            rows = sel if rows is None else rows[sel]
            new, a, b = new[sel], a[sel], b[sel]
            data = tuple(x[sel] for x in data)
        t = new
    return out


def _row_max(z: Tensor) -> Tensor:
    m = z.amax(-1, keepdim=True)
    return torch.where(m == -math.inf, torch.zeros_like(m), m)  # fully masked rows


def _normalise(p: Tensor) -> Tensor:
    s = p.sum(-1, keepdim=True)
    return p / torch.where(s > 0, s, torch.ones_like(s))


def _masked_softmax(z: Tensor) -> Tensor:
    """Softmax with zeros (not NaN) on fully masked rows."""
    p = torch.softmax(z, -1)
    empty = (z == -math.inf).all(-1, keepdim=True)
    return torch.where(empty, torch.zeros_like(p), p)


def entmax_rows(z: Tensor, alpha: Tensor, n_iter: int | None, ensure_sum_one: bool = True) -> Tensor:
    """α-entmax for any α > 0 (``alpha`` (rows, 1)); α = 1 rows are softmax.

    With x = (α−1)(z − max z), the root of Σ [x_i − τ]₊^{1/(α−1)} = 1 lies between τ = −1 (the top entry
    alone gives 1) and τ = −n^{1−α} (every entry at most 1/n): for α > 1 the sum decreases in τ, for α < 1
    it increases (x ≥ 0 there and the exponent is negative). With ``n_iter`` steps: bisection, n counting every
    entry (the package's bracket), p taken at the last midpoint. Converged: safeguarded Newton, n counting the
    unmasked entries, and for α > 2 the exact recomputation of :func:`_anchored`.
    """
    one = alpha == 1
    a = torch.where(one, torch.full_like(alpha, 2.0), alpha)
    am1 = a - 1
    x = (z - _row_max(z)) * am1
    d = 1 / am1
    if n_iter is None:
        n = torch.isfinite(z).sum(-1, keepdim=True).clamp_min(1).to(z.dtype)
    else:
        n = torch.full_like(alpha, float(z.shape[-1]))

    def power(tau: Tensor) -> Tensor:
        return (x - tau).clamp_min(0).pow(d)

    a_end, b_end = -torch.ones_like(alpha), -n.pow(-am1)
    if n_iter is None:
        # α > 2 rows need τ only to pick the anchor of _anchored, which then solves them exactly
        rtol = 1e-12 if bool((am1 > 1).all()) else 4e-16
        tau = newton_bisect(_entmax_equation, a_end, b_end, (x, d), rtol=rtol)
    else:
        _, tau = bisect(lambda t: power(t).sum(-1, keepdim=True) >= 1, a_end, b_end, n_iter)
    p = power(tau)
    if n_iter is None and bool((am1 > 1).any()):
        big = (am1 > 1).squeeze(-1).nonzero().squeeze(-1)
        p[big] = _anchored(z[big], x[big], am1[big], d[big], tau[big])
    if ensure_sum_one or n_iter is None:
        p = _normalise(p)
    return torch.where(one, _masked_softmax(z), p) if bool(one.any()) else p


def _entmax_equation(tau: Tensor, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """Σ [x − τ]₊^d − 1 and its derivative in τ (a masked entry has r = 0 for α > 1, r = inf for α < 1: 0 both)."""
    r = (x - tau).clamp_min(0)
    rd = r.pow(d)
    rd1 = torch.where(r > 0, rd / r, torch.zeros_like(r))
    return rd.sum(-1, keepdim=True) - 1, -d * rd1.sum(-1, keepdim=True)


def _others_sum(g: Tensor, d: Tensor, anchor: Tensor) -> Tensor:
    """Σ_{i ≠ anchor} [g_i]₊^d − 1 (the anchor's own term is left out)."""
    terms = g.clamp_min(0).pow(d).scatter(-1, anchor, 0.0)
    return terms.sum(-1, keepdim=True) - 1


def _anchor_equation(q: Tensor, g: Tensor, d: Tensor, am1: Tensor, anchor: Tensor) -> tuple[Tensor, Tensor]:
    """q + Σ_{i≠k} [g_i + q^{α−1}]₊^{1/(α−1)} − 1 and its derivative 1 + Σ r_i^{d−1} q^{α−2}."""
    r = (g + q.pow(am1)).clamp_min(0)
    rd = r.pow(d).scatter(-1, anchor, 0.0)
    rd1 = torch.where(r > 0, rd / r, torch.zeros_like(r))
    return q + rd.sum(-1, keepdim=True) - 1, 1 + rd1.sum(-1, keepdim=True) * q.pow(am1 - 1)


def _anchored(z: Tensor, x: Tensor, am1: Tensor, d: Tensor, tau: Tensor) -> Tensor:
    """α > 2: p recomputed around the support's smallest entry, so that tiny r = x − τ keep their digits.

    For α > 2, p_i = r_i^{1/(α−1)} turns a tiny r into a sizeable p (α = 10: r = 4e-18 gives p = 0.012; α = 50:
    r = 1e-98 gives p = 0.01), far below the float64 resolution of τ itself (≈ 1e-16), so τ cannot be the unknown.
    Take as anchor k the support's smallest entry and write r_i = g_i + δ with g_i = (α−1)(z_i − z_k), straight
    from the scores, and δ = x_k − τ > 0; then solve for the anchor's own probability q = δ^{1/(α−1)}:
    q + Σ_{i≠k} [g_i + q^{α−1}]₊^{1/(α−1)} = 1, increasing in q on [0, 1] and as well conditioned as p itself.
    The anchor starts as the smallest x ≥ τ (τ from the plain Newton) and moves, one score at a time, until it is
    in the support (Σ_{i≠k} [g_i]₊^d < 1) and the next lower score is not (its own sum, taken from it, ≥ 1).
    """
    anchor = torch.where(x >= tau, x, math.inf).argmin(-1, keepdim=True)  # the top entry (x = 0) always qualifies
    valid = torch.isfinite(tau) & torch.isfinite(x.gather(-1, anchor))
    for _ in range(z.shape[-1]):
        zk = torch.where(valid, z.gather(-1, anchor), torch.zeros_like(tau))
        out = (_others_sum((z - zk) * am1, d, anchor) >= 0) & valid  # the anchor is not in the support
        lower = torch.where(z < zk, z, -math.inf)
        below = lower.argmax(-1, keepdim=True)
        zj = lower.gather(-1, below)
        down = ~out & valid & (zj > -math.inf)
        down &= _others_sum((z - torch.where(down, zj, zk)) * am1, d, below) < 0  # the next lower one is in it
        if not bool((out | down).any()):
            break
        above = torch.where(z > zk, z, math.inf).argmin(-1, keepdim=True)
        anchor = torch.where(out, above, torch.where(down, below, anchor))
    zk = torch.where(valid, z.gather(-1, anchor), torch.zeros_like(tau))
    g = (z - zk) * am1  # 0 at the anchor (and its ties), −inf where masked
    q0 = (x.gather(-1, anchor) - tau).clamp(0, 1).pow(d)
    ones, zeros = torch.ones_like(tau), torch.zeros_like(tau)
    q = newton_bisect(_anchor_equation, ones, zeros, (g, d, am1, anchor), start=q0)
    p = (g + q.pow(am1)).clamp_min(0).pow(d).scatter(-1, anchor, q)
    return torch.where(valid, p, (x - tau).clamp_min(0).pow(d))


def normmax_rows(z: Tensor, alpha: Tensor, n_iter: int | None) -> Tensor:
    """α-normmax (``alpha`` (rows, 1), any α > 0).

    For α > 1, with x = z − max z, τ solves Σ [x_i − τ]₊^{α/(α−1)} = 1, between τ = −1 and
    τ = −n^{−(α−1)/α} (converged; with ``n_iter`` steps the package's looser −n^{−(α−1)}, every entry
    counted); then p = q/Σq with q = [x − τ]₊^{1/(α−1)}.
    """
    le1 = alpha <= 1
    a = torch.where(le1, torch.full_like(alpha, 2.0), alpha)
    x = z - _row_max(z)
    beta = 1 / (a - 1)
    if n_iter is None:
        n = torch.isfinite(z).sum(-1, keepdim=True).clamp_min(1).to(z.dtype)
        hi = -n.pow(-(a - 1) / a)
    else:
        hi = -torch.full_like(alpha, float(z.shape[-1])).pow(-(a - 1))
    lo, mid = bisect(
        lambda t: (x - t).clamp_min(0).pow(a * beta).sum(-1, keepdim=True) >= 1, -torch.ones_like(alpha), hi, n_iter
    )
    p = _normalise((x - (lo if n_iter is None else mid)).clamp_min(0).pow(beta))
    if bool(le1.any()):
        finite_row = torch.isfinite(z).any(-1, keepdim=True)
        top = (z == z.amax(-1, keepdim=True)) & finite_row
        first = torch.zeros_like(p).scatter_(-1, z.argmax(-1, keepdim=True), 1.0) * finite_row
        vertex = torch.where(alpha == 1, _normalise(top.to(p.dtype)), first)
        p = torch.where(le1, vertex, p)
    return p


def _budget_equation(tau: Tensor, z: Tensor, budget: Tensor) -> tuple[Tensor, Tensor]:
    """Σ clip(z − τ, 0, 1) − B and its derivative −#{0 < z − τ < 1}."""
    u = z - tau
    free = (u > 0) & (u < 1)
    return u.clamp(0, 1).sum(-1, keepdim=True) - budget, -free.sum(-1, keepdim=True).to(z.dtype)


def budget_rows(z: Tensor, budget: Tensor, n_iter: int | None) -> Tensor:
    """Budget sparsemax (``budget`` (rows, 1), 0 ≤ B ≤ number of unmasked entries).

    Σ clip(z_i − τ, 0, 1) decreases in τ; at τ = min z − B/n every term is at least B/n (sum ≥ B), at
    τ = max z − B/n at most B/n (sum ≤ B), with n the unmasked entries. Converged (``n_iter=None``), τ is found to
    float64 precision; with ``n_iter`` steps p is taken at the last midpoint (the package's way).
    """
    finite = torch.isfinite(z)
    n = finite.sum(-1, keepdim=True).clamp_min(1).to(z.dtype)
    zmin = torch.where(finite, z, math.inf).amin(-1, keepdim=True)
    zmax = torch.where(finite, z, -math.inf).amax(-1, keepdim=True)
    empty = ~finite.any(-1, keepdim=True)
    zmin = torch.where(empty, torch.zeros_like(zmin), zmin)
    zmax = torch.where(empty, torch.zeros_like(zmax), zmax)

    a_end, b_end = zmin - budget / n, zmax - budget / n
    if n_iter is None:
        tau = newton_bisect(_budget_equation, a_end, b_end, (z, budget))
    else:
        _, tau = bisect(lambda t: (z - t).clamp(0, 1).sum(-1, keepdim=True) >= budget, a_end, b_end, n_iter)
    return (z - tau).clamp(0, 1)


# --- gradients ----------------------------------------------------------------------------------------------


def _safe(x: Tensor) -> Tensor:
    return torch.where(x == 0, torch.ones_like(x), x)


def entmax_backward_rows(p: Tensor, g: Tensor, alpha: Tensor, need_alpha: bool) -> tuple[Tensor, Tensor | None]:
    """∂ℓ/∂z and the per-row ∂ℓ/∂α (rows, 1) of α-entmax, from its output p and ∂ℓ/∂p = g.

    With s = p^{2−α} on the support: ∂ℓ/∂z = s⊙g − s (Σ s⊙g)/Σ s (any α; s = p at α = 1, softmax).
    ∂ℓ/∂α = Σ g (p − p̃)/(α−1)² + (Σ g h − Σ h · Σ g p̃)/(α−1), p̃ = s/Σs, h = −p log p (Correia et al.
    2019, Prop. 1, which holds for any α ≠ 1). Its terms cancel as α → 1; for |α − 1| < 1/8 it is
    evaluated as (Φ Σ g p (1 + t) − (1 + T) Σ g p φ) / ((1 + T + Φ)(α−1)²), with t = −(α−1) log p,
    φ = e^t − 1 − t, T = Σ p t, Φ = Σ p φ — the same quantity regrouped (using Σ p = 1 and s = p e^t)
    so that no term is larger than the result; at α = 1 exactly, its limit ½(Σ g p · Σ p log² p − Σ g p log² p).
    """
    pos = p > 0
    logp = torch.where(pos, p.log(), torch.zeros_like(p))
    am1 = alpha - 1
    # s = p^{2−α}, which for α > 2 can pass float64's range (α = 200, p = 1e-3: 1e597): p̃ = s/Σs from s scaled
    # by its row maximum, and ∂ℓ/∂z = s ⊙ (g − Σ p̃ g) (inf only where the true value is beyond float64)
    log_s = torch.where(pos, (1 - am1) * logp, -math.inf)
    top = log_s.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    s_scaled = (log_s - top).exp()
    pt = s_scaled / _safe(s_scaled.sum(-1, keepdim=True))
    s = log_s.exp()
    gz = torch.where(pos, s * (g - (pt * g).sum(-1, keepdim=True)), torch.zeros_like(g))
    if not need_alpha:
        return gz, None
    h = -p * logp
    safe = _safe(am1)
    general = (g * (p - pt)).sum(-1, keepdim=True) / safe**2 + (
        (g * h).sum(-1, keepdim=True) - h.sum(-1, keepdim=True) * (g * pt).sum(-1, keepdim=True)
    ) / safe
    near = am1.abs() < _REGROUP_BELOW
    t = -torch.where(near, am1, torch.zeros_like(am1)) * logp
    ph = phi(t)
    big_t, big_phi = (p * t).sum(-1, keepdim=True), (p * ph).sum(-1, keepdim=True)
    regrouped = (
        big_phi * (g * p * (1 + t)).sum(-1, keepdim=True) - (1 + big_t) * (g * p * ph).sum(-1, keepdim=True)
    ) / ((1 + big_t + big_phi) * safe**2)
    plog2 = p * logp * logp
    limit = 0.5 * ((g * p).sum(-1, keepdim=True) * plog2.sum(-1, keepdim=True) - (g * plog2).sum(-1, keepdim=True))
    ga = torch.where(am1 == 0, limit, torch.where(near, regrouped, general))
    return gz, ga


def normmax_backward_rows(p: Tensor, g: Tensor, alpha: Tensor, need_alpha: bool) -> tuple[Tensor, Tensor | None]:
    """∂ℓ/∂z and the per-row ∂ℓ/∂α of α-normmax, from its output p (α ≤ 1 rows are piecewise constant: 0).

    With q = p/‖p‖_α (so Σ q^α = 1), Q = Σ q, β = 1/(α−1), s = q^{2−α} on the support and c = (g − Σ g p)/Q
    (the gradient in q of p = q/Q): differentiating Σ [z − τ]₊^{α/(α−1)} = 1 gives dτ = qᵀdz/Q, so
    ∂ℓ/∂z = β (s⊙c − q (Σ s⊙c)/Q); in α, dτ/dα = −Σ q^α log q/(α Q) and
    dq/dα = −β q log q − β s dτ/dα, so ∂ℓ/∂α = Σ c dq/dα.
    """
    le1 = alpha <= 1
    a = torch.where(le1, torch.full_like(alpha, 2.0), alpha)
    pos = p > 0
    zero = torch.zeros_like(p)
    logp = torch.where(pos, p.log(), zero)
    pa = torch.where(pos, (a * logp).exp(), zero)  # p^α
    spa = pa.sum(-1, keepdim=True)
    ok = (spa > 0) & ~le1
    tiny = torch.finfo(p.dtype).tiny
    log_q_scale = torch.where(ok, -spa.clamp_min(tiny).log() / a, torch.zeros_like(spa))  # log Q, Q = 1/‖p‖_α
    big_q = log_q_scale.exp()
    q = p * big_q
    logq = torch.where(pos, logp + log_q_scale, zero)
    s = torch.where(pos, ((2 - a) * logq).exp(), zero)
    beta = 1 / (a - 1)
    c = (g - (g * p).sum(-1, keepdim=True)) / big_q
    sc = s * c
    gz = torch.where(ok, beta * (sc - q * sc.sum(-1, keepdim=True) / big_q), zero)
    if not need_alpha:
        return gz, None
    qa = pa / _safe(spa)  # q^α
    dtau = -(qa * logq).sum(-1, keepdim=True) / (a * big_q)
    dq = -beta * q * logq - beta * s * dtau
    ga = torch.where(ok, (c * dq).sum(-1, keepdim=True), torch.zeros_like(alpha))
    return gz, ga


def budget_backward_rows(p: Tensor, g: Tensor, need_budget: bool) -> tuple[Tensor, Tensor | None]:
    """∂ℓ/∂z and per-row ∂ℓ/∂B of budget sparsemax. On the free set A = {0 < p < 1}, τ = (Σ_A z + #{p = 1} − B)/|A|,
    so ∂ℓ/∂z = [A](g − mean_A g) and ∂ℓ/∂B = mean_A g (0 where A is empty: p is then locally constant)."""
    free = (p > 0) & (p < 1)
    count = free.sum(-1, keepdim=True)
    mean = (g * free).sum(-1, keepdim=True) / count.clamp_min(1)
    gz = torch.where(free, g - mean, torch.zeros_like(g))
    return gz, (torch.where(count > 0, mean, torch.zeros_like(mean)) if need_budget else None)


# --- regularisers of the Fenchel–Young losses (p fixed; per row, (rows,)) ------------------------------------


def tsallis(p: Tensor, alpha: Tensor) -> Tensor:
    """H_α(p) per row (rows,), any α > 0 (Shannon at α = 1): adasparse's cancellation-free form."""
    return _tsallis(p, alpha).squeeze(-1)


def tsallis_dalpha(p: Tensor, alpha: Tensor) -> Tensor:
    """∂H_α(p)/∂α per row with p fixed, any α > 0: adasparse's cancellation-free form."""
    return _tsallis_dalpha(p, alpha).squeeze(-1)


def normmax_omega(p: Tensor, alpha: Tensor) -> Tensor:
    """1 − ‖p‖_α (0 for a one-hot p, for every α)."""
    pos = p > 0
    logp = torch.where(pos, p.log(), torch.zeros_like(p))
    spa = torch.where(pos, (alpha * logp).exp(), torch.zeros_like(p)).sum(-1, keepdim=True)
    return (1 - spa.pow(1 / alpha)).squeeze(-1)


def normmax_omega_dalpha(p: Tensor, alpha: Tensor) -> Tensor:
    """∂(1 − ‖p‖_α)/∂α = −‖p‖_α (Σ p^α log p/(α Σ p^α) − log(Σ p^α)/α²)."""
    pos = p > 0
    logp = torch.where(pos, p.log(), torch.zeros_like(p))
    pa = torch.where(pos, (alpha * logp).exp(), torch.zeros_like(p))
    spa = _safe(pa.sum(-1, keepdim=True))
    dlog = (pa * logp).sum(-1, keepdim=True) / (alpha * spa) - spa.log() / alpha**2
    return (-spa.pow(1 / alpha) * dlog).squeeze(-1)
