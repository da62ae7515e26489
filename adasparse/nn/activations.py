"""Thin ``nn.Module`` wrappers around the α-entmax mappings, and the learnable α."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..ops.entmax import _check_k, entmax, entmax15, sparsemax
from ..ops.normalizers import (
    PARAMETRIZATIONS,  # noqa: F401  (re-exported: its former home)
    check_alpha_init,
    check_alpha_tensor,
    check_alpha_value,
    check_parametrization,
)

__all__ = ["Entmax", "Sparsemax", "Entmax15", "LearnableAlpha", "alpha_parameters"]


class Entmax(nn.Module):
    """α-entmax along ``dim`` (see :func:`adasparse.entmax`), with α as :func:`adasparse.entmax` takes it.

    Args:
        alpha: a number ≥ 1 (stored as a float), or a floating tensor, kept as given: an
            ``nn.Parameter`` is registered as this module's parameter (learned, its gradient flows),
            any other tensor (e.g. a per-head ``(H, 1, 1)`` α for ``(B, H, Q, K)`` scores, or the
            output of :class:`LearnableAlpha`) is used as is. A tensor α must broadcast to the
            input with size 1 along ``dim``.
        dim: the dimension that sums to one.

    Raises:
        TypeError: ``alpha`` is neither a real number nor a floating tensor.
        ValueError: ``alpha`` < 1 or not finite (a tensor's shape is checked against each input).
    """

    def __init__(self, alpha: float | Tensor = 1.5, dim: int = -1):
        super().__init__()
        if isinstance(alpha, Tensor):
            check_alpha_tensor(alpha)
            self.alpha = alpha  # nn.Module registers an nn.Parameter; a plain tensor stays an attribute
        else:
            self.alpha = check_alpha_value(alpha)
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return entmax(x, self.alpha, self.dim)

    def extra_repr(self) -> str:
        a = self.alpha
        if isinstance(a, Tensor):
            a = f"{a.item():g}" if a.numel() == 1 and not a.is_meta else f"tensor of shape {tuple(a.shape)}"
        return f"alpha={a}, dim={self.dim}"


class Sparsemax(nn.Module):
    """Sparsemax (α = 2) along ``dim`` (see :func:`adasparse.sparsemax`; ``k`` as there: no effect)."""

    def __init__(self, dim: int = -1, k: int | None = None):
        super().__init__()
        _check_k(k)
        self.dim, self.k = dim, k

    def forward(self, x: Tensor) -> Tensor:
        return sparsemax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}" + (f", k={self.k}" if self.k is not None else "")


class Entmax15(nn.Module):
    """1.5-entmax along ``dim`` (see :func:`adasparse.entmax15`; ``k`` as there: no effect)."""

    def __init__(self, dim: int = -1, k: int | None = None):
        super().__init__()
        _check_k(k)
        self.dim, self.k = dim, k

    def forward(self, x: Tensor) -> Tensor:
        return entmax15(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}" + (f", k={self.k}" if self.k is not None else "")


class LearnableAlpha(nn.Module):
    """A learnable α of a given shape, one θ per entry (e.g. per attention head).

    Two maps from θ to α:

    * ``"clamp"`` (Correia, Niculae & Martins 2019, and their code): ``α = clamp(1 + sigmoid(θ), alpha_min,
      alpha_max)``. Below ``alpha_min`` (1.01 by default) the clamp zeroes θ's gradient: a head that reaches
      the floor can never come back (a dead zone).
    * ``"sigmoid"``: ``α = alpha_min + (alpha_max − alpha_min) · sigmoid(θ)`` — the same range without a clamp,
      so θ always gets a gradient (Adam's normalised steps bring a head back from near the floor).

    Args:
        shape: shape of α (e.g. ``(H,)`` for one α per head), or an int.
        init: ``"normal"`` (θ ~ N(0, 1), as in the paper) or a number in
            ``(alpha_min, alpha_max)`` ∩ (1, 2): every θ starts where α equals it.
        alpha_min, alpha_max: the range, default [1.01, 2].
        parametrization: ``"sigmoid"`` (default: no dead zone) or ``"clamp"`` (the paper's). The default follows
            the G2P runs to convergence in ``benchmarks/convergence.md``: with the clamp two context heads sat at
            the 1.01 floor for good and test WER was 0.9 worse.

    Calling the module returns α (``shape``); ``alpha`` is the same as a property.
    """

    def __init__(
        self,
        shape: int | tuple[int, ...] = (),
        init: str | float = "normal",
        alpha_min: float = 1.01,
        alpha_max: float = 2.0,
        parametrization: str = "sigmoid",
    ):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if any((not isinstance(s, int)) or s <= 0 for s in shape):
            raise ValueError(f"shape must contain positive ints, got {shape}")
        if not (1.0 <= alpha_min < alpha_max):
            raise ValueError(f"need 1 <= alpha_min < alpha_max, got alpha_min={alpha_min}, alpha_max={alpha_max}")
        check_parametrization(parametrization)
        self.alpha_min = float(alpha_min)
        self.alpha_max = float(alpha_max)
        self.parametrization = parametrization
        self.init = init
        self.theta = nn.Parameter(torch.empty(shape))
        if not isinstance(check_alpha_init(init, "init"), str):
            a = float(init)
            # the sigmoid map reaches its ends only at θ = ±inf
            inside = alpha_min < a < alpha_max if parametrization == "sigmoid" else alpha_min <= a <= alpha_max
            if not inside:
                ends = "(alpha_min, alpha_max)" if parametrization == "sigmoid" else "[alpha_min, alpha_max]"
                raise ValueError(f"init={init!r} must lie in (1, 2) and in {ends} = ({alpha_min}, {alpha_max})")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if isinstance(self.init, str):
                self.theta.normal_(0.0, 1.0)
                return
            a = float(self.init)
            if self.parametrization == "clamp":  # 1 + sigmoid(θ) = a
                u = a - 1.0
            else:  # alpha_min + (alpha_max − alpha_min) · sigmoid(θ) = a
                u = (a - self.alpha_min) / (self.alpha_max - self.alpha_min)
            self.theta.fill_(math.log(u / (1.0 - u)))

    def forward(self) -> Tensor:
        if self.parametrization == "sigmoid":
            return self.alpha_min + (self.alpha_max - self.alpha_min) * torch.sigmoid(self.theta)
        return torch.clamp(1.0 + torch.sigmoid(self.theta), self.alpha_min, self.alpha_max)

    @property
    def alpha(self) -> Tensor:
        return self()

    def extra_repr(self) -> str:
        return (
            f"shape={tuple(self.theta.shape)}, init={self.init!r}, range=[{self.alpha_min}, {self.alpha_max}], "
            f"parametrization={self.parametrization!r}"
        )


def alpha_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The θ of every :class:`LearnableAlpha` inside ``module`` (each once), e.g. to give them their own
    learning rate: Adam moves a parameter by about ``lr`` per update, so α (slope ≤ ¼ in θ, either map) travels at
    most ≈ ¼ · Σ lr over a run at the model's rate. ::

        theta = alpha_parameters(model)
        ids = {id(p) for p in theta}
        rest = [p for p in model.parameters() if id(p) not in ids]
        opt = torch.optim.AdamW([{"params": rest}, {"params": theta, "lr": 10 * lr, "weight_decay": 0.0}], lr=lr)
    """
    seen: dict[int, nn.Parameter] = {}
    for m in module.modules():
        if isinstance(m, LearnableAlpha) and m.theta.requires_grad:
            seen.setdefault(id(m.theta), m.theta)
    return list(seen.values())
