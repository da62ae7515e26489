"""Text in, text out: tokenize, batch by length, search, detokenize, restore the input order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.batching import encode_sources, inference_batches
from .search import SearchConfig, generate

__all__ = ["translate_lines"]


@torch.no_grad()
def translate_lines(
    model: Any,
    tokenizers: Any,
    lines: Sequence[str],
    config: SearchConfig | None = None,
    *,
    max_tokens: int = 4096,
    max_src_len: int | None = None,
    device: torch.device | str | None = None,
    **search_kwargs: Any,
) -> list[str]:
    """Translate ``lines`` (detokenized outputs, in input order) with greedy or beam search.

    Args:
        model: an encoder–decoder with ``encode``/``decode_step`` (see :mod:`adasparse.decode.search`), in eval mode.
        tokenizers: a :class:`~adasparse.data.tokenizer.TokenizerPair` (``src`` encodes, ``tgt`` decodes).
        config: search options (default ``SearchConfig()``: greedy).
        max_tokens: padded source tokens per batch (beam search multiplies the work by ``beam_size``).
        max_src_len: truncate longer sources to this many ids (e.g. the model's maximum positions).
        device: where to run (default: the device of the model's first parameter, else CPU).
        search_kwargs: passed to the search (``reorder_cache=``...).
    """
    config = config or SearchConfig()
    if device is None:
        params = model.parameters() if hasattr(model, "parameters") else iter(())
        device = next(iter(params), torch.empty(0)).device
    src = encode_sources(tokenizers.src, lines, max_src_len)
    out: list[str] = [""] * len(lines)
    for indices, src_t, mask in inference_batches(src, max_tokens, pad_id=tokenizers.src.pad_id):
        res = generate(model, src_t.to(device), mask.to(device), config, **search_kwargs)
        for i, toks in zip(indices, res.tokens):
            out[i] = tokenizers.tgt.decode(toks)
    return out
