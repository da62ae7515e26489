"""adasparse: adaptively sparse Transformers (α-entmax attention with learned α per head).

Correia, Niculae & Martins, "Adaptively Sparse Transformers", EMNLP 2019.
"""

from ._version import __version__
from .models import (
    DecoderOnlyConfig,
    DecoderOnlyTransformer,
    Seq2SeqConfig,
    Seq2SeqTransformer,
    build_model,
    count_parameters,
    summary,
)
from .nn import Entmax, Entmax15, LearnableAlpha, Sparsemax
from .nn.attention import AttentionStats, entmax_attention, register_attention_backend
from .nn.multihead import KVCache, MultiheadAttention
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
    "entmax_attention",
    "AttentionStats",
    "register_attention_backend",
    "MultiheadAttention",
    "KVCache",
    "Seq2SeqConfig",
    "DecoderOnlyConfig",
    "Seq2SeqTransformer",
    "DecoderOnlyTransformer",
    "build_model",
    "count_parameters",
    "summary",
]
