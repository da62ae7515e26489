"""α-entmax mappings with exact gradients in the scores and in α.

α-entmax (Peters, Niculae & Martins 2019; Correia, Niculae & Martins, "Adaptively Sparse
Transformers", EMNLP 2019) maps scores z to a probability vector that may contain exact zeros::

    entmax_α(z) = argmax_{p ∈ Δ} pᵀz + H_α(p),
    H_α(p) = Σ_j (p_j − p_j^α) / (α(α−1))   (Tsallis entropy; Shannon entropy at α = 1),

whose solution is p_i = [(α−1) z_i − τ]₊^{1/(α−1)} with τ such that Σ p = 1.  α = 1 is softmax,
α = 2 is sparsemax, α = 1.5 is "1.5-entmax".

Gradients (the paper's Proposition 1), with s_i = p_i^{2−α} on the support and g = ∂ℓ/∂p::

    ∂ℓ/∂z = s ⊙ g − s (Σ s⊙g)/(Σ s)
    ∂ℓ/∂α = Σ_i g_i [(p_i − p̃_i)/(α−1)² + (h_i − p̃_i Σ_j h_j)/(α−1)],  p̃ = s/Σs, h = −p log p

and at α = 1 the limit ∂p_i/∂α = (−p_i log² p_i + p_i Σ_j p_j log² p_j)/2.

Conventions shared by all mappings here:

* Masking: ``-inf`` scores get exactly 0 and zero gradient; a row that is entirely ``-inf``
  returns all zeros and zero gradient (softmax would return NaN), for every α, ``alpha=1.0`` included.
* Half precision: float16/bfloat16 are computed in float32 and returned in the input dtype.
* NaN in a row gives NaN in that row only, as with softmax.
* α > 2 is allowed: bisection, always in float64 (p = r^{1/(α−1)} has an infinite slope at r = 0, so
  float32 rounding of r would cost up to 0.1 in p at α = 10): within 1e-6 of a converged float64
  bisection for float32 and float64 inputs, as for 1 ≤ α ≤ 2; slower (float32 inputs: 2–3× the cost of
  the former float32 bisection). Its gradient is computed without cancellation (see ``_grad_z``): float32
  within 1e-5 of float64. The mapping itself grows ill-conditioned there (∂p_i/∂z_i = p_i^{2−α}:
  2.6e10 at α = 10, p_i = 0.05), so small weights at large α depend on the last bits of the scores:
  against 60-digit arithmetic on the same (standard normal) float scores, ≤ 1e-11 at α ≤ 5, ~1e-6 at
  α = 10, ~5e-2 at α = 20.
* α given as a tensor keeps its gradient (summed to its own shape).
* Shapes as ``torch.softmax``: a 0-dim input is one row of length 1 (1.0, or 0 if it is ``-inf``);
  empty tensors give empty results.
* Autograd: first and second derivatives (``gradgradcheck``, double backward, ``torch.func.hessian``),
  forward mode (``torch.func.jvp``/``jacfwd``, ``torch.autograd.forward_ad``) with the JVP
  ``s ⊙ v − s (sᵀv)/Σs + (∂p/∂α) α̇``; ``vmap``, ``grad`` and ``torch.compile`` (one opaque solver
  node, reverse mode only) work; meta and FakeTensor inputs give shapes only. One approximation: within
  1e-6 (float64) or 1e-3 (float32) of α = 1, ∂p/∂α is its α → 1 limit, so ∂²p/∂α² there misses the
  limit's own change with α (first derivatives are exact to that order).
"""

from __future__ import annotations

import math
from numbers import Integral

import torch
from torch import Tensor
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

from . import _cpu
from ._solver import _compute_dtype, entmax_forward, plain_eager
from .normalizers import check_alpha_tensor, check_alpha_value

__all__ = ["entmax", "sparsemax", "entmax15", "entmax_bisect_reference"]

# below this distance to 1, ∂p/∂α uses its α → 1 limit (the general formula cancels badly)
_ALPHA_ONE_EPS = {torch.float64: 1e-6, torch.float32: 1e-3}


