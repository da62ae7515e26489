"""Decoding: batched greedy and beam search over a model's incremental ``decode_step``."""

from .search import SearchConfig, SearchResult, beam_search, generate, greedy_search, reorder_nested

__all__ = ["SearchConfig", "SearchResult", "beam_search", "generate", "greedy_search", "reorder_nested"]
