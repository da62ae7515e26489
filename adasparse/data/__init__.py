"""Data: parallel corpora, language-model text, the embedded CMUdict grapheme-to-phoneme set, tokenizers, token-budget batching."""

from .batching import Batch, TokenBatcher, collate, encode_pairs, encode_sources, inference_batches
from .corpus import CorpusFiles, ParallelCorpus, find_corpus, load_parallel, read_lines
from .text import LMBatch, LMBatcher, TextFiles, find_text, lm_sequences, lm_tokenizer, load_text, train_lm_tokenizer
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
    "LMBatch",
    "LMBatcher",
    "TextFiles",
    "find_text",
    "lm_sequences",
    "lm_tokenizer",
    "load_text",
    "train_lm_tokenizer",
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "UNK_ID",
    "TokenizerConfig",
    "TokenizerPair",
]