def _grad_z(p: Tensor, g: Tensor, s: Tensor) -> Tensor:
    """∂ℓ/∂z = s ⊙ (g − ḡ), ḡ = (Σ s⊙g)/(Σ s), with zero for rows whose support is empty.

    ḡ is taken relative to g at the largest s: for α > 2, s = p^{2−α} of the smallest weight can exceed the
    others' by 1e14, ḡ is then within rounding of that entry's g, and s ⊙ (g − ḡ) computed directly would be
    mostly rounding error there. With g_m the g of the largest s, ḡ − g_m = Σ s (g − g_m)/Σ s has no such
    cancellation (for α ≤ 2 it changes nothing beyond rounding).
    """
    if s.shape[-1] == 0:  # rows of length 0
        return s * g
    ssum = s.sum(-1, keepdim=True)
    d = g - g.gather(-1, s.argmax(-1, keepdim=True))
    coef = (s * d).sum(-1, keepdim=True) / torch.where(ssum > 0, ssum, torch.ones_like(ssum))
    return s * (d - coef)


def _on_support(p: Tensor) -> tuple[Tensor, Tensor]:
    """(p > 0, p with 1 off the support): powers and logs of the second have finite derivatives everywhere.

    Off the support p is locally constant at 0, so the true derivative of s = p^{2−α} (or log p) there
    contributes nothing; without this, autograd would multiply the infinite slope at 0 by that zero (NaN) in
    double backward, forward-mode AD and ``torch.func.hessian``.
    """
    on = p > 0
    return on, torch.where(on, p, torch.ones_like(p))


def _support_weights(p: Tensor, alpha: Tensor | None, alpha_value: float) -> Tensor:
    """s = p^{2−α} on the support, 0 elsewhere."""
    if alpha is None and alpha_value == 1.0:
        return p
    on, q = _on_support(p)
    if alpha is None:
        if alpha_value == 2.0:
            return on.to(p.dtype)
        w = q.sqrt() if alpha_value == 1.5 else q.pow(2.0 - alpha_value)
    else:
        w = q.pow(2.0 - alpha)  # 0 ** e would be 1 for e == 0 and inf for e < 0: q is 1 there, masked below
    return torch.where(on, w, torch.zeros_like(w))


# below this α − 1, ∂ℓ/∂α is taken from its regrouped form (see _grad_alpha); the CPU kernel does the same
_ALPHA_SMALL = 0.125
# 1/k! for k = 2 … 11: e^t − 1 − t = t² Σ_k t^{k−2}/k!, truncated (relative error < 4e-8 for 0 ≤ t < 1)
_PHI_COEFFS = [1.0 / math.factorial(k) for k in range(2, 12)]


def _phi(t: Tensor) -> Tensor:
    """e^t − 1 − t for t ≥ 0, accurate relative to its value also for small t (its series below 1)."""
    poly = torch.full_like(t, _PHI_COEFFS[-1])
    for c in reversed(_PHI_COEFFS[:-1]):
        poly = poly * t + c
    return torch.where(t < 1, t * t * poly, torch.expm1(t) - t)


def _dp_dalpha(p: Tensor, s: Tensor, alpha: Tensor) -> Tensor:
    """∂p/∂α (p's shape), for α of shape (..., 1).

    General form: (p − p̃)/(α−1)² + (h − p̃ Σ h)/(α−1), p̃ = s/Σs, h = −p log p. Its two terms are
    O(1/(α−1)) and cancel, so for α − 1 < 1/8 it is regrouped exactly (with Σ p = 1, t = −(α−1) log p,
    φ = e^t − 1 − t, Φ = Σ p φ, T = Σ p t) into p (Φ (1 + t) − (1 + T) φ) / ((1 + T + Φ)(α−1)²), whose
    terms are all O((α−1)²); below α − 1 = ``_ALPHA_ONE_EPS`` the α → 1 limit (−p log² p + p Σ p log² p)/2.
    """
    ssum = s.sum(-1, keepdim=True)
    pt = s / torch.where(ssum > 0, ssum, torch.ones_like(ssum))
    on, q = _on_support(p)
    logp = torch.where(on, q.log(), torch.zeros_like(q))
    h = -p * logp
    am1 = alpha - 1
    safe = torch.where(am1 > 0, am1, torch.ones_like(am1))
    general = (p - pt) / safe**2 + (h - pt * h.sum(-1, keepdim=True)) / safe
    small_rows = am1 < _ALPHA_SMALL
    t = -torch.where(small_rows, am1, torch.zeros_like(am1)) * logp  # 0 off the support and on other rows
    phi = _phi(t)
    pt_sum, pphi_sum = (p * t).sum(-1, keepdim=True), (p * phi).sum(-1, keepdim=True)
    regrouped = p * (pphi_sum * (1 + t) - (1 + pt_sum) * phi) / ((1 + pt_sum + pphi_sum) * safe**2)
    plog2 = p * logp * logp
    limit = 0.5 * (p * plog2.sum(-1, keepdim=True) - plog2)
    eps = _ALPHA_ONE_EPS.get(p.dtype, 1e-3)
    return torch.where(am1 < eps, limit, torch.where(small_rows, regrouped, general))


