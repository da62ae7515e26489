"""The normalizer vocabulary and the checks on α, in one place (imports only torch and the standard library).

A *normalizer setting* is a name or a number α ≥ 1:

* ``"softmax"`` (α = 1), ``"entmax15"`` (α = 1.5), ``"sparsemax"`` (α = 2): :data:`NORMALIZER_ALPHAS`;
* ``"learned"``: one α per head, learned (:class:`adasparse.LearnableAlpha`), where a module owns its α;
* a real number α ≥ 1 (not a bool), finite.

:func:`canonical_normalizer` validates a setting and keeps names as names (numbers become floats);
:func:`normalizer_alpha` turns a fixed setting into its α. Both raise ``ValueError`` for an unknown name or a
bad number and ``TypeError`` for another type, with a message naming the argument. :func:`check_alpha_value` and
:func:`check_alpha_tensor` are the kernels' checks on an α given as a number or a tensor; :func:`check_alpha_init`
and :func:`check_parametrization` those on a learned α's initialisation and map.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

__all__ = [
    "LEARNED",
    "NORMALIZER_ALPHAS",
    "NORMALIZERS",
    "PARAMETRIZATIONS",
    "canonical_normalizer",
    "normalizer_alpha",
    "check_alpha_value",
    "check_alpha_dtype",
    "check_alpha_tensor",
    "check_alpha_init",
    "check_parametrization",
]

#: the setting of a learned α (one per head)
LEARNED = "learned"
#: the named fixed normalizers and the α each one means
NORMALIZER_ALPHAS: dict[str, float] = {"softmax": 1.0, "entmax15": 1.5, "sparsemax": 2.0}
#: every name a normalizer setting may take
NORMALIZERS: tuple[str, ...] = (*NORMALIZER_ALPHAS, LEARNED)
#: the maps from a learned α's parameter θ to α (see :class:`adasparse.LearnableAlpha`)
PARAMETRIZATIONS = ("clamp", "sigmoid")


def check_alpha_value(alpha: float, name: str = "alpha") -> float:
    """A Python (or NumPy) real α ≥ 1, returned as float; TypeError for other types, ValueError for bad values."""
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise TypeError(f"{name} must be a number >= 1 or a floating tensor, got {type(alpha).__name__}: {alpha!r}")
    a = float(alpha)
    if not math.isfinite(a) or a < 1.0:
        raise ValueError(f"{name} must be a finite number >= 1 (1 = softmax, 2 = sparsemax), got {alpha!r}")
    return a


def check_alpha_dtype(alpha: Tensor, name: str = "alpha") -> None:
    """TypeError unless the tensor α is floating-point (no look at its values: no device synchronisation)."""
    if not alpha.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {alpha.dtype}")


def check_alpha_tensor(alpha: Tensor, name: str = "alpha") -> None:
    """Dtype and value checks on a tensor α (finite, ≥ 1 everywhere); the value checks are skipped where the values
    are unknown (compile, vmap, meta, FakeTensor)."""
    check_alpha_dtype(alpha, name)
    if torch.compiler.is_compiling() or alpha.device.type == "meta":  # symbolic / no data
        return
    try:
        a = alpha.detach()
        if a.numel() <= 64 and a.device.type == "cpu":  # one value per head: cheaper in Python than 4 ops
            worst = next((v for v in a.flatten().tolist() if not (v >= 1.0 and math.isfinite(v))), None)
        elif a.numel() and not bool(((a >= 1) & torch.isfinite(a)).all()):
            worst = a[~((a >= 1) & torch.isfinite(a))].flatten()[0].item()
        else:
            worst = None
    except RuntimeError:  # functorch/dynamo/fake tensors cannot be inspected: the solver still sees them
        return
    if worst is not None:
        raise ValueError(f"{name} must be finite and >= 1 everywhere (1 = softmax, 2 = sparsemax); found {worst:.6g}")


def canonical_normalizer(
    normalizer: str | float, name: str = "normalizer", *, learned: bool = True, tensor: bool = False
) -> str | float:
    """Validate a normalizer setting: a name in :data:`NORMALIZERS` (returned as is) or a number α ≥ 1 (returned
    as float).

    Args:
        normalizer: the setting.
        name: the argument's name, for the messages.
        learned: whether ``"learned"`` is allowed (False where α must be fixed).
        tensor: whether the caller also takes a floating tensor α (only the messages say so; tensors are the
            caller's to check, e.g. with :func:`check_alpha_tensor`).

    Raises:
        ValueError: an unknown name, or a number < 1 or not finite.
        TypeError: another type (a bool too).
    """
    if isinstance(normalizer, str):
        if normalizer not in (NORMALIZERS if learned else NORMALIZER_ALPHAS):
            if normalizer == LEARNED:
                raise ValueError(f"{name}={LEARNED!r} is not allowed here (a fixed α); use {_allowed(learned, tensor)}")
            raise ValueError(
                f"{name}={normalizer!r} is not allowed (not a known normalizer); use {_allowed(learned, tensor)}"
            )
        return normalizer
    if isinstance(normalizer, bool) or not isinstance(normalizer, Real):
        raise TypeError(f"{name} must be {_allowed(learned, tensor)}, got {type(normalizer).__name__}: {normalizer!r}")
    return check_alpha_value(normalizer, name)


def _allowed(learned: bool, tensor: bool) -> str:
    names = list(NORMALIZERS if learned else NORMALIZER_ALPHAS)
    return f"one of {names}, a number α >= 1 or a floating tensor" if tensor else f"one of {names} or a number α >= 1"


def normalizer_alpha(normalizer: str | float, name: str = "normalizer", *, tensor: bool = False) -> float:
    """The α of a fixed normalizer setting (a name in :data:`NORMALIZER_ALPHAS` or a number α ≥ 1), as a float;
    errors as :func:`canonical_normalizer` with ``learned=False``."""
    if type(normalizer) is float and 1.0 <= normalizer < math.inf:  # the common case, without the checks' calls
        return normalizer
    a = canonical_normalizer(normalizer, name, learned=False, tensor=tensor)
    return NORMALIZER_ALPHAS[a] if isinstance(a, str) else a


def check_alpha_init(init: str | float, name: str = "alpha_init") -> str | float:
    """A learned α's initialisation: ``"normal"`` (θ ~ N(0, 1), the paper) or a real number in (1, 2) (not a bool);
    returned unchanged. ValueError otherwise (a range narrower than [1, 2] is the caller's to check)."""
    if isinstance(init, str):
        if init != "normal":
            raise ValueError(f"{name} must be 'normal' or a number in (1, 2), got {init!r}")
    elif isinstance(init, bool) or not isinstance(init, Real) or not 1.0 < float(init) < 2.0:
        raise ValueError(f"{name} must be 'normal' or a number in (1, 2), got {init!r}")
    return init


def check_parametrization(parametrization: str, name: str = "parametrization") -> str:
    """One of :data:`PARAMETRIZATIONS`, returned unchanged; ValueError otherwise."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"{name} must be one of {list(PARAMETRIZATIONS)}, got {parametrization!r}")
    return parametrization
