"""Modules: the α-entmax mappings as layers, the learnable α, and α-entmax attention."""

from .activations import Entmax, Entmax15, LearnableAlpha, Sparsemax, alpha_parameters
from .attention import AttentionStats, available_attention_backends, entmax_attention, register_attention_backend
from .length_scaling import LengthScaling
from .multihead import KVCache, MultiheadAttention
from .positions import RotaryEmbedding
from .qk_transform import QKTransform

__all__ = [
    "Entmax",
    "Entmax15",
    "Sparsemax",
    "LearnableAlpha",
    "alpha_parameters",
    "entmax_attention",
    "AttentionStats",
    "register_attention_backend",
    "available_attention_backends",
    "MultiheadAttention",
    "KVCache",
    "RotaryEmbedding",
    "LengthScaling",
    "QKTransform",
]