def _grad_alpha(p: Tensor, g: Tensor, s: Tensor, alpha: Tensor) -> Tensor:
    """Per-row ∂ℓ/∂α = Σ g ⊙ ∂p/∂α (shape (..., 1)), before summing to α's shape."""
    return (g * _dp_dalpha(p, s, alpha)).sum(-1, keepdim=True)


def _jvp_reference(
    p: Tensor, z_t: Tensor | None, alpha: Tensor | None, alpha_t: Tensor | None, alpha_value: float
) -> Tensor:
    """Forward-mode derivative: ṗ = s ⊙ ż − s (sᵀż)/Σs + (∂p/∂α) α̇ (the Jacobian in z is symmetric)."""
    cd = _compute_dtype(p.dtype)
    pc = p.to(cd)
    ac = None if alpha is None else alpha.to(cd)
    s = _support_weights(pc, ac, alpha_value)
    out = torch.zeros_like(pc) if z_t is None else _grad_z(pc, z_t.to(cd), s)
    if alpha_t is not None and ac is not None:
        out = out + _dp_dalpha(pc, s, ac) * alpha_t.to(cd)
    return out.to(p.dtype)


def _backward_reference(
    p: Tensor, g: Tensor, alpha: Tensor | None, alpha_value: float, need_alpha: bool
) -> tuple[Tensor, Tensor | None]:
    """Both gradients with plain (differentiable, traceable) torch ops; ∂ℓ/∂α per row, shape (..., 1)."""
    # half precision: do the reductions in float32
    cd = _compute_dtype(p.dtype)
    pc, gc = p.to(cd), g.to(cd)
    ac = None if alpha is None else alpha.to(cd)
    s = _support_weights(pc, ac, alpha_value)
    gz = _grad_z(pc, gc, s).to(g.dtype)
    ga = _grad_alpha(pc, gc, s, ac).to(alpha.dtype) if need_alpha else None
    return gz, ga


def _backward_impl(
    p: Tensor, g: Tensor, alpha: Tensor | None, alpha_value: float, need_alpha: bool
) -> tuple[Tensor, Tensor]:
    """∂ℓ/∂z (p's shape) and ∂ℓ/∂α per row (shape (..., 1), or (..., 0) when not needed)."""
    lead, n = p.shape[:-1], p.shape[-1]
    need_alpha = need_alpha and alpha is not None
    # α > 2 rows take the PyTorch formulas (the kernel's ∂ℓ/∂z cancels there: see _grad_z)
    above_two = alpha_value > 2.0 if alpha is None else bool((alpha > 2.0).any())
    if p.numel() and not above_two and _cpu.usable(p):
        cd = _compute_dtype(p.dtype)
        p2 = p.reshape(-1, n).to(cd).contiguous()  # (rows, n)
        g2 = g.reshape(-1, n).to(cd).contiguous()
        a2 = None if alpha is None else alpha.reshape(-1).to(cd).contiguous()  # (rows,)
        eps = _ALPHA_ONE_EPS.get(cd, 1e-3)
        gz, ga = _cpu.backward(p2, g2, a2, alpha_value, True, need_alpha, eps)
        gz = gz.to(g.dtype).reshape(p.shape)
        ga = ga.to(alpha.dtype).reshape(*lead, 1) if need_alpha else p.new_empty(*lead, 0)
        return gz, ga
    gz, ga = _backward_reference(p, g, alpha, alpha_value, need_alpha)
    return gz, (ga if need_alpha else p.new_empty(*lead, 0))


