"""Decoding: batched greedy and beam search over a model's incremental ``decode_step``; text-to-text translation;
language-model generation (greedy, top-k/top-p sampling) and perplexity."""

from .generation import GenerationConfig, choose_next, generate_ids, generate_text, next_token_scores
from .perplexity import PerplexityScores, score_text
from .search import SearchConfig, SearchResult, beam_search, generate, greedy_search, reorder_nested
from .translate import translate_lines

__all__ = [
    "GenerationConfig",
    "choose_next",
    "generate_ids",
    "generate_text",
    "next_token_scores",
    "PerplexityScores",
    "score_text",
    "SearchConfig",
    "SearchResult",
    "beam_search",
    "generate",
    "greedy_search",
    "reorder_nested",
    "translate_lines",
]
