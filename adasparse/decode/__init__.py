"""Decoding: batched greedy and beam search over a model's incremental ``decode_step``; text-to-text translation."""

from .search import SearchConfig, SearchResult, beam_search, generate, greedy_search, reorder_nested
from .translate import translate_lines

__all__ = [
    "SearchConfig",
    "SearchResult",
    "beam_search",
    "generate",
    "greedy_search",
    "reorder_nested",
    "translate_lines",
]