@torch.library.custom_op("adasparse::entmax_backward", mutates_args=())
def _entmax_backward_op(
    p: Tensor, g: Tensor, alpha: Tensor | None, alpha_value: float, need_alpha: bool
) -> tuple[Tensor, Tensor]:
    """Backward of α-entmax as one opaque op (for ``torch.compile``): see :func:`_backward_impl`."""
    return _backward_impl(p, g, alpha, alpha_value, need_alpha)


@_entmax_backward_op.register_fake
def _(p, g, alpha, alpha_value, need_alpha):
    na = need_alpha and alpha is not None
    ga = p.new_empty(*p.shape[:-1], 1 if na else 0, dtype=alpha.dtype if na else p.dtype)
    return torch.empty_like(g), ga


def _backward_vmap_rule(info, in_dims, p, g, alpha, alpha_value, need_alpha):
    size = info.batch_size

    def front(t, d):
        return t.unsqueeze(0).expand(size, *t.shape) if d is None else t.movedim(d, 0)

    p, g = front(p, in_dims[0]), front(g, in_dims[1])
    if alpha is not None:
        alpha = front(alpha, in_dims[2]).expand(*p.shape[:-1], 1)
    return _entmax_backward_op(p, g, alpha, alpha_value, need_alpha), (0, 0)


_entmax_backward_op.register_vmap(_backward_vmap_rule)


