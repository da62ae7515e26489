r"""A PyTorch model of the fused kernel's threshold solver: its control flow, pass by pass, on materialised scores.

The Triton forward (:mod:`adasparse.kernels.triton_entmax_attention`) runs, per (query block, batch·head), a
first pass over the key blocks (row max m, number n of attendable keys, each row's k largest scores), then solver passes that each sweep the
*live* key blocks, then an output pass.  How many passes it makes and how many key blocks it visits decide its
cost; the interpreter is far too slow to count them at 4k tokens.  This module replays the same decisions —
the same bracket, the same steps and safeguards, the same stopping rules, the same block-liveness test — with
PyTorch tensors over all query blocks at once, so the counts can be taken on realistic inputs in seconds, and
tested against the kernel's own counters (``block_visits``, ``newton_iters``, ``topk_rounds``) on small ones.

Two solvers:

* ``"newton"`` — the kernel before issue 16: Newton from the left end t = 0 of the bracket, bisection when a
  step leaves it, stopping when a step is below 4·eps·(1 + |t|);
* ``"halley"`` — the kernel now: started at the lower bound :func:`topk_lower_bound` computed from each row's
  k largest scores, which the first pass keeps (``topk = 0``: from t = 0, as before); that bound is the
  bracket's lower end from the first solver pass on, so blocks empty there die in it.  Then Halley steps (f''
  is one more sum), Newton when Halley's denominator is not positive, bisection when both leave the bracket;
  stopping as soon as |f| = |Σp − 1| ≤ ``eps_f`` (set by the
  output dtype, since the output is renormalised) or a step is below 4·eps·(1 + |t|); when it stops on |f|
  with f > 0 (left of the root) it takes one more Newton step *without evaluating it* (f is convex and
  decreasing, so that step cannot overshoot: 0 ≤ f_next ≤ f) and the output pass, which renormalises by its
  own Σp, is that evaluation.  Closed forms for α = 2 (p = w) and α = 1.5 (p = w²) change the cost of a
  pass, not the count.

With m the row max and t ≥ 0 the threshold, ``w = 1 + (α−1)(z − m − t)``, ``p = [w]₊^{1/(α−1)}``,
``f(t) = Σ p − 1``, ``−f'(t) = Σ p/w``, ``f''(t) = (2 − α) Σ p/w²``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SolverCounts", "simulate_solver", "eps_f_for", "topk_lower_bound", "TOPK", "START_NEWTON"]

SOLVERS = ("newton", "halley")
TOPK = 8  # the kernel's default: each row keeps its 8 largest scores from the first pass
START_NEWTON = 6  # Newton steps on the top-k minorant that give the solver's starting point


def eps_f_for(dtype: torch.dtype) -> float:
    """|Σp − 1| at which the solver stops, by output dtype: below the output's own rounding."""
    return {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 2.5e-4, torch.bfloat16: 1e-3}[dtype]


@dataclass(frozen=True)
class SolverCounts:
    """Per (batch·head, query block): solver passes, key-block visits (all passes), reachable key blocks.

    ``passes`` counts the solver's evaluation passes only (the first pass and the output pass come on top);
    ``block_visits`` counts every key block read by the program: first pass + solver passes (live blocks) +
    output pass (live blocks), the kernel's ``block_visits``.  ``nonempty`` is the block mask (True where a tile
    holds a non-zero weight) and ``threshold``/``normaliser`` the per-row t and Σp the output uses.
    """

    passes: Tensor  # (BH, n_qb) int
    block_visits: Tensor  # (BH, n_qb) int: reachable + solver_visits + output_visits
    solver_visits: Tensor  # (BH, n_qb) int: live key blocks summed over the solver passes
    output_visits: Tensor  # (BH, n_qb) int: live key blocks in the output pass
    reachable: Tensor  # (BH, n_qb) int
    nonempty: Tensor  # (BH, n_qb, n_kb) bool
    threshold: Tensor  # (BH, Lq)
    normaliser: Tensor  # (BH, Lq)
    topk_rounds: Tensor  # (BH, n_qb) int: the first pass's top-k extraction rounds, summed over its key blocks

    @property
    def sweeps(self) -> float:
        """Key-block visits per reachable tile: how many full sweeps over K the forward made, on average."""
        return self.block_visits.sum().item() / self.reachable.sum().clamp_min(1).item()

    @property
    def empty_fraction(self) -> float:
        """Fraction of the reachable tiles with no non-zero weight."""
        return 1.0 - self.nonempty.sum().item() / self.reachable.sum().clamp_min(1).item()


