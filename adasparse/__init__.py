"""adasparse: adaptively sparse Transformers (α-entmax attention with learned α per head).

Correia, Niculae & Martins, "Adaptively Sparse Transformers", EMNLP 2019.
"""

from ._version import __version__
from .nn import Entmax, Entmax15, LearnableAlpha, Sparsemax
from .ops import entmax, entmax15, entmax15_loss, entmax_loss, sparsemax, sparsemax_loss

__all__ = [
    "__version__",
    "entmax",
    "entmax15",
    "sparsemax",
    "entmax_loss",
    "entmax15_loss",
    "sparsemax_loss",
    "Entmax",
    "Entmax15",
    "Sparsemax",
    "LearnableAlpha",
]
