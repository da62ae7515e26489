"""The α-entmax family: mappings with exact gradients in the scores and α, and their losses."""

from .entmax import entmax, entmax15, sparsemax
from .losses import entmax15_loss, entmax_loss, sparsemax_loss

__all__ = ["entmax", "entmax15", "sparsemax", "entmax_loss", "entmax15_loss", "sparsemax_loss"]
