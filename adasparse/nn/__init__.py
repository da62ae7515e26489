"""Modules: the α-entmax mappings as layers, the learnable α, and (later) attention."""

from .activations import Entmax, Entmax15, LearnableAlpha, Sparsemax

__all__ = ["Entmax", "Entmax15", "Sparsemax", "LearnableAlpha"]