class _EntmaxFunction(torch.autograd.Function):
    """z (..., n), alpha (..., 1) tensor or None, alpha_value float → p (..., n)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor, alpha: Tensor | None, alpha_value: float) -> Tensor:
        return entmax_forward(z, alpha, alpha_value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, alpha, alpha_value = inputs
        ctx.alpha_value = alpha_value
        ctx.save_for_backward(output, alpha)
        ctx.save_for_forward(output, alpha)

    @staticmethod
    def backward(ctx, g: Tensor):
        p, alpha = ctx.saved_tensors
        need_z = ctx.needs_input_grad[0]
        need_alpha = alpha is not None and ctx.needs_input_grad[1]
        if torch.is_grad_enabled() or _forward_ad_active():
            # create_graph (double backward, torch.func.grad/hessian) or a tangent through the backward:
            # differentiable torch ops (the custom op and the kernel have no derivatives of their own)
            gz, ga = _backward_reference(p, g, alpha, ctx.alpha_value, need_alpha)
        elif plain_eager(p, g, alpha):
            gz, ga = _backward_impl(p, g, alpha, ctx.alpha_value, need_alpha)
        else:
            gz, ga = _entmax_backward_op(p, g, alpha, ctx.alpha_value, need_alpha)
        return (gz if need_z else None), (ga if need_alpha else None), None


class _EntmaxFunctionWithJvp(_EntmaxFunction):
    """:class:`_EntmaxFunction` with forward-mode AD; a separate class because dynamo refuses a custom
    ``jvp``: ``torch.compile`` traces the parent (one node, reverse mode), everything else this one."""

    @staticmethod
    def jvp(ctx, z_t: Tensor | None, alpha_t: Tensor | None, _):
        p, alpha = ctx.saved_tensors
        return _jvp_reference(p, z_t, alpha, alpha_t, ctx.alpha_value)


def _forward_ad_active() -> bool:
    """Whether a forward-mode level is open (``torch.func.jvp``/``jacfwd``/``hessian`` or ``forward_ad``)."""
    if torch.autograd.forward_ad._current_level >= 0:
        return True
    if not torch._C._are_functorch_transforms_active():
        return False
    jvp = torch._C._functorch.TransformType.Jvp
    return any(i.key() == jvp for i in retrieve_all_functorch_interpreters())


# torch.autograd.Function.apply binds the arguments with inspect.signature on every call (≈ 35 µs, for
# functorch's sake); in plain eager mode the C-level apply underneath does the same work without it.
_C_APPLY = getattr(torch._C._FunctionBase, "__dict__", {}).get("apply")


def _apply(z: Tensor, alpha: Tensor | None, alpha_value: float) -> Tensor:
    if torch.compiler.is_compiling():
        return _EntmaxFunction.apply(z, alpha, alpha_value)
    if _C_APPLY is None or torch._C._are_functorch_transforms_active():
        return _EntmaxFunctionWithJvp.apply(z, alpha, alpha_value)
    return _C_APPLY.__get__(None, _EntmaxFunctionWithJvp)(z, alpha, alpha_value)


def _check_scores(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), got {x.dtype}")


def _softmax(x: Tensor, dim: int) -> Tensor:
    """``torch.softmax``, but a row that is entirely ``-inf`` gives zeros and zero gradient (softmax: NaN).

    In plain eager mode on CPU the common case costs one sum over the first column of the result (a fully
    masked row is NaN there, ≈ 5 µs): rows are only recomputed when some row may be fully masked. Elsewhere (CUDA,
    where the look would synchronise; meta, compile, ``torch.func``) the masked form is used directly.
    """
    p = torch.softmax(x, dim)
    if p.numel() == 0:
        return p
    if x.is_cpu and plain_eager(x) and not math.isnan(p.detach().select(dim, 0).sum().item()):
        return p
    dead = x.amax(dim, keepdim=True) == -math.inf  # NaN rows are not dead: they stay NaN
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    return torch.where(dead, zero, torch.softmax(torch.where(dead, zero, x), dim))


def entmax(x: Tensor, alpha: float | Tensor = 1.5, dim: int = -1) -> Tensor:
    r"""α-entmax along ``dim``: ``argmax_{p ∈ Δ} pᵀx + H_α(p)`` (Tsallis entropy ``H_α``).

    Solution ``p_i = [(α−1) x_i − τ]₊^{1/(α−1)}``; exact zeros outside the support.
    ``alpha = 1`` returns ``torch.softmax`` (with zeros for fully masked rows), ``alpha = 2`` equals
    :func:`sparsemax`, ``alpha = 1.5`` equals :func:`entmax15` (Peters et al. 2019; Correia et al. 2019).
    α > 2 (sparser than sparsemax) is solved by bisection in float64: as accurate, slower.

    Args:
        x: scores, any floating dtype and shape (a 0-dim ``x`` is one row of length 1, as in
            ``torch.softmax``). ``-inf`` entries are masked (weight exactly 0).
        alpha: a Python number ≥ 1, or a tensor broadcastable to ``x`` whose ``dim`` has size 1
            (e.g. ``(1, H, 1, 1)`` for scores ``(B, H, Q, K)``); it may require grad, and its
            gradient is summed to its own shape.
        dim: the dimension that sums to one.

    Raises:
        TypeError: ``x`` or ``alpha`` is not a floating tensor (or ``alpha`` not a real number).
        ValueError: ``alpha`` < 1 or not finite, or its shape does not fit ``x``.
        IndexError: ``dim`` is out of range.
    """
    _check_scores(x)
    dim = _canonical_dim(x, dim)
    if isinstance(alpha, Tensor):
        check_alpha_tensor(alpha)
        if alpha.dim() > x.dim():
            raise ValueError(
                f"alpha of shape {tuple(alpha.shape)} has {alpha.dim()} dims but x of shape {tuple(x.shape)} has "
                f"{x.dim()}: alpha must broadcast to x"
            )
        if x.dim() == 0:  # one row of length 1
            return entmax(x.unsqueeze(0), alpha, 0).squeeze(0)
        a = alpha.reshape((1,) * (x.dim() - alpha.dim()) + tuple(alpha.shape))
        if a.shape[dim] != 1:
            raise ValueError(
                f"alpha of shape {tuple(alpha.shape)} must have size 1 along dim={dim} (the dim that sums to one) "
                f"for x of shape {tuple(x.shape)}"
            )
        z = x.movedim(dim, -1)
        a = a.movedim(dim, -1)
        try:
            a = a.expand(*z.shape[:-1], 1)
        except RuntimeError:
            raise ValueError(
                f"alpha of shape {tuple(alpha.shape)} does not broadcast to x of shape {tuple(x.shape)}"
            ) from None
        return _apply(z, a, 0.0).movedim(-1, dim)
    a = check_alpha_value(alpha)
    if x.dim() == 0:
        return entmax(x.unsqueeze(0), a, 0).squeeze(0)
    if a == 1.0:
        return _softmax(x, dim)
    return _apply(x.movedim(dim, -1), None, a).movedim(-1, dim)


def _check_k(k) -> None:
    """The ``entmax`` package's partial-sort size: it changes how the package sorts, never the result."""
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, Integral):
        raise TypeError(f"k must be None or a positive int (how many top scores to partial-sort), got {k!r}")
    if k < 1:
        raise ValueError(f"k must be None or a positive int (how many top scores to partial-sort), got {k}")


