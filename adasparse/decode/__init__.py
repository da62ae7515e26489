"""Decoding: batched greedy and beam search over a model's incremental ``decode_step``; text-to-text translation;
language-model generation (greedy, top-k/top-p sampling)."""

from .generation import GenerationConfig, choose_next, generate_ids, generate_text, next_token_scores
from .search import SearchConfig, SearchResult, beam_search, generate, greedy_search, reorder_nested
from .translate import translate_lines

__all__ = [
    "GenerationConfig",
    "choose_next",
    "generate_ids",
    "generate_text",
    "next_token_scores",
    "SearchConfig",
    "SearchResult",
    "beam_search",
    "generate",
    "greedy_search",
    "reorder_nested",
    "translate_lines",
]
