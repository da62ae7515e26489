"""Learning-rate schedules: inverse square root with linear warmup (the paper's, as in OpenNMT-py and fairseq).

Two parameterisations of the same curve, both linear up to ``warmup`` steps and ∝ 1/√step after:

* ``"inverse_sqrt"`` (fairseq): ``lr(step) = base_lr · min(step / warmup, √(warmup / step))``; the peak,
  reached at ``step = warmup``, is ``base_lr``;
* ``"noam"`` (Vaswani et al., OpenNMT-py's ``noam``): ``lr(step) = factor · d_model^{-1/2} ·
  min(step^{-1/2}, step · warmup^{-3/2})``; the peak is ``factor / √(d_model · warmup)``.

``warmup = 0`` (no warmup): ``"inverse_sqrt"`` decays from ``base_lr`` with Hugging Face's default timescale,
``lr(step) = base_lr · √(T / (step − 1 + T))``, T = 10,000 (``transformers.get_inverse_sqrt_schedule`` with
``num_warmup_steps=0``: the same rate at every update), not with a timescale of one update; ``"noam"`` is
``factor · d_model^{-1/2} · step^{-1/2}`` (its formula's limit).

``step`` counts optimizer updates from 1 (the first update uses ``lr(1)``, never 0). With
:func:`build_scheduler`, ``torch.optim.lr_scheduler.LambdaLR`` multiplies each group's initial lr by
``schedule.factor(n + 1)`` after ``n`` calls to ``scheduler.step()``; set the optimizer's lr to ``base_lr`` (or to
1.0 for ``"noam"``, whose factor is the lr itself). The scheduler's ``state_dict`` round-trips through a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["InverseSqrtSchedule", "build_scheduler"]

_KINDS = ("inverse_sqrt", "noam")
#: the decay timescale of ``"inverse_sqrt"`` without warmup (Hugging Face's default for ``num_warmup_steps=0``)
NO_WARMUP_TIMESCALE = 10_000


@dataclass(frozen=True)
class InverseSqrtSchedule:
    """Inverse-square-root schedule with linear warmup (see the module docstring).

    Args:
        warmup: number of warmup updates (≥ 0; 0: none, see the module docstring).
        kind: ``"inverse_sqrt"`` (factor relative to ``base_lr``, peak 1) or ``"noam"`` (absolute lr).
        d_model: model width, used by ``"noam"`` only.
        noam_factor: ``"noam"``'s scale (OpenNMT-py's ``learning_rate``, often 2.0).
    """

    warmup: int = 4000
    kind: str = "inverse_sqrt"
    d_model: int = 512
    noam_factor: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {self.warmup!r}")
        if self.kind not in _KINDS:
            raise ValueError(f"schedule kind must be one of {_KINDS}, got {self.kind!r}")
        if self.d_model < 1:
            raise ValueError(f"d_model must be >= 1, got {self.d_model}")

    def factor(self, step: int) -> float:
        """Multiplier of the base lr at update ``step`` (1-based)."""
        if step < 1:
            raise ValueError(f"step counts updates from 1, got {step}")
        if self.kind == "inverse_sqrt":
            if self.warmup == 0:
                return math.sqrt(NO_WARMUP_TIMESCALE / (step - 1 + NO_WARMUP_TIMESCALE))
            return min(step / self.warmup, math.sqrt(self.warmup / step))
        if self.warmup == 0:
            return self.noam_factor * self.d_model**-0.5 * step**-0.5
        return self.noam_factor * self.d_model**-0.5 * min(step**-0.5, step * self.warmup**-1.5)

    def lr(self, step: int, base_lr: float = 1.0) -> float:
        """The learning rate at update ``step`` for a given ``base_lr``."""
        return base_lr * self.factor(step)

    def __call__(self, n_done: int) -> float:
        """``LambdaLR``'s hook: ``n_done`` updates taken so far, so the next update is ``n_done + 1``."""
        return self.factor(n_done + 1)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: InverseSqrtSchedule
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying ``schedule`` to every parameter group; call ``scheduler.step()`` after each update."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)
