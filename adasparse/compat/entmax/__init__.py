"""The ``entmax`` package's API (version 1.3) on adasparse's kernels: ``import adasparse.compat.entmax as entmax``.

Same names, signatures, defaults and return values as the package (``deep-spin/entmax``), in the same modules
(:mod:`.activations`, :mod:`.root_finding`, :mod:`.losses`), so code written for it runs unchanged; the package's
own test files pass against it. Where a call has an exact adasparse kernel (sparsemax, 1.5-entmax, α-entmax with α
in [1, 2], normmax through α'-entmax, their losses) it runs on it; the rest (α-entmax for α < 1 or > 2, budget
sparsemax, fewer than 24 bisection steps) is solved here (:mod:`._solvers`). What differs from the package is listed
in each module's docstring: it is where the package returns NaN or an inaccurate answer, fails deep inside, gives
no gradient, or ignores an argument.
"""

from .activations import Entmax15, Sparsemax, entmax15, sparsemax
from .losses import (
    Entmax15Loss,
    EntmaxBisectLoss,
    NormmaxBisectLoss,
    SparsemaxBisectLoss,
    SparsemaxLoss,
    entmax15_loss,
    entmax_bisect_loss,
    normmax_bisect_loss,
    sparsemax_bisect_loss,
    sparsemax_loss,
)
from .root_finding import (
    BudgetBisect,
    EntmaxBisect,
    NormmaxBisect,
    SparsemaxBisect,
    budget_bisect,
    entmax_bisect,
    normmax_bisect,
    sparsemax_bisect,
)

__version__ = "1.3"  # the version of the entmax package whose API this mirrors

__all__ = [
    "sparsemax",
    "entmax15",
    "Sparsemax",
    "Entmax15",
    "sparsemax_bisect",
    "entmax_bisect",
    "normmax_bisect",
    "budget_bisect",
    "SparsemaxBisect",
    "EntmaxBisect",
    "NormmaxBisect",
    "BudgetBisect",
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
]
