r"""Fused, block-sparse α-entmax attention in Triton, with a per-head α that may be learned.

For queries q (B, H, Q, D), keys k and values v (B, H, K, D) and one α per head, computes::

    z = scale · q kᵀ   (masked keys excluded),   P = α-entmax(z) row-wise,   out = P v

without ever materialising the (Q × K) matrix P: memory is linear in the sequence length, plus a block mask
of ``⌈Q/BLOCK_M⌉ × ⌈K/BLOCK_N⌉`` bytes per (batch, head).

Threshold parameterisation.  With m the row maximum of z over attendable keys, α-entmax is
``p_i = [1 + (α−1)(z_i − m − t)]₊^{1/(α−1)}`` for the scalar t ≥ 0 that makes Σ p = 1.  (This is the
guide's ``p_i = [(α−1) z_i − τ]₊^{1/(α−1)}`` with ``τ = (α−1)(m + t) − 1``.)  Written this way,
``log p_i = log1p((α−1)(z_i − m − t)) / (α−1)`` tends to ``z_i − m − t`` as α → 1, so α = 1.01 loses no
precision in float32 and α = 1 is exactly softmax with t = log Σ exp(z − m).  The root lies in
``t ∈ [0, (1 − n^{1−α})/(α−1)]`` (n attendable keys), the guide's bracket ``τ ∈ [−1, −n^{1−α}]`` (shifted).

Forward, one program per (query block, batch·head):

1. one pass over the key blocks: row max m and number n of attendable keys (softmax heads: also Σ exp), and
   each row's 8 largest scores (a multiset in registers, filled by extraction rounds that run only while some
   row's next score beats its 8th kept one); Newton on the minorant F(t) = Σ_{top 8} [·]₊^{1/(α−1)} − 1 of f
   gives a lower bound t₀ ≤ t* (proof at ``_topk_lower_bound``), typically 75–95% of the way to the root;
2. Halley on f(t) = Σ [1 + (α−1)(z − m − t)]₊^{1/(α−1)} − 1 (f' and f'' are two more sums), started at t₀,
   which is also the bracket's lower end, so key blocks empty at t₀ die in the first solver pass; Newton where Halley's denominator is not positive, bisection where a step
   leaves the current bracket.  It stops when |f| ≤ EPS_F, set by the output dtype (the output is
   renormalised, so this bounds its error), or when a step is at rounding level; stopping left of the root it
   takes one more Newton step without evaluating it (f is convex and decreasing: the step lands in [t, root])
   and the output pass, which renormalises by its own Σp, is that evaluation.  α = 2 (p = w) and α = 1.5
   (p = w²) use closed forms, per head.  Each iteration is one pass over the key blocks; a key block in which
   every weight is zero at the bracket's lower end is marked dead and never visited again (the lower end only
   grows, so a dead block stays empty).  Liveness is a bitmask held in registers (bit kb of int32 word kb // 32);
   each pass walks a copy of it, popping the lowest set bit (two reductions over the words and a few scalar bit
   operations, the same in every thread: ``_pop_lowest``), so its loop runs once per live block with no branch
   on liveness and the K loads pipeline (cp.async, ``num_stages`` deep, on sm_90: see :func:`compile_kernels`).
   ``adasparse/kernels/solver_model.py`` replays this
   control flow in PyTorch (tested to match the kernel's counters) to count passes at realistic sizes;
3. a last pass over the live blocks (the same walk) accumulates ``out = Σ p v`` and records in a register
   bitmask, stored once, which blocks hold a non-zero weight (a block live at the bracket's lower end may hold
   none at the final t: it skips the V load and the dots).  When gradients are wanted it also accumulates ``Õ = Σ p̃ v`` with
   ``p̃ ∝ p^{2−α}`` (so the backward needs no extra pass for ``δ = Σ_j dP_ij p̃_ij = dO_i · Õ_i``), and,
   when α needs a gradient, the row vector G with ``∂ℓ/∂α = dO · G`` (see below).

Backward, one program per (key block, batch·head) in FlashAttention-2's shape: it recomputes p from (m, t, l)
on the query blocks the mask marks non-empty (its column, loaded once as a register bitmask and walked as in the
forward), once, and makes five matmuls — QKᵀ, dP = dO vᵀ, dV += Pᵀ dO,
dK += dZᵀ q and dQ's share dZ k, added atomically into a float32 (float64) buffer::

    dV = Pᵀ dO,  dP = dO vᵀ,  s = p^{2−α} on the support,  dZ = s ⊙ (dP − δ),  dQ = scale·dZ k,  dK = scale·dZᵀ q

``deterministic=True`` (or ``torch.use_deterministic_algorithms``) instead runs two programs per block, no
atomics: the same kernel for dK, dV without dQ, then one over query blocks for dQ (each recomputes p and dP);
and the α gradient needs no kernel at all: ``∂ℓ/∂α = Σ_rows dO · G`` per head.

α gradient without cancellation.  The guide's per-row formula
``∂ℓ/∂α = (Σ dP p − δ)/(α−1)² + Σ (dP − δ) h/(α−1)`` subtracts two terms of size 1/(α−1) to get an O(1)
result (float32 loses ~3 digits at α = 1.01).  With ε = α − 1, λ = log p, s = p^{1−ε} = p(1 + ε ẽ),
ẽ = expm1(−ελ)/ε and φ̃ = (expm1(−ελ) + ελ)/ε², the same quantity is exactly::

    ∂ℓ/∂α = [Φ̃ (dO·O) − dO·O_φ̃ − Ẽ (dO·O_λ) + Λ (dO·O_ẽ)] / (1 + εẼ),
    O_u = Σ_j p_j u_j v_j,  Ũ = Σ_j p_j u_j  (u ∈ {ẽ, φ̃, λ}),

where every term is O(1) and computed from series for small ελ; at ε = 0 it is the α → 1 limit
½((dO·O) Σ pλ² − Σ dP pλ²) with no special case.  The forward folds it into one saved vector G.

What a GPU needs that the interpreter does not show (tests/kernels run a strict interpreter that poisons
masked-out lanes with NaN and fails a program that reads back its own global-memory stores): every masked load
has a fill that is safe for its use (0 for q, k, v, dO: padded head dims and keys then add exact zeros to
the dots, and 0 × NaN never arises); no program communicates with itself through global memory (the block
mask is written once per block, only read by the backward kernels); offsets are 64-bit whenever some tensor
has 2³¹ or more addressable elements (program ids and row indices are widened before they meet a stride, in a
separate ``IDX64`` specialisation, so the common case keeps 32-bit offsets and fewer registers); log1p/expm1
are computed without cancellation (Goldberg's trick on top of ``tl.log``, which compiles to the accurate libdevice ``logf``).

Tiles (BLOCK_M × BLOCK_N, shared by the forward and the backward, which reads the forward's block mask), warps
and pipelining stages come from :mod:`adasparse.kernels.tiles`: a table keyed on head dim, dtype and length
bucket, a tuner that times the candidates on a GPU, one fixed configuration under the interpreter.

Conventions: boolean masks, True = may attend; ``is_causal`` lets query i attend keys j ≤ i (top-left
aligned, as ``torch.nn.functional.scaled_dot_product_attention``); a query with no attendable key gets a
zero output row and zero gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Real

import torch
import triton
import triton.language as tl
from torch import Tensor

from .solver_model import START_NEWTON, TOPK, eps_f_for
from .tiles import TileConfig, tile_config

__all__ = [
    "triton_entmax_attention",
    "triton_entmax_attention_forward",
    "EntmaxAttentionForward",
    "SUPPORTED_DTYPES",
    "MAX_HEAD_DIM",
    "check_inputs",
]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_HEAD_DIM = 128
# tiles, warps and stages: adasparse/kernels/tiles.py (a table keyed on head dim, dtype and length; a tuner)
_MAX_ITER = 100  # Halley from the left needs 4–7 passes at 4k (benchmarks/RESULTS.md); a safety bound


# ----------------------------------------------------------------------------------------------------------
# Triton helpers
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _log1p(u):
    """log(1 + u) accurate for small |u| (Goldberg's trick: log(w)·u/(w − 1) with w = 1 + u), u > −1."""
    w = 1.0 + u
    dw = w - 1.0
    return tl.where(dw == 0.0, u, tl.log(w) * (u / tl.where(dw == 0.0, 1.0, dw)))


@triton.jit
def _log1p_2(u):
    """log₂(1 + u) by Goldberg's trick in base 2, u > −1 (``FAST_LOG``; with Triton 3.9 ``tl.log2`` still lowers
    to a libdevice polynomial, not MUFU ``lg2.approx``: see :func:`triton_entmax_attention`)."""
    w = 1.0 + u
    dw = w - 1.0
    return tl.where(dw == 0.0, u * 1.4426950408889634, tl.log2(w) * (u / tl.where(dw == 0.0, 1.0, dw)))


@triton.jit
def _wide(x, IDX64: tl.constexpr):
    """``x`` as int64 in the kernels' 64-bit-index specialisation (some tensor has ≥ 2³¹ addressable elements,
    so an offset may not fit in 32 bits); ``x`` itself otherwise (fewer registers: 32-bit offsets)."""
    if IDX64:
        y = x.to(tl.int64)
    else:
        y = x
    return y


@triton.jit
def _valid(offs_m, offs_n, Lq, Lk, kpm_b, HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """(BLOCK_M, BLOCK_N) boolean: query row in range, key in range, key not padded, causal order."""
    ok = (offs_m[:, None] < Lq) & (offs_n[None, :] < Lk)
    if HAS_KPM:
        km = tl.load(kpm_b + offs_n, mask=offs_n < Lk, other=0)  # 0 = padded: masked keys never attend
        ok = ok & (km[None, :] != 0)
    if IS_CAUSAL:
        ok = ok & (offs_n[None, :] <= offs_m[:, None])
    return ok


@triton.jit
def _unnormalised(z, ok, m, t, am1, inv_am1, is_soft, FAST_LOG: tl.constexpr):
    """Weights before normalisation and their natural log on one block.

    Returns (pu, logpu, w, pos): pu = [1 + (α−1)(z − m − t)]₊^{1/(α−1)} (exp(z − m − t) for α = 1), its log
    (meaningful only where pos), w = 1 + (α−1)(z − m − t) (1 where not pos) and pos = (pu > 0).
    ``FAST_LOG``: pu = exp2(log₂(w)/(α−1)), the ln 2 factors cancelling, and the log times ln 2 once.
    """
    y = z - m[:, None] - t[:, None]
    if is_soft:
        pos = ok
        logpu = tl.where(pos, y, 0.0)
        w = y * 0.0 + 1.0
        e = tl.exp(logpu)
    else:
        u = am1 * y
        pos = ok & (u > -1.0)
        us = tl.where(pos, u, 0.0)
        w = 1.0 + us
        if FAST_LOG:
            log2pu = _log1p_2(us) * inv_am1
            logpu = log2pu * 0.6931471805599453  # ln 2
            e = tl.exp2(log2pu)
        else:
            logpu = _log1p(us) * inv_am1
            e = tl.exp(logpu)
    pu = tl.where(pos, e, 0.0)
    return pu, logpu, w, pos


@triton.jit
def _solver_terms(z, ok, m, t, am1, inv_am1, mode, FAST_LOG: tl.constexpr):
    """The solver's sums on one block: (p, p/w, p/w²) with w = 1 + (α−1)(z − m − t), zero off the support.

    ``mode`` (uniform per head) picks a closed form: 2 for α = 2 (p = w: no transcendental), 1 for α = 1.5
    (p = w², p/w = w, p/w² = 1), 0 otherwise (p = exp(log1p(u)·d), with d = 1/(α−1) precomputed and one
    reciprocal of w shared by p/w and p/w²; ``FAST_LOG``: p = exp2(log₂(1 + u)·d), no ln 2 factor at all).
    """
    u = am1 * (z - m[:, None] - t[:, None])
    pos = ok & (u > -1.0)
    us = tl.where(pos, u, 0.0)
    w = 1.0 + us
    if mode == 2:
        pu = w
        gu = w * 0.0 + 1.0
        hu = gu
    elif mode == 1:
        pu = w * w
        gu = w
        hu = w * 0.0 + 1.0
    else:
        if FAST_LOG:
            pu = tl.exp2(_log1p_2(us) * inv_am1)
        else:
            pu = tl.exp(_log1p(us) * inv_am1)
        r = 1.0 / w
        gu = pu * r
        hu = gu * r
    return tl.where(pos, pu, 0.0), tl.where(pos, gu, 0.0), tl.where(pos, hu, 0.0)


@triton.jit
def _alpha_terms(p, lam, eps, inv_eps):
    """Per-entry terms of ∂ℓ/∂α that stay accurate as ε = α − 1 → 0 (zero outside the support).

    With λ = log p and x = −ελ ≥ 0: p ẽ = p·expm1(x)/ε and p φ̃ = p·(expm1(x) − x)/ε², i.e. −pλ·S₁(x) and
    pλ²·S₂(x) with S₂(x) = Σ_{k≥2} x^{k−2}/k! and S₁ = 1 + x S₂ (series for x < 1/4, truncation < 1e-16);
    for x ≥ 1/4 (so ε > 0) directly p ẽ = (p^{2−α} − p)/ε and p φ̃ = (p ẽ + pλ)/ε.  At ε = 0 they are −pλ and pλ²/2.
    """
    x = -eps * lam
    small = x < 0.25
    xs = tl.where(small, x, 0.0)
    s2 = 1.0 / 479001600.0  # 1/12!
    s2 = s2 * xs + 1.0 / 39916800.0
    s2 = s2 * xs + 1.0 / 3628800.0
    s2 = s2 * xs + 1.0 / 362880.0
    s2 = s2 * xs + 1.0 / 40320.0
    s2 = s2 * xs + 1.0 / 5040.0
    s2 = s2 * xs + 1.0 / 720.0
    s2 = s2 * xs + 1.0 / 120.0
    s2 = s2 * xs + 1.0 / 24.0
    s2 = s2 * xs + 1.0 / 6.0
    s2 = s2 * xs + 0.5
    s1 = 1.0 + xs * s2
    pe_big = (tl.exp((1.0 - eps) * lam) - p) * inv_eps
    pe = tl.where(small, -p * lam * s1, pe_big)
    pf = tl.where(small, p * lam * lam * s2, (pe_big + p * lam) * inv_eps)
    pos = p > 0.0
    return tl.where(pos, pe, 0.0), tl.where(pos, pf, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _prefix_bits(widx, n):
    """The register bitmask (int32 words ``widx``) with bits 0 … n−1 set: bit kb of word kb // 32."""
    r = n - widx * 32
    part = ~(-1 << tl.minimum(tl.maximum(r, 0), 31))  # low r bits; shifts < 32 only, nothing wraps
    return tl.where(r >= 32, -1, tl.where(r > 0, part, 0))


@triton.jit
def _pack_bits(flags, col):
    """(N_WORDS, 32) flags → the (N_WORDS,) int32 bitmask (a sum of distinct powers of two: it cannot wrap)."""
    return tl.sum(tl.where(flags != 0, 1 << col[None, :], 0), 1)


@triton.jit
def _lowest_bit(x):
    """Index (0–31) of the lowest set bit of the non-zero int32 scalar ``x``, by halving: masks, compares and
    shifts only (no negation or subtraction, which would wrap at bit 31), no branch."""
    n = ((x & 0xFFFF) == 0).to(tl.int32) * 16
    x = x >> n
    s = ((x & 0xFF) == 0).to(tl.int32) * 8
    n += s
    x = x >> s
    s = ((x & 0xF) == 0).to(tl.int32) * 4
    n += s
    x = x >> s
    s = ((x & 0x3) == 0).to(tl.int32) * 2
    n += s
    x = x >> s
    return n + ((x & 0x1) == 0).to(tl.int32)


@triton.jit
def _pop_lowest(rem, widx, N_WORDS: tl.constexpr):
    """(kb, rem without it): the lowest block left in the register bitmask ``rem`` (some bit must be set).

    Two reductions over the ``N_WORDS`` words (the first word with a bit left, then that word) and a few scalar
    bit operations: ``kb`` is a scalar, the same in every thread, computed without a branch, so a loop
    ``for _ in range(n_live): kb, rem = _pop_lowest(rem, …)`` visits the live blocks in increasing order with a
    branch-free body whose trip count is the number of live blocks.
    """
    w = tl.min(tl.where(rem != 0, widx, N_WORDS), 0)
    x = tl.sum(tl.where(widx == w, rem, 0), 0)
    b = _lowest_bit(x)
    return w * 32 + b, tl.where(widx == w, x & ~(1 << b), rem)


@triton.jit
def _store_bits(ptr, bits, widx, col, n):
    """Store bit kb of the register bitmask ``bits`` as byte ``ptr[kb]`` (0 or 1) for kb < n, in one store."""
    kbs = widx[:, None] * 32 + col[None, :]
    tl.store(ptr + kbs, ((bits[:, None] >> col[None, :]) & 1).to(tl.int8), mask=kbs < n)


@triton.jit
def _topk_insert(top, tcol, x):
    """Insert x (BLOCK_M,) into each row's multiset ``top`` (BLOCK_M, k) in place of its minimum, when larger:
    fed every candidate, ``top`` ends as their k largest (-inf where fewer)."""
    tmin = tl.min(top, 1)
    imin = tl.argmin(top, 1)
    return tl.where((tcol[None, :] == imin[:, None]) & (x > tmin)[:, None], x[:, None], top)


@triton.jit
def _topk_lower_bound(top, m, am1, inv_am1, mode, TOL: tl.constexpr, STEPS: tl.constexpr, FAST_LOG: tl.constexpr):
    """A lower bound on each row's threshold t* from its k largest scores ``top`` (α > 1; rows of a softmax head
    or with no key give a meaningless value, which the caller discards).

    Valid because: with g(y) = [1 + (α−1)y]₊^{1/(α−1)} ≥ 0, f(t) = Σ_{all keys} g(z − m − t) − 1 ≥
    F(t) = Σ_{top} g(z − m − t) − 1 for every t (F drops non-negative terms; ``top`` holds scores of distinct
    keys), so F's root t_F ≤ t*.  F is convex (g is, for 1 < α ≤ 2) and decreasing with F(0) ≥ 0 (the row max
    is in ``top``: g(0) = 1), so Newton from t = 0 climbs monotonically and never passes t_F: every iterate is
    ≤ t_F ≤ t*, however few are taken.  Rounding: F and −F' = Σ g/w (≥ Σ g ≈ 1 near t_F, as w ≤ 1) are sums of
    k terms, so an iterate exceeds t_F by at most a few k·eps; the result is moved left by 64·TOL·(1 + t)
    (TOL = 4 eps) and clamped at 0.  ``adasparse.kernels.solver_model.topk_lower_bound`` is the same in PyTorch.
    """
    t = tl.zeros_like(m)
    has = top > float("-inf")
    for _s in tl.static_range(STEPS):
        pu, gu, hu = _solver_terms(top, has, m, t, am1, inv_am1, mode, FAST_LOG)
        g = tl.sum(gu, 1)
        t = t + (tl.sum(pu, 1) - 1.0) / tl.where(g > 0.0, g, 1.0)
    return tl.maximum(t - 64.0 * TOL * (1.0 + t), 0.0)


@triton.jit
def _fwd_kernel(
    Q, K, V, KPM, ALPHA,
    OUT, ROW_M, ROW_T, ROW_L, OT, GA, BMASK, VISITS, ITERS, ROUNDS,
    sqb, sqh, sql, skb, skh, skl, svb, svh, svl, skpm,
    H, Lq, Lk, D, n_qb, n_kb, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, N_WORDS: tl.constexpr,
    HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr, NEED_GRAD: tl.constexpr, ALPHA_GRAD: tl.constexpr,
    MAX_ITER: tl.constexpr, TOL: tl.constexpr, EPS_F: tl.constexpr, TOPK: tl.constexpr, START_NEWTON: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, IDX64: tl.constexpr, FAST_LOG: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = _wide(tl.program_id(1), IDX64)  # 64-bit offsets when some offset may pass 2³¹ (host decides)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq
    d_ok = offs_d < D
    q_ptrs = Q + b * sqb + h * sqh + _wide(offs_m, IDX64)[:, None] * sql + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # zeros: padded D adds nothing to q·k
    k_bh = K + b * skb + h * skh
    v_bh = V + b * svb + h * svh
    kpm_b = KPM + b * skpm
    bmask_row = BMASK + (bh * n_qb + pid_m) * n_kb  # written once per block, never read back here

    alpha = tl.load(ALPHA + h)
    am1 = alpha - 1.0
    is_soft = am1 == 0.0
    inv_am1 = 1.0 / tl.where(is_soft, 1.0, am1)  # d = 1/(α−1); unused for softmax heads
    mode = tl.where(alpha == 2.0, 2, tl.where(alpha == 1.5, 1, 0))  # closed forms for α = 2 and α = 1.5

    kb_end = n_kb
    if IS_CAUSAL:
        kb_end = tl.minimum(n_kb, tl.cdiv(tl.minimum(pid_m * BLOCK_M + BLOCK_M, Lq), BLOCK_N))
    visits = 0
    # block liveness in registers: bit kb of word kb // 32 (no communication through global memory inside the
    # program); each pass walks its live blocks by popping the lowest bit of a copy (_pop_lowest: a scalar, the
    # same in every thread), so its loop body has no branch and its trip count is n_live
    widx = tl.arange(0, N_WORDS)
    wcol = tl.arange(0, 32)
    bits = _prefix_bits(widx, kb_end)  # every reachable key block (causal: below the diagonal)
    n_live = kb_end

    # pass 1: row max, number of attendable keys, softmax normaliser (online, softmax heads only), and each
    # row's TOPK largest scores (a multiset in registers; see _topk_insert) for the solver's starting point
    m = tl.full((BLOCK_M,), float("-inf"), ACC)
    cnt = tl.zeros((BLOCK_M,), tl.int32)
    ls = tl.zeros((BLOCK_M,), ACC)
    rounds = 0
    if TOPK > 0:
        tcol = tl.arange(0, TOPK)
        top = tl.full((BLOCK_M, TOPK), float("-inf"), ACC)
    for kb in range(0, kb_end):
        offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < Lk) & d_ok[None, :]
        k = tl.load(k_bh + _wide(offs_n, IDX64)[:, None] * skl + offs_d[None, :], mask=kv_mask, other=0.0)
        z = tl.dot(q, tl.trans(k), input_precision=PREC, out_dtype=ACC) * scale  # (BLOCK_M, BLOCK_N)
        ok = _valid(offs_m, offs_n, Lq, Lk, kpm_b, HAS_KPM, IS_CAUSAL)
        zm = tl.where(ok, z, float("-inf"))
        x = tl.max(zm, 1)
        m_new = tl.maximum(m, x)
        if is_soft:
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            ls = ls * tl.exp(m - m_safe) + tl.sum(tl.where(ok, tl.exp(z - m_safe[:, None]), 0.0), 1)
        m = m_new
        cnt += tl.sum(ok.to(tl.int32), 1)
        visits += 1
        if TOPK > 0:
            # rounds while some row's next largest score (x: the block max first) beats its k-th kept value: x
            # falls and the k-th value rises, so a row that stops inserting never resumes (≤ TOPK rounds); the
            # test reuses the block max, so a block that changes no row's multiset costs nothing more
            go = tl.where(is_soft, 0, tl.max((x > tl.min(top, 1)).to(tl.int32), 0))
            while go > 0:
                top = _topk_insert(top, tcol, x)
                zm = tl.where(zm == x[:, None], float("-inf"), zm)  # ties leave together: only weakens the bound
                x = tl.max(zm, 1)
                go = tl.max((x > tl.min(top, 1)).to(tl.int32), 0)
                rounds += 1
    has = cnt > 0
    m = tl.where(has, m, 0.0)
    one = tl.full((BLOCK_M,), 1.0, ACC)
    zero = tl.zeros((BLOCK_M,), ACC)
    n_iter = 0
    if is_soft:
        t = tl.where(has, tl.log(tl.where(has, ls, 1.0)), 0.0)
        norm = tl.where(has, one, zero)
    else:
        # pass 2: Halley from the left end of the bracket [0, (1 − n^{1−α})/(α−1)] (Newton when Halley's
        # denominator is not positive, bisection when a step leaves the bracket); stop when |f| ≤ EPS_F (or a
        # step is at rounding level); stopping left of the root (f > 0), take one more Newton step unevaluated:
        # f is convex and decreasing, so it lands in [t, root], and the output pass (which renormalises by its
        # own Σp) is its evaluation
        a = -am1 * tl.log(tl.maximum(cnt, 1).to(ACC))  # (1 − α) log n ≤ 0
        e = tl.exp(a)
        em1 = tl.where(e == 1.0, a, (e - 1.0) * a / tl.log(tl.where(e == 1.0, 0.5, e)))  # expm1(a)
        hi = (-em1 * inv_am1) * 1.001 + 1e-6  # margin: rounding must not cut the root off
        lo = zero
        if TOPK > 0:
            lo = tl.where(has, _topk_lower_bound(top, m, am1, inv_am1, mode, TOL, START_NEWTON, FAST_LOG), 0.0)
        t = lo  # f(lo) ≥ 0: lo is the bracket's lower end from the first solver pass on
        norm = zero
        two_m_a = 2.0 - alpha  # f'' = (2 − α) Σ p/w²
        done = (cnt == 0).to(tl.int32)
        n_left = tl.sum(1 - done, 0)
        while (n_left > 0) & (n_iter < MAX_ITER):
            fsum = zero
            gsum = zero
            hsum = zero
            rem = bits
            n_pass = n_live
            for _i in range(0, n_pass):  # the live blocks, in order; no branch: the K loads pipeline
                kb, rem = _pop_lowest(rem, widx, N_WORDS)
                offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
                kv_mask = (offs_n[:, None] < Lk) & d_ok[None, :]
                k = tl.load(k_bh + _wide(offs_n, IDX64)[:, None] * skl + offs_d[None, :], mask=kv_mask, other=0.0)
                z = tl.dot(q, tl.trans(k), input_precision=PREC, out_dtype=ACC) * scale
                ok = _valid(offs_m, offs_n, Lq, Lk, kpm_b, HAS_KPM, IS_CAUSAL)
                pu, gu, hu = _solver_terms(z, ok, m, t, am1, inv_am1, mode, FAST_LOG)
                fsum += tl.sum(pu, 1)
                gsum += tl.sum(gu, 1)  # Σ p/w = −f'(t)
                hsum += tl.sum(hu, 1)  # Σ p/w²
                live = tl.sum((ok & (am1 * (z - m[:, None] - lo[:, None]) > -1.0)).to(tl.int32))
                dead = live == 0  # empty at the bracket's lower end, hence at every later t: cleared, not branched on
                bits = tl.where((widx == kb // 32) & dead, bits & ~(1 << (kb % 32)), bits)
                n_live -= dead.to(tl.int32)
                visits += 1
            f = fsum - 1.0
            lo = tl.where(f > 0.0, t, lo)
            hi = tl.where(f < 0.0, t, hi)
            g = tl.where(gsum > 0.0, gsum, 1.0)
            newton = t + f / g
            den = 2.0 * gsum * gsum - two_m_a * f * hsum
            halley = tl.where(den > 0.0, t + 2.0 * f * gsum / tl.where(den > 0.0, den, 1.0), newton)
            n_inside = (newton > lo) & (newton < hi)
            t_new = tl.where((halley > lo) & (halley < hi), halley, tl.where(n_inside, newton, 0.5 * (lo + hi)))
            close = tl.abs(f) <= EPS_F
            small = tl.abs(t_new - t) <= TOL * (1.0 + tl.abs(t))
            final = (done != 0) | close | small | (f == 0.0) | (n_iter == MAX_ITER - 1)
            fuse = final & (done == 0) & close & (f > 0.0) & n_inside
            norm = tl.where(final & (done == 0), tl.where(fuse, one, fsum), norm)  # predicted Σp at the kept t
            t = tl.where(fuse, newton, tl.where(final, t, t_new))
            done = final.to(tl.int32)
            n_left = tl.sum(1 - done, 0)
            n_iter += 1

    # pass 3: accumulate over the live blocks, record which blocks hold a non-zero weight; the weights are
    # normalised by the predicted Σp (norm) on the way and renormalised by their actual sum at the end
    inv_l = tl.where(norm > 0.0, 1.0 / tl.where(norm > 0.0, norm, 1.0), 0.0)
    ln_l = tl.log(tl.where(norm > 0.0, norm, 1.0))
    inv_am1_0 = tl.where(am1 > 0.0, 1.0 / tl.where(am1 > 0.0, am1, 1.0), 0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_D), ACC)
    acc_t = tl.zeros((BLOCK_M, BLOCK_D), ACC)  # Σ s v (no α gradient) or Σ p ẽ v (α gradient)
    acc_f = tl.zeros((BLOCK_M, BLOCK_D), ACC)  # Σ p φ̃ v
    acc_l = tl.zeros((BLOCK_M, BLOCK_D), ACC)  # Σ p λ v
    st = zero  # Σ s or Σ p ẽ
    sf = zero  # Σ p φ̃
    sl = zero  # Σ p λ
    psum = zero  # Σ p (1 up to the solver's tolerance)
    nz_bits = tl.zeros((N_WORDS,), tl.int32)  # the block mask in registers, stored once at the end
    rem = bits
    for _i in range(0, n_live):  # the live blocks, in order: no liveness branch, n_live trips
        kb, rem = _pop_lowest(rem, widx, N_WORDS)
        offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < Lk) & d_ok[None, :]
        offs_kv = _wide(offs_n, IDX64)[:, None]
        k = tl.load(k_bh + offs_kv * skl + offs_d[None, :], mask=kv_mask, other=0.0)
        # always true: without this region Triton 3.9's layout pass recomputes the weights in the dot-operand
        # layout (+60 registers and spills at 8 warps with the α gradient; with the softmax branch, a 1-bit
        # shared-memory buffer that fails to compile); the price: this pass's K load is not pipelined
        if kb >= 0:
            z = tl.dot(q, tl.trans(k), input_precision=PREC, out_dtype=ACC) * scale
            ok = _valid(offs_m, offs_n, Lq, Lk, kpm_b, HAS_KPM, IS_CAUSAL)
            pu, logpu, w, pos = _unnormalised(z, ok, m, t, am1, inv_am1, is_soft, FAST_LOG)
            nonzero = tl.sum(pos.to(tl.int32))
            nz_bits = tl.where((widx == kb // 32) & (nonzero > 0), nz_bits | (1 << (kb % 32)), nz_bits)
            visits += 1
            if nonzero > 0:  # live at the bracket's lower end, but maybe empty at the final t
                # zeros, not garbage: the padded keys meet p = 0 in p·v, and 0 × NaN would be NaN
                v = tl.load(v_bh + offs_kv * svl + offs_d[None, :], mask=kv_mask, other=0.0)
                p = pu * inv_l[:, None]
                psum += tl.sum(p, 1)
                acc += tl.dot(p.to(v.dtype), v, input_precision=PREC, out_dtype=ACC)
                if NEED_GRAD:
                    lam = tl.where(pos, logpu - ln_l[:, None], 0.0)  # λ = log p on the support
                    if ALPHA_GRAD:
                        pe, pf = _alpha_terms(p, lam, am1, inv_am1_0)
                        pl = p * lam
                        acc_t += tl.dot(pe.to(v.dtype), v, input_precision=PREC, out_dtype=ACC)
                        acc_f += tl.dot(pf.to(v.dtype), v, input_precision=PREC, out_dtype=ACC)
                        acc_l += tl.dot(pl.to(v.dtype), v, input_precision=PREC, out_dtype=ACC)
                        st += tl.sum(pe, 1)
                        sf += tl.sum(pf, 1)
                        sl += tl.sum(pl, 1)
                    else:
                        sp = tl.where(pos, tl.exp((1.0 - am1) * lam), 0.0)  # s = p^{2−α}
                        acc_t += tl.dot(sp.to(v.dtype), v, input_precision=PREC, out_dtype=ACC)
                        st += tl.sum(sp, 1)
    _store_bits(bmask_row, nz_bits, widx, wcol, n_kb)  # 0 for dead blocks and above the causal diagonal

    rows = bh * Lq + offs_m  # int64
    od = rows[:, None] * D + offs_d[None, :]
    od_mask = row_ok[:, None] & d_ok[None, :]
    inv_psum = tl.where(psum > 0.0, 1.0 / tl.where(psum > 0.0, psum, 1.0), 0.0)
    tl.store(OUT + od, (acc * inv_psum[:, None]).to(OUT.dtype.element_ty), mask=od_mask)
    tl.store(ROW_M + rows, m, mask=row_ok)
    tl.store(ROW_T + rows, t, mask=row_ok)
    tl.store(ROW_L + rows, norm * psum, mask=row_ok)  # the Σ of unnormalised weights the output used
    if NEED_GRAD:
        if ALPHA_GRAD:
            # S = Σ s = 1 + (α−1)Ẽ;  Õ = (O + (α−1) O_ẽ) / S;  ∂ℓ/∂α (row) = dO · G with
            # G = (Φ̃ O − O_φ̃ − Ẽ O_λ + Λ O_ẽ) / S   (all terms O(1): no cancellation as α → 1)
            ssum = 1.0 + am1 * st
            inv_s = tl.where(norm > 0.0, 1.0 / tl.where(norm > 0.0, ssum, 1.0), 0.0)
            ot = (acc + am1 * acc_t) * inv_s[:, None]
            g = (sf[:, None] * acc - acc_f - st[:, None] * acc_l + sl[:, None] * acc_t) * inv_s[:, None]
            tl.store(GA + od, g, mask=od_mask)
        else:
            ot = acc_t / tl.where(st > 0.0, st, 1.0)[:, None]
        tl.store(OT + od, ot, mask=od_mask)
    tl.store(VISITS + bh * n_qb + pid_m, visits)
    tl.store(ITERS + bh * n_qb + pid_m, n_iter)
    tl.store(ROUNDS + bh * n_qb + pid_m, rounds)


# ----------------------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _bwd_block(
    q, k, v, do, offs_m, offs_n, m, t, inv_l, ln_l, delta, am1, inv_am1, is_soft, Lq, Lk, kpm_b, scale,
    HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, FAST_LOG: tl.constexpr,
):  # fmt: skip
    """Recompute p on one (query block, key block) and return (p, dZ) with dZ = s ⊙ (dP − δ)."""
    z = tl.dot(q, tl.trans(k), input_precision=PREC, out_dtype=ACC) * scale
    ok = _valid(offs_m, offs_n, Lq, Lk, kpm_b, HAS_KPM, IS_CAUSAL)
    pu, logpu, w, pos = _unnormalised(z, ok, m, t, am1, inv_am1, is_soft, FAST_LOG)
    p = pu * inv_l[:, None]
    s = tl.where(pos, tl.exp((1.0 - am1) * (logpu - ln_l[:, None])), 0.0)  # p^{2−α} on the support
    dp = tl.dot(do, tl.trans(v), input_precision=PREC, out_dtype=ACC)
    dz = s * (dp - delta[:, None])
    return p, dz


@triton.jit
def _load_rows(ROW_M, ROW_T, ROW_L, DELTA, rows, row_ok):
    m = tl.load(ROW_M + rows, mask=row_ok, other=0.0)
    t = tl.load(ROW_T + rows, mask=row_ok, other=0.0)
    norm = tl.load(ROW_L + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + rows, mask=row_ok, other=0.0)
    inv_l = tl.where(norm > 0.0, 1.0 / tl.where(norm > 0.0, norm, 1.0), 0.0)
    ln_l = tl.log(tl.where(norm > 0.0, norm, 1.0))
    return m, t, inv_l, ln_l, delta


@triton.jit
def _bwd_kv_kernel(
    Q, K, V, DO, KPM, ALPHA, ROW_M, ROW_T, ROW_L, DELTA, BMASK, DK, DV, DQ_ACC,
    sqb, sqh, sql, skb, skh, skl, svb, svh, svl, sdb, sdh, sdl, skpm,
    H, Lq, Lk, D, n_qb, n_kb, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, IDX64: tl.constexpr,
    ATOMIC_DQ: tl.constexpr, FAST_LOG: tl.constexpr, N_WORDS: tl.constexpr,
):  # fmt: skip
    """dK, dV of one key block over the non-empty query blocks; with ``ATOMIC_DQ`` also each block's share of
    dQ, added atomically to the ACC-dtype buffer ``DQ_ACC`` (FA2's backward: p recomputed once, five matmuls;
    the order of the additions varies, so dQ's rounding does).  Without it ``_bwd_q_kernel`` computes dQ."""
    kb = tl.program_id(0)
    bh = _wide(tl.program_id(1), IDX64)
    b = bh // H
    h = bh % H
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    kv_mask = (offs_n[:, None] < Lk) & d_ok[None, :]
    offs_kv = _wide(offs_n, IDX64)[:, None]
    k = tl.load(K + b * skb + h * skh + offs_kv * skl + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_kv * svl + offs_d[None, :], mask=kv_mask, other=0.0)
    kpm_b = KPM + b * skpm
    alpha = tl.load(ALPHA + h)
    am1 = alpha - 1.0
    is_soft = am1 == 0.0
    inv_am1 = 1.0 / tl.where(is_soft, 1.0, am1)
    dk = tl.zeros((BLOCK_N, BLOCK_D), ACC)
    dv = tl.zeros((BLOCK_N, BLOCK_D), ACC)
    qb_start = 0
    if IS_CAUSAL:
        qb_start = (kb * BLOCK_N) // BLOCK_M
    # the forward's block mask (column kb) as a register bitmask of the non-empty query blocks, walked in order
    # by _pop_lowest: n_live trips, no per-block load of the mask and no branch on it
    widx = tl.arange(0, N_WORDS)
    wcol = tl.arange(0, 32)
    qbs = widx[:, None] * 32 + wcol[None, :]
    flags = tl.load(BMASK + (bh * n_qb + qbs) * n_kb + kb, mask=(qbs >= qb_start) & (qbs < n_qb), other=0)
    rem = _pack_bits(flags, wcol)
    n_live = tl.sum(tl.sum((flags != 0).to(tl.int32), 1), 0)
    for _i in range(0, n_live):  # the non-empty query blocks, in order
        qb, rem = _pop_lowest(rem, widx, N_WORDS)
        offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_m < Lq
        qd_mask = row_ok[:, None] & d_ok[None, :]
        offs_q = _wide(offs_m, IDX64)[:, None]
        q = tl.load(Q + b * sqb + h * sqh + offs_q * sql + offs_d[None, :], mask=qd_mask, other=0.0)
        do = tl.load(DO + b * sdb + h * sdh + offs_q * sdl + offs_d[None, :], mask=qd_mask, other=0.0)
        # always true: without this region the loads of q, dO and the row statistics are pipelined, at 255
        # registers and 56 bytes of spills (sm_90, 8 warps, D = 64); with it none is, and nothing spills
        if qb >= 0:
            m, t, inv_l, ln_l, delta = _load_rows(ROW_M, ROW_T, ROW_L, DELTA, bh * Lq + offs_m, row_ok)
            p, dz = _bwd_block(
                q, k, v, do, offs_m, offs_n, m, t, inv_l, ln_l, delta, am1, inv_am1, is_soft, Lq, Lk, kpm_b, scale,
                HAS_KPM, IS_CAUSAL, ACC, PREC, FAST_LOG,
            )  # fmt: skip
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PREC, out_dtype=ACC)
            dk += tl.dot(tl.trans(dz.to(q.dtype)), q, input_precision=PREC, out_dtype=ACC)
            if ATOMIC_DQ:
                dq = tl.dot(dz.to(k.dtype), k, input_precision=PREC, out_dtype=ACC) * scale
                oq = (bh * Lq + offs_m)[:, None] * D + offs_d[None, :]
                tl.atomic_add(DQ_ACC + oq, dq, mask=qd_mask)  # each address once per program: no RAW
    od = (bh * Lk + offs_n)[:, None] * D + offs_d[None, :]
    tl.store(DK + od, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + od, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _bwd_q_kernel(
    Q, K, V, DO, KPM, ALPHA, ROW_M, ROW_T, ROW_L, DELTA, BMASK, DQ,
    sqb, sqh, sql, skb, skh, skl, svb, svh, svl, sdb, sdh, sdl, skpm,
    H, Lq, Lk, D, n_qb, n_kb, scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, IDX64: tl.constexpr,
    FAST_LOG: tl.constexpr, N_WORDS: tl.constexpr,
):  # fmt: skip
    """dQ of one query block over its non-empty key blocks (the deterministic backward's second kernel)."""
    qb = tl.program_id(0)
    bh = _wide(tl.program_id(1), IDX64)
    b = bh // H
    h = bh % H
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq
    d_ok = offs_d < D
    qd_mask = row_ok[:, None] & d_ok[None, :]
    offs_q = _wide(offs_m, IDX64)[:, None]
    q = tl.load(Q + b * sqb + h * sqh + offs_q * sql + offs_d[None, :], mask=qd_mask, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_q * sdl + offs_d[None, :], mask=qd_mask, other=0.0)
    m, t, inv_l, ln_l, delta = _load_rows(ROW_M, ROW_T, ROW_L, DELTA, bh * Lq + offs_m, row_ok)
    kpm_b = KPM + b * skpm
    alpha = tl.load(ALPHA + h)
    am1 = alpha - 1.0
    is_soft = am1 == 0.0
    inv_am1 = 1.0 / tl.where(is_soft, 1.0, am1)
    dq = tl.zeros((BLOCK_M, BLOCK_D), ACC)
    kb_end = n_kb
    if IS_CAUSAL:
        kb_end = tl.minimum(n_kb, tl.cdiv(tl.minimum(qb * BLOCK_M + BLOCK_M, Lq), BLOCK_N))
    widx = tl.arange(0, N_WORDS)
    wcol = tl.arange(0, 32)
    kbs = widx[:, None] * 32 + wcol[None, :]
    flags = tl.load(BMASK + (bh * n_qb + qb) * n_kb + kbs, mask=kbs < kb_end, other=0)  # row qb of the mask
    rem = _pack_bits(flags, wcol)
    n_live = tl.sum(tl.sum((flags != 0).to(tl.int32), 1), 0)
    for _i in range(0, n_live):  # the non-empty key blocks, in order; no branch: K, V loads pipeline
        kb, rem = _pop_lowest(rem, widx, N_WORDS)
        offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < Lk) & d_ok[None, :]
        offs_kv = _wide(offs_n, IDX64)[:, None]
        k = tl.load(K + b * skb + h * skh + offs_kv * skl + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + b * svb + h * svh + offs_kv * svl + offs_d[None, :], mask=kv_mask, other=0.0)
        p, dz = _bwd_block(
            q, k, v, do, offs_m, offs_n, m, t, inv_l, ln_l, delta, am1, inv_am1, is_soft, Lq, Lk, kpm_b, scale,
            HAS_KPM, IS_CAUSAL, ACC, PREC, FAST_LOG,
        )  # fmt: skip
        dq += tl.dot(dz.to(k.dtype), k, input_precision=PREC, out_dtype=ACC)
    od = (bh * Lq + offs_m)[:, None] * D + offs_d[None, :]
    tl.store(DQ + od, (dq * scale).to(DQ.dtype.element_ty), mask=qd_mask)


# ----------------------------------------------------------------------------------------------------------
# Python side: validation, launch, autograd
# ----------------------------------------------------------------------------------------------------------


def _interpreted() -> bool:
    """True when the kernels were built for the Triton interpreter (``TRITON_INTERPRET=1`` at import)."""
    return not hasattr(_fwd_kernel, "run") or type(_fwd_kernel).__name__ == "InterpretedFunction"


def check_inputs(
    q: Tensor, k: Tensor, v: Tensor, alpha: Tensor | float, key_padding_mask: Tensor | None = None
) -> Tensor:
    """Validate the inputs of :func:`triton_entmax_attention`; return α as a tensor of shape (H,).

    Raises ``TypeError``/``ValueError`` saying what was given and what is allowed.  A number α is checked on
    the host; an α tensor on a CUDA device is checked *on the device* (``torch._assert_async``: no host
    synchronisation, so a call can be queued behind running kernels; an α outside [1, 2] then fails as a CUDA
    device-side assert), elsewhere on the host with a ``ValueError``.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, D), got {tuple(x.shape)}")
        if x.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    B, H, _, D = q.shape
    if k.shape[:2] != (B, H) or k.shape[3] != D or v.shape != k.shape:
        raise ValueError(
            f"expected q (B, H, Q, D), k and v (B, H, K, D) with the same B, H, D; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D must be in [1, {MAX_HEAD_DIM}], got {D}")
    if q.shape[2] == 0 or k.shape[2] == 0:
        raise ValueError(f"sequence lengths must be >= 1, got Q = {q.shape[2]}, K = {k.shape[2]}")
    if B * H > 65535:
        raise ValueError(f"B·H must be <= 65535 (CUDA grid limit), got B = {B}, H = {H}")
    if q.device.type != "cuda" and not _interpreted():
        raise ValueError(
            f"the Triton entmax attention kernel needs CUDA tensors (got {q.device}); on CPU set "
            "TRITON_INTERPRET=1 before importing adasparse.kernels (slow, for tests) or use the reference path"
        )
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
            got = key_padding_mask.dtype if isinstance(key_padding_mask, Tensor) else type(key_padding_mask).__name__
            raise TypeError(f"key_padding_mask must be a bool tensor (True = real key), got {got}")
        if tuple(key_padding_mask.shape) != (B, k.shape[2]):
            raise ValueError(
                f"key_padding_mask must have shape (B, K) = {(B, k.shape[2])}, got {tuple(key_padding_mask.shape)}"
            )
    if isinstance(alpha, Real) and not isinstance(alpha, bool):
        if not 1.0 <= float(alpha) <= 2.0:
            raise ValueError(f"alpha must lie in [1, 2] (1 = softmax, 2 = sparsemax) for this kernel, got {alpha}")
        alpha = torch.full((H,), float(alpha), dtype=torch.float32, device=q.device)
    if not isinstance(alpha, Tensor):
        raise TypeError(f"alpha must be a float or a tensor of shape (H,) = ({H},), got {type(alpha).__name__}")
    if not alpha.is_floating_point():
        raise TypeError(f"alpha must be a floating-point tensor, got {alpha.dtype}")
    if alpha.numel() == 1 and alpha.dim() <= 1:
        alpha = alpha.reshape(1).expand(H)
    if tuple(alpha.shape) != (H,):
        raise ValueError(f"alpha must have shape (H,) = ({H},) or be a scalar, got {tuple(alpha.shape)}")
    a = alpha.detach()
    in_range = ((a >= 1) & (a <= 2)).all()
    if a.is_cuda:
        torch._assert_async(in_range, "alpha must lie in [1, 2] (1 = softmax, 2 = sparsemax) for this kernel")
    elif not bool(in_range):
        raise ValueError(f"alpha must lie in [1, 2] (1 = softmax, 2 = sparsemax) for this kernel, got {a.tolist()}")
    return alpha


@dataclass(frozen=True)
class EntmaxAttentionForward:
    """Everything the forward kernel produces.

    ``out`` (B, H, Q, D) in the input dtype; per row (B, H, Q): ``row_max`` (m), ``threshold`` (t),
    ``normaliser`` (Σ of the unnormalised weights); ``block_mask`` (B, H, ⌈Q/BLOCK_M⌉, ⌈K/BLOCK_N⌉) bool,
    True where a block holds a non-zero weight; ``block_visits`` (B, H, ⌈Q/BLOCK_M⌉) key blocks visited by
    each query block over all passes; ``newton_iters`` (B, H, ⌈Q/BLOCK_M⌉): solver passes (Halley steps now;
    the name stays); ``topk_rounds`` (B, H, ⌈Q/BLOCK_M⌉): the first pass's top-k extraction rounds over its key
    blocks (each costs a row max and a select per score).  ``o_tilde`` (Õ, for δ) and ``g_alpha`` (G, with ∂ℓ/∂α = Σ dO·G) are what the backward
    needs (None when not requested).
    """

    out: Tensor
    row_max: Tensor
    threshold: Tensor
    normaliser: Tensor
    block_mask: Tensor
    block_visits: Tensor
    newton_iters: Tensor
    topk_rounds: Tensor
    o_tilde: Tensor | None
    g_alpha: Tensor | None
    block_m: int
    block_n: int
    reachable_blocks: int
    config: TileConfig

    @property
    def empty_block_fraction(self) -> float:
        """Fraction of the reachable (query block, key block) tiles with no non-zero weight.

        Reachable: all tiles, or with ``is_causal`` those not entirely above the diagonal (which no kernel visits).
        """
        B, H = self.block_mask.shape[:2]
        return 1.0 - self.block_mask.sum().item() / (B * H * self.reachable_blocks or 1)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _precision(dtype: torch.dtype) -> str:
    # fp32/fp64 inputs: exact products (no TF32); half inputs use tensor cores regardless
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def _resolve_config(
    config: TileConfig | None, Lq: int, Lk: int, D: int, dtype: torch.dtype, block_m: int | None, block_n: int | None
) -> tuple[TileConfig, int]:
    """The tile configuration of a call (``config``, else :func:`adasparse.kernels.tiles.tile_config`), with
    ``block_m``/``block_n`` overriding its tiles, and the padded head dim BLOCK_D."""
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if b is not None and (b < 16 or b & (b - 1)):
            raise ValueError(f"{name} must be a power of two >= 16, got {b}")
    if config is not None and not isinstance(config, TileConfig):
        raise TypeError(f"config must be an adasparse.kernels.tiles.TileConfig, got {type(config).__name__}")
    cfg = config or tile_config(D, dtype, max(Lq, Lk), interpreted=_interpreted())
    if block_m or block_n:
        cfg = replace(cfg, block_m=block_m or cfg.block_m, block_n=block_n or cfg.block_n)
    return cfg, max(16, triton.next_power_of_2(D))


def _n_words(n_kb: int) -> int:
    """int32 words of the forward's register bitmask of live key blocks: a power of two ≥ 16, so that every
    length up to 512 key blocks (32k tokens at BLOCK_N = 64) shares one compiled forward."""
    return max(16, triton.next_power_of_2(triton.cdiv(n_kb, 32)))


def _reachable_blocks(Lq: int, Lk: int, bm: int, bn: int, is_causal: bool) -> int:
    """Number of (query block, key block) tiles a program may visit (the kernels' loop bounds)."""
    n_qb, n_kb = triton.cdiv(Lq, bm), triton.cdiv(Lk, bn)
    if not is_causal:
        return n_qb * n_kb
    return sum(min(n_kb, triton.cdiv(min((i + 1) * bm, Lq), bn)) for i in range(n_qb))


def _kpm_arg(key_padding_mask: Tensor | None, q: Tensor) -> tuple[Tensor, int, bool]:
    if key_padding_mask is None:
        return torch.empty(1, dtype=torch.int8, device=q.device), 0, False
    kpm = key_padding_mask.to(torch.int8).contiguous()  # (B, K)
    return kpm, kpm.stride(0), True


def _needs_int64(*tensors: Tensor) -> bool:
    """Whether some element of these tensors lies 2³¹ or more elements past its data pointer: then the kernels
    index in 64 bits (a separate specialisation, so the common case keeps 32-bit offsets and its registers)."""
    return any(sum((n - 1) * st for n, st in zip(x.shape, x.stride()) if n > 0) >= 2**31 - 1 for x in tensors)


def _last_dim_contiguous(x: Tensor) -> Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def triton_entmax_attention_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Tensor | float,
    *,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    need_grad: bool = False,
    alpha_grad: bool = False,
    block_m: int | None = None,
    block_n: int | None = None,
    topk: int = TOPK,
    config: TileConfig | None = None,
    fast_log: bool = False,
    _checked: bool = False,
) -> EntmaxAttentionForward:
    """Run the forward kernel (no autograd) and return its outputs and statistics.

    ``need_grad`` also saves what the backward needs for q, k, v; ``alpha_grad`` adds what it needs for α.
    ``config`` (:class:`~adasparse.kernels.tiles.TileConfig`) sets tiles, warps and stages (default:
    :func:`~adasparse.kernels.tiles.tile_config` of the inputs); ``block_m``/``block_n`` (powers of two ≥ 16)
    override its tile sizes (tests use 16 to get many blocks).
    ``topk`` (0 or a power of two ≤ ``block_n``): scores per row the first pass keeps for the solver's start;
    0 starts from the bracket's left end t = 0 (the kernel before; for comparisons).  ``fast_log``: see
    :func:`triton_entmax_attention`.
    """
    if not _checked:
        alpha = check_inputs(q, k, v, alpha, key_padding_mask)
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    cfg, bd = _resolve_config(config, Lq, Lk, D, q.dtype, block_m, block_n)
    bm, bn = cfg.block_m, cfg.block_n
    if topk < 0 or topk & (topk - 1) or topk > bn:
        raise ValueError(f"topk must be 0 or a power of two <= block_n = {bn}, got {topk}")
    n_qb, n_kb = triton.cdiv(Lq, bm), triton.cdiv(Lk, bn)
    acc = _acc_dtype(q.dtype)
    dev = q.device
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    need_grad = need_grad or alpha_grad
    kpm, skpm, has_kpm = _kpm_arg(key_padding_mask, q)

    out = torch.empty((B, H, Lq, D), dtype=q.dtype, device=dev)
    row_m = torch.empty((B, H, Lq), dtype=acc, device=dev)
    row_t = torch.empty_like(row_m)
    row_l = torch.empty_like(row_m)
    dummy = torch.empty(1, dtype=acc, device=dev)
    o_t = torch.empty((B, H, Lq, D), dtype=acc, device=dev) if need_grad else None
    g_a = torch.empty((B, H, Lq, D), dtype=acc, device=dev) if alpha_grad else None
    bmask = torch.empty((B, H, n_qb, n_kb), dtype=torch.int8, device=dev)  # every entry written once, never read
    visits = torch.empty((B, H, n_qb), dtype=torch.int32, device=dev)
    iters = torch.empty((B, H, n_qb), dtype=torch.int32, device=dev)
    rounds = torch.empty((B, H, n_qb), dtype=torch.int32, device=dev)
    alpha_k = alpha.detach().to(device=q.device, dtype=acc).contiguous()
    tol = 4 * torch.finfo(acc).eps

    _fwd_kernel[(n_qb, B * H)](
        q, k, v, kpm, alpha_k,
        out, row_m, row_t, row_l,
        dummy if o_t is None else o_t, dummy if g_a is None else g_a,
        bmask, visits, iters, rounds,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), skpm,
        H, Lq, Lk, D, n_qb, n_kb, scale,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, N_WORDS=_n_words(n_kb), HAS_KPM=has_kpm, IS_CAUSAL=bool(is_causal),
        NEED_GRAD=need_grad, ALPHA_GRAD=alpha_grad, MAX_ITER=_MAX_ITER, TOL=tol, EPS_F=eps_f_for(q.dtype),
        TOPK=topk, START_NEWTON=START_NEWTON, ACC=_tl_dtype(q.dtype), PREC=_precision(q.dtype), IDX64=_needs_int64(q, k, v, out, bmask),
        FAST_LOG=bool(fast_log), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return EntmaxAttentionForward(
        out=out, row_max=row_m, threshold=row_t, normaliser=row_l, block_mask=bmask.bool(), block_visits=visits,
        newton_iters=iters, topk_rounds=rounds, o_tilde=o_t, g_alpha=g_a, block_m=bm, block_n=bn,
        reachable_blocks=_reachable_blocks(Lq, Lk, bm, bn, is_causal), config=cfg,
    )  # fmt: skip


class _TritonEntmaxAttention(torch.autograd.Function):
    """(q, k, v, α (H,), key padding mask, causal, scale, tiles, deterministic, config) → out, with gradients for
    q, k, v and α."""

    @staticmethod
    def forward(
        ctx, q, k, v, alpha, key_padding_mask, is_causal, scale, block_m, block_n, deterministic, config, fast_log
    ):
        need_qkv = any(ctx.needs_input_grad[:3])
        alpha_grad = bool(ctx.needs_input_grad[3])
        fwd = triton_entmax_attention_forward(
            q, k, v, alpha, key_padding_mask=key_padding_mask, is_causal=is_causal, scale=scale,
            need_grad=need_qkv or alpha_grad, alpha_grad=alpha_grad, block_m=block_m, block_n=block_n, config=config,
            fast_log=fast_log, _checked=True,
        )  # fmt: skip
        ctx.is_causal = bool(is_causal)
        ctx.scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        ctx.config = fwd.config  # the backward reads the block mask at the forward's tiles
        ctx.deterministic = deterministic
        ctx.fast_log = bool(fast_log)
        ctx.save_for_backward(
            q, k, v, alpha, key_padding_mask,
            fwd.row_max, fwd.threshold, fwd.normaliser, fwd.o_tilde, fwd.g_alpha, fwd.block_mask,
        )  # fmt: skip
        return fwd.out

    @staticmethod
    def backward(ctx, do):
        q, k, v, alpha, key_padding_mask, row_m, row_t, row_l, o_tilde, g_alpha, block_mask = ctx.saved_tensors
        q, k, v, do = (_last_dim_contiguous(x) for x in (q, k, v, do))
        B, H, Lq, D = q.shape
        Lk = k.shape[2]
        acc = _acc_dtype(q.dtype)
        dof = do.to(acc)
        delta = (dof * o_tilde).sum(-1).contiguous()  # δ = Σ_j dP_ij p̃_ij, (B, H, Q)
        dalpha = None
        if ctx.needs_input_grad[3]:
            dalpha = (
                (dof * g_alpha).sum((0, 2, 3)).to(device=alpha.device, dtype=alpha.dtype)
            )  # Σ over B, Q, D of dO·G: (H,)
        dq = dk = dv = None
        if any(ctx.needs_input_grad[:3]):
            cfg = ctx.config
            bm, bn = cfg.block_m, cfg.block_n
            bd = max(16, triton.next_power_of_2(D))
            n_qb, n_kb = triton.cdiv(Lq, bm), triton.cdiv(Lk, bn)
            kpm, skpm, has_kpm = _kpm_arg(key_padding_mask, q)
            alpha_k = alpha.detach().to(device=q.device, dtype=acc).contiguous()
            bmask = block_mask.to(torch.int8)
            dk = torch.empty((B, H, Lk, D), dtype=k.dtype, device=q.device)
            dv = torch.empty((B, H, Lk, D), dtype=v.dtype, device=q.device)
            common = (
                q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2), skpm,
                H, Lq, Lk, D, n_qb, n_kb, ctx.scale,
            )  # fmt: skip
            meta = dict(
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, HAS_KPM=has_kpm, IS_CAUSAL=ctx.is_causal,
                ACC=_tl_dtype(q.dtype), PREC=_precision(q.dtype), num_warps=cfg.bwd_num_warps,
                num_stages=cfg.bwd_num_stages, FAST_LOG=ctx.fast_log,
                IDX64=_needs_int64(q, k, v, do, dk, bmask) or q.numel() >= 2**31 - 1,  # dq: contiguous, as q
            )  # fmt: skip
            rows = (row_m, row_t, row_l, delta)
            if ctx.deterministic:  # two kernels, no atomics: dK, dV per key block, then dQ per query block
                dq = torch.empty((B, H, Lq, D), dtype=q.dtype, device=q.device)
                _bwd_kv_kernel[(n_kb, B * H)](
                    q, k, v, do, kpm, alpha_k, *rows, bmask, dk, dv, dq, *common, ATOMIC_DQ=False,
                    N_WORDS=_n_words(n_qb), **meta,
                )  # fmt: skip
                _bwd_q_kernel[(n_qb, B * H)](
                    q, k, v, do, kpm, alpha_k, *rows, bmask, dq, *common, N_WORDS=_n_words(n_kb), **meta
                )
            else:  # one kernel, FA2's shape: dQ added atomically into an ACC-dtype buffer
                dq_acc = torch.zeros((B, H, Lq, D), dtype=acc, device=q.device)
                _bwd_kv_kernel[(n_kb, B * H)](
                    q, k, v, do, kpm, alpha_k, *rows, bmask, dk, dv, dq_acc, *common, ATOMIC_DQ=True,
                    N_WORDS=_n_words(n_qb), **meta,
                )  # fmt: skip
                dq = dq_acc.to(q.dtype)
        return dq, dk, dv, dalpha, None, None, None, None, None, None, None, None


def triton_entmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    alpha: Tensor | float,
    *,
    key_padding_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    deterministic: bool | None = None,
    config: TileConfig | None = None,
    fast_log: bool = False,
) -> Tensor:
    r"""α-entmax attention ``entmax_α(scale · q kᵀ) v`` in fused Triton kernels; differentiable in q, k, v, α.

    Args:
        q: (B, H, Q, D); k, v: (B, H, K, D); one dtype among float16, bfloat16, float32, float64;
            1 ≤ D ≤ 128; CUDA tensors (CPU only under ``TRITON_INTERPRET=1``).
        alpha: one α per head, a tensor (H,) (or a scalar / float, broadcast to all heads) with values in
            [1, 2]; 1 = softmax, 2 = sparsemax.  Gradients flow to it when it requires grad.
        key_padding_mask: optional bool (B, K), True = real key (ragged lengths).
        is_causal: query i attends keys j ≤ i (top-left aligned, as in ``scaled_dot_product_attention``).
        scale: multiplies q kᵀ; default 1/√D.
        block_m, block_n: tile sizes (powers of two ≥ 16), overriding those of ``config``.
        deterministic: the backward without atomics (two kernels: dK, dV per key block, then dQ per query
            block, each recomputing p), bitwise reproducible; otherwise one kernel of FlashAttention-2's shape
            that adds dQ atomically (fewer passes; dQ's rounding depends on the order of the additions).
            Default: ``torch.are_deterministic_algorithms_enabled()``.
        config: tiles, warps and stages of the forward and the backward
            (:class:`~adasparse.kernels.tiles.TileConfig`); default :func:`~adasparse.kernels.tiles.tile_config`
            (a table keyed on head dim, dtype and length, or what :func:`~adasparse.kernels.tiles.tune_tiles`
            measured in this process; one fixed configuration under the interpreter).
        fast_log: the general-α weights as ``exp2(log₂(1 + u)/(α−1))`` (Goldberg's log1p in base 2; the ln 2
            factors cancel in the solver and appear once, as a multiply, where the output pass and the backward
            need the natural log of p).  **Off by default, and no faster yet**: compiled for sm_90 with Triton
            3.9 (PTX inspected), ``tl.log2`` lowers to a libdevice polynomial like ``tl.log`` (no
            ``lg2.approx``), and ``tl.exp`` is already ``ex2.approx`` after a multiply, so the flag saves one
            multiply per weight; the MUFU ``lg2.approx`` needs inline PTX (compiled kernels only, untestable
            under the interpreter).  With it, the exponent log₂(1+u)/(α−1) would carry lg2.approx's ≈ 2⁻²²
            absolute error times 1/(α−1): p's relative error ≈ ln 2·2⁻²²/(α−1) (≈ 1.7e-5 at α = 1.01, above
            float32's solver tolerance of 1e-6; ≈ 3e-7 at α = 1.5) — to be checked on a GPU before it becomes
            the default.  The interpreter computes log2/exp2 exactly (numpy): the tests check the algebra only.

    Returns:
        out (B, H, Q, D) in the input dtype.  A query with no attendable key gets a zero row and zero grads.
    """
    alpha = check_inputs(q, k, v, alpha, key_padding_mask)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    return _TritonEntmaxAttention.apply(
        q, k, v, alpha, key_padding_mask, is_causal, scale, block_m, block_n, bool(deterministic), config, fast_log
    )


def compile_kernels(
    arch: int = 90,
    dtype: torch.dtype = torch.bfloat16,
    head_dim: int = 64,
    *,
    alpha_grad: bool = True,
    idx64: bool = False,
    config: TileConfig | None = None,
    fast_log: bool = False,
    aligned: bool = True,
) -> dict[str, object]:
    """Compile the kernels ahead of time for CUDA compute capability ``arch`` (90 = H100), no GPU needed.

    Checks what the interpreter cannot: that the kernels lower through Triton's compiler (types of values
    carried through ``while``/``if``, layouts) down to a cubin.  Returns name → compiled kernel (its
    ``asm["cubin"]`` can be inspected with ``cuobjdump --dump-resource-usage`` for register spills).  Must run in a
    process where ``TRITON_INTERPRET`` was not set when this module was imported.  ``idx64`` compiles the
    64-bit-index specialisation (used for tensors with ≥ 2³¹ addressable elements).  ``config``: tiles, warps and
    stages (default: the :data:`~adasparse.kernels.tiles.TABLE` entry at 4096 tokens).  ``aligned`` marks every
    pointer, every stride and D as divisible by 16, as Triton's launcher specialises them for contiguous inputs
    with D a multiple of 16 (16-byte aligned, as PyTorch allocates): without it the loads compile to 2-byte
    scalar loads that cannot become cp.async, so neither the registers nor the pipelining are those of a run.

    What it shows (Triton 3.9, bf16, D = 64, 64×64 tiles, 8 warps, 3 stages; TTGIR ``async_copy_global_to_local``,
    PTX ``cp.async``): the solver passes' K loads and ``backward_q``'s K, V loads are pipelined 3 deep; pass 1
    (its top-k ``while`` is a nested loop), the output pass and the fused / dK-dV backward are not: there the
    loop body's compute sits in an always-true uniform region, without which Triton's layout pass recomputes the
    weights in the dot-operand layout (255 registers, 128–280 bytes of spills; single backward 56 bytes).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if _interpreted():
        raise RuntimeError("compile_kernels needs the compiled kernels: import without TRITON_INTERPRET=1")
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype}")
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
    io = names[dtype]
    acc = names[_acc_dtype(dtype)]
    cfg = config or tile_config(head_dim, dtype, 4096)
    bm, bn, bd = cfg.block_m, cfg.block_n, max(16, triton.next_power_of_2(head_dim))
    common = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, HAS_KPM=True, IS_CAUSAL=True, ACC=_tl_dtype(dtype), IDX64=idx64)
    common["FAST_LOG"] = bool(fast_log)
    common["PREC"] = _precision(dtype)
    acc_ptrs = ("ALPHA", "ROW_M", "ROW_T", "ROW_L", "OT", "GA", "DELTA", "DQ_ACC")
    int_ptrs = {"KPM": "i8", "BMASK": "i8", "VISITS": "i32", "ITERS": "i32", "ROUNDS": "i32"}
    specs = {
        "forward": (
            _fwd_kernel,
            dict(
                NEED_GRAD=True,
                ALPHA_GRAD=alpha_grad,
                MAX_ITER=_MAX_ITER,
                TOL=1e-6,
                EPS_F=eps_f_for(dtype),
                TOPK=TOPK,
                START_NEWTON=START_NEWTON,
                N_WORDS=_n_words(4096 // bn),
            ),  # fmt: skip
        ),
        "backward": (_bwd_kv_kernel, dict(ATOMIC_DQ=True, N_WORDS=_n_words(4096 // bm))),
        "backward_kv": (_bwd_kv_kernel, dict(ATOMIC_DQ=False, N_WORDS=_n_words(4096 // bm))),
        "backward_q": (_bwd_q_kernel, dict(N_WORDS=_n_words(4096 // bn))),
    }
    out = {}
    for name, (fn, extra) in specs.items():
        consts = {**common, **extra}
        signature, constexprs = {}, {}
        for i, arg in enumerate(fn.arg_names):
            if arg in consts:
                signature[arg] = "constexpr"
                constexprs[(i,)] = consts[arg]
            elif arg in int_ptrs:
                signature[arg] = "*" + int_ptrs[arg]
            elif arg in acc_ptrs:
                signature[arg] = "*" + acc
            elif arg in ("Q", "K", "V", "OUT", "DO", "DQ", "DK", "DV"):
                signature[arg] = "*" + io
            else:
                signature[arg] = acc if arg == "scale" else "i32"
        attrs = {}
        if aligned:  # what the launcher's specialisation gives a call with contiguous, 16-byte-aligned tensors
            for i, arg in enumerate(fn.arg_names):
                sig = signature[arg]
                if sig.startswith("*") or (sig == "i32" and (arg == "D" or arg.startswith("s"))):
                    attrs[(i,)] = [["tt.divisibility", 16]]
        src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
        warps, stages = (
            (cfg.num_warps, cfg.num_stages) if name == "forward" else (cfg.bwd_num_warps, cfg.bwd_num_stages)
        )
        out[name] = triton.compile(
            src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=warps, num_stages=stages)
        )
    return out