def sparsemax(x: Tensor, dim: int = -1, k: int | None = None) -> Tensor:
    r"""Sparsemax along ``dim``: the Euclidean projection onto the simplex,
    ``argmin_{p ∈ Δ} ‖p − x‖²`` (Martins & Astudillo 2016); α-entmax with α = 2.

    Exact: Newton's method on the piecewise-linear threshold equation stops once the support
    is found (with an exact sort-based fallback for pathological rows). Masking, half
    precision, NaN, shapes and autograd behave as in :func:`entmax`. ``k`` is the ``entmax`` package's
    partial-sort size, accepted for its callers: nothing is sorted here, so it never changes the result.
    """
    _check_k(k)
    _check_scores(x)
    dim = _canonical_dim(x, dim)
    if x.dim() == 0:
        return sparsemax(x.unsqueeze(0), 0).squeeze(0)
    return _apply(x.movedim(dim, -1), None, 2.0).movedim(-1, dim)


def entmax15(x: Tensor, dim: int = -1, k: int | None = None) -> Tensor:
    r"""1.5-entmax along ``dim``: ``argmax_{p ∈ Δ} pᵀx + H_{1.5}(p)``, i.e.
    ``p_i = [x_i/2 − τ]₊²`` (Peters, Niculae & Martins 2019).

    Exact: the support is found by Newton's method, then τ is the closed-form root of the
    quadratic on that support. Masking, half precision, NaN, shapes and autograd behave as in
    :func:`entmax`; ``k`` as in :func:`sparsemax` (the ``entmax`` package's; no effect on the result).
    """
    _check_k(k)
    _check_scores(x)
    dim = _canonical_dim(x, dim)
    if x.dim() == 0:
        return entmax15(x.unsqueeze(0), 0).squeeze(0)
    return _apply(x.movedim(dim, -1), None, 1.5).movedim(-1, dim)


def _canonical_dim(x: Tensor, dim: int) -> int:
    n = x.dim()
    if not -max(n, 1) <= dim < max(n, 1):
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-max(n, 1)}, {max(n, 1) - 1}], but got {dim})"
        )
    return dim % max(n, 1)


def entmax_bisect_reference(x: Tensor, alpha: float | Tensor = 1.5, dim: int = -1, n_iter: int = 200) -> Tensor:
    """Slow, simple reference: bisection for τ in float64, no custom autograd (tests only).

    Differentiating through it unrolls the bisection (wrong gradients); use only for values.
    """
    z = x.to(torch.float64).movedim(dim, -1)
    a = torch.as_tensor(alpha, dtype=torch.float64)
    if a.dim():
        a = a.reshape((1,) * (x.dim() - a.dim()) + tuple(a.shape)).movedim(dim, -1)
    m = z.amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    xs = (z - m) * (a - 1)
    d = 1 / (a - 1)
    n = torch.isfinite(z).sum(-1, keepdim=True).clamp_min(1).to(torch.float64)
    lo = torch.full_like(m, -1.0)
    hi = -(n ** (1 - a)).expand_as(m).clone()
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        f = (xs - mid).clamp_min(0).pow(d).sum(-1, keepdim=True) - 1
        lo = torch.where(f > 0, mid, lo)
        hi = torch.where(f > 0, hi, mid)
    p = (xs - (lo + hi) / 2).clamp_min(0).pow(d)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-300)
    return p.movedim(-1, dim)