def simulate_solver(
    z: Tensor,
    ok: Tensor,
    alpha: Tensor,
    *,
    block_m: int = 64,
    block_n: int = 64,
    is_causal: bool = False,
    solver: str = "halley",
    eps_f: float | None = None,
    max_iter: int = 100,
    topk: int = TOPK,
) -> SolverCounts:
    """Replay the kernel's forward control flow on scores ``z`` (BH, Lq, Lk) with attendable mask ``ok``.

    ``z`` must already be scaled (``scale · q kᵀ``) and carries the accumulation dtype (float32 for half and
    float32 inputs, float64 for float64): that is the precision the kernel computes in.  ``alpha`` (BH,) per
    (batch·head) row of ``z``.  ``is_causal`` only sets the loop bounds (which tiles are reachable); the causal
    order itself must be in ``ok``.  ``eps_f`` defaults to :func:`eps_f_for` of ``z``'s dtype (the halley solver
    only).  ``topk`` is the number of scores per row that the first pass keeps to start the solver from
    :func:`topk_lower_bound` (0: from the bracket's left end t = 0, the kernel before this start).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if z.dim() != 3 or ok.shape != z.shape:
        raise ValueError(f"z and ok must be (BH, Lq, Lk) of one shape, got {tuple(z.shape)} and {tuple(ok.shape)}")
    BH, Lq, Lk = z.shape
    dt = z.dtype
    n_qb, n_kb = -(-Lq // block_m), -(-Lk // block_n)
    tol = 4 * torch.finfo(dt).eps
    eps_f = eps_f_for(dt) if eps_f is None else eps_f
    # pad to whole tiles; padded entries are not attendable
    zp = z.new_zeros(BH, n_qb * block_m, n_kb * block_n)
    okp = torch.zeros(zp.shape, dtype=torch.bool, device=z.device)
    zp[:, :Lq, :Lk] = z
    okp[:, :Lq, :Lk] = ok
    Z = zp.view(BH, n_qb, block_m, n_kb, block_n)  # (BH, QB, BM, KB, BN)
    OK = okp.view(BH, n_qb, block_m, n_kb, block_n)
    kb_end = torch.full((n_qb,), n_kb, dtype=torch.long)
    if is_causal:
        kb_end = torch.tensor([min(n_kb, -(-min((i + 1) * block_m, Lq) // block_n)) for i in range(n_qb)])
    reach = (torch.arange(n_kb)[None, :] < kb_end[:, None]).expand(BH, n_qb, n_kb)  # (BH, QB, KB)

    # pass 1
    zm = torch.where(OK, Z, -math.inf)
    m = zm.amax((3, 4))  # (BH, QB, BM)
    cnt = OK.sum((3, 4))
    has = cnt > 0
    m = torch.where(has, m, 0.0)
    solver_visits = torch.zeros(BH, n_qb, dtype=torch.long)
    a = alpha.to(dt).view(BH, 1, 1)
    am1 = a - 1.0
    soft = (am1 == 0).view(BH)
    inv_am1 = 1.0 / torch.where(am1 == 0, 1.0, am1)
    y0 = Z - m[..., None, None]  # z − m

    t = torch.zeros_like(m)
    norm_pred = torch.where(has, 1.0, 0.0).to(dt)
    alive = reach.clone()
    n_iter = torch.zeros(BH, n_qb, dtype=torch.long)
    # softmax heads: t = log Σ exp(z − m), no solver passes
    ls = torch.where(OK, torch.exp(y0), 0.0).sum((3, 4))
    t = torch.where(soft.view(BH, 1, 1) & has, torch.log(torch.where(has, ls, 1.0)), t)

    em1 = torch.expm1(-am1 * torch.log(cnt.clamp_min(1).to(dt)))
    hi = (-em1 * inv_am1) * 1.001 + 1e-6
    lo = torch.zeros_like(m)
    topk_rounds = torch.zeros(BH, n_qb, dtype=torch.long)
    if topk > 0:
        top, topk_rounds = _tile_topk(zm, topk, soft)
        start = topk_lower_bound(top, m, alpha.to(dt).view(BH, 1, 1), tol)
        start = torch.where(soft.view(BH, 1, 1) | ~has, 0.0, start)
        t = torch.where(soft.view(BH, 1, 1), t, start)
        lo = start
    done = ~has | soft.view(BH, 1, 1)  # (BH, QB, BM)
    blk_done = done.all(-1)  # (BH, QB): a query block iterates while any of its rows is not done
    while not bool(blk_done.all()):
        active = ~blk_done  # blocks that run this pass (their finished rows just carry along)
        it_last = n_iter == max_iter - 1
        u = am1[..., None, None] * (y0 - t[..., None, None])
        pos = OK & (u > -1.0)
        w = torch.where(pos, 1.0 + u, 1.0)
        pu = torch.where(pos, torch.exp(torch.log1p(torch.where(pos, u, 0.0)) * inv_am1[..., None, None]), 0.0)
        blk_live = alive[:, :, None, :, None]
        pu = torch.where(blk_live, pu, 0.0)
        fsum = pu.sum((3, 4))
        g = torch.where(pos & blk_live, pu / w, 0.0).sum((3, 4))
        h = torch.where(pos & blk_live, pu / (w * w), 0.0).sum((3, 4))
        # liveness at the bracket's lower end (before this pass's update)
        live_lo = (OK & (am1[..., None, None] * (y0 - lo[..., None, None]) > -1.0)).any(4).any(2)  # (BH, QB, KB)
        solver_visits += torch.where(active, alive.sum(-1), 0)
        alive = torch.where(active[..., None], alive & live_lo, alive)
        f = fsum - 1.0
        lo_new = torch.where(f > 0, t, lo)
        hi_new = torch.where(f < 0, t, hi)
        gs = torch.where(g > 0, g, 1.0)
        newton = t + f / gs
        if solver == "newton":
            step = torch.where((newton > lo_new) & (newton < hi_new), newton, 0.5 * (lo_new + hi_new))
            final = done | (f == 0) | ((step - t).abs() <= tol * (1 + t.abs())) | it_last[..., None]
            fuse = torch.zeros_like(final)
        else:
            den = 2 * g * g - (2 - a) * f * h
            halley = t + 2 * f * g / torch.where(den > 0, den, 1.0)
            halley = torch.where(den > 0, halley, newton)
            inside = (halley > lo_new) & (halley < hi_new)
            n_inside = (newton > lo_new) & (newton < hi_new)
            step = torch.where(inside, halley, torch.where(n_inside, newton, 0.5 * (lo_new + hi_new)))
            close = f.abs() <= eps_f
            small = (step - t).abs() <= tol * (1 + t.abs())
            final = done | close | small | (f == 0) | it_last[..., None]
            fuse = final & ~done & close & (f > 0) & n_inside
        new_final = final & ~done
        norm_pred = torch.where(new_final, torch.where(fuse, 1.0, fsum), norm_pred)
        t_next = torch.where(fuse, newton, torch.where(final, t, step))
        # rows of blocks that did not run keep their state
        run = active[..., None]
        t = torch.where(run, t_next, t)
        lo = torch.where(run, lo_new, lo)
        hi = torch.where(run, hi_new, hi)
        done = torch.where(run, final, done)
        n_iter = n_iter + active.long()
        blk_done = done.all(-1)

    # output pass over the live blocks: weights at the final t, renormalised by their own sum
    u = am1[..., None, None] * (y0 - t[..., None, None])
    pos = OK & torch.where(soft.view(BH, 1, 1, 1, 1), True, u > -1.0)
    pos = pos & alive[:, :, None, :, None]
    nonempty = pos.any(4).any(2) & alive
    pu_soft = torch.exp(y0 - t[..., None, None])
    pu_ent = torch.exp(torch.log1p(torch.where(pos, u, 0.0)) * inv_am1[..., None, None])
    pu = torch.where(pos, torch.where(soft.view(BH, 1, 1, 1, 1), pu_soft, pu_ent), 0.0)
    l_acc = pu.sum((3, 4))
    del norm_pred  # the output pass's own Σp is the normaliser (what the kernel stores)
    return SolverCounts(
        passes=n_iter, block_visits=reach.sum(-1) + solver_visits + alive.sum(-1), solver_visits=solver_visits,
        output_visits=alive.sum(-1), reachable=reach.sum(-1), nonempty=nonempty,
        threshold=t.reshape(BH, -1)[:, :Lq], normaliser=l_acc.reshape(BH, -1)[:, :Lq], topk_rounds=topk_rounds,
    )  # fmt: skip


def _tile_topk(zm: Tensor, k: int, soft: Tensor) -> tuple[Tensor, Tensor]:
    """The first pass's k largest scores per row (BH, QB, BM, k), exactly as the kernel keeps them, and the
    number of extraction rounds the kernel makes per query block (BH, QB), summed over its key blocks.

    ``zm`` (BH, QB, BM, KB, BN) holds the scores with -inf where not attendable; ``soft`` (BH,) marks softmax
    heads (no rounds).  Per key block the kernel repeats a round while some row's next largest score x beats the
    smallest of its k kept values: x replaces that minimum (in the rows where it beats it) and every entry equal
    to x is set to -inf (ties count once, which only weakens the bound).  The kept multiset ends as the k largest
    of all candidates (-inf where a row has fewer); replayed here round by round for the count.
    """
    BH, QB, BM, KB, _ = zm.shape
    cand = []
    z = zm
    for _ in range(k):  # a block's candidates in the kernel's order: distinct values, falling
        x = z.amax(-1)  # (BH, QB, BM, KB)
        cand.append(x)
        z = torch.where(z == x[..., None], -math.inf, z)
    run = zm.new_full((BH, QB, BM, k), -math.inf)
    rounds = torch.zeros(BH, QB, dtype=torch.long)
    col = torch.arange(k)
    for kb in range(KB):
        for r in range(k):
            x = cand[r][..., kb]  # (BH, QB, BM)
            ins = x > run.amin(-1)
            if not bool(ins.any()):
                break
            rounds += ins.any(-1).long()  # the query blocks that make this round (rows inserting in one)
            slot = (col == run.argmin(-1, keepdim=True)) & ins[..., None]
            run = torch.where(slot, x[..., None], run)
    return run, torch.where(soft.view(BH, 1), 0, rounds)


def topk_lower_bound(top: Tensor, m: Tensor, alpha: Tensor, tol: float, steps: int = START_NEWTON) -> Tensor:
    r"""A lower bound on the threshold t* from k of a row's scores: where the kernel's solver starts.

    ``top`` (..., k) holds k scores of distinct attendable keys of each row (-inf where fewer), ``m`` (...) the
    row max (one of them), ``alpha`` broadcastable to ``m`` (α > 1).  Why it is valid: with
    g(y) = [1 + (α−1)y]₊^{1/(α−1)} ≥ 0 the solver's f(t) = Σ_{all keys} g(z − m − t) − 1 is at least the
    minorant F(t) = Σ_{top} g(z − m − t) − 1 for every t (F drops non-negative terms), so F's root t_F ≤ t*.
    F is convex (g is, for 1 < α ≤ 2: a power ≥ 1 of [affine]₊) and decreasing, and F(0) ≥ 0 (the max gives
    g(0) = 1): Newton steps started at t = 0 climb monotonically towards t_F and never pass it, so *every*
    iterate is ≤ t_F ≤ t*, however few are taken.  Rounding: F and −F' = Σ g/w (w ≤ 1, so −F' ≥ Σ g ≈ 1 near
    t_F) are sums of k terms, so a computed iterate exceeds t_F by at most a few k·eps; the bound is moved left
    by 64·tol·(1 + t) (tol = 4 eps) to cover it, and clamped at 0 (the bracket's left end).
    """
    am1 = alpha - 1.0
    inv_am1 = 1.0 / am1
    y = top - m[..., None]  # ≤ 0, -inf where no key
    t = torch.zeros_like(m)
    for _ in range(steps):
        u = am1[..., None] * (y - t[..., None])
        pos = u > -1.0
        us = torch.where(pos, u, 0.0)
        p = torch.where(pos, torch.exp(torch.log1p(us) * inv_am1[..., None]), 0.0)
        g = torch.where(pos, p / (1.0 + us), 0.0).sum(-1)
        t = t + (p.sum(-1) - 1.0) / torch.where(g > 0, g, 1.0)
    return (t - 64 * tol * (1.0 + t)).clamp_min(0.0)
