"""Transformer models with α-entmax attention: configs, presets and the encoder–decoder / decoder-only models."""

from .config import (
    ATTENTION_TYPES,
    DecoderOnlyConfig,
    Seq2SeqConfig,
    base,
    base_lm,
    small,
    small_lm,
    tiny,
    tiny_lm,
)
from .transformer import (
    DecoderCache,
    DecoderOnlyTransformer,
    Seq2SeqTransformer,
    build_model,
    count_parameters,
    label_smoothed_loss,
    reorder_cache,
    summary,
)

__all__ = [
    "ATTENTION_TYPES",
    "Seq2SeqConfig",
    "DecoderOnlyConfig",
    "tiny",
    "small",
    "base",
    "tiny_lm",
    "small_lm",
    "base_lm",
    "Seq2SeqTransformer",
    "DecoderOnlyTransformer",
    "DecoderCache",
    "reorder_cache",
    "build_model",
    "count_parameters",
    "label_smoothed_loss",
    "summary",
]
