"""Data: parallel corpora, the embedded CMUdict grapheme-to-phoneme set, tokenizers, token-budget batching."""

from .batching import Batch, TokenBatcher, collate, encode_pairs, encode_sources, inference_batches
from .corpus import CorpusFiles, ParallelCorpus, find_corpus, load_parallel, read_lines
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TokenizerConfig, TokenizerPair

__all__ = [
    "Batch",
    "TokenBatcher",
    "collate",
    "encode_pairs",
    "encode_sources",
    "inference_batches",
    "CorpusFiles",
    "ParallelCorpus",
    "find_corpus",
    "load_parallel",
    "read_lines",
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "UNK_ID",
    "TokenizerConfig",
    "TokenizerPair",
]
