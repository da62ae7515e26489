"""Text in, text out: tokenize, batch by length, search, detokenize, restore the input order."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ..data.batching import encode_sources, inference_batches, warn_unknown
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
    """Translate ``lines`` (detokenized outputs, in input order) with greedy or beam search; a blank (or
    whitespace-only) line gives an empty output line, without running the model.

    Args:
        model: an encoder–decoder with ``encode``/``decode_step`` (see :mod:`adasparse.decode.search`), in eval mode.
        tokenizers: a :class:`~adasparse.data.tokenizer.TokenizerPair` (``src`` encodes, ``tgt`` decodes).
        config: search options (default ``SearchConfig()``: greedy).
        max_tokens: padded source tokens per batch (beam search multiplies the work by ``beam_size``).
        max_src_len: truncate longer sources to this many ids, eos kept, with a warning (default: the model's
            ``config.max_len``, its number of positions, when it has one; the output length is capped by it too).
        device: where to run (default: the device of the model's first parameter, else CPU).
        search_kwargs: passed to the search (``reorder_cache=``...).
    """
    config = config or SearchConfig()
    if device is None:
        params = model.parameters() if hasattr(model, "parameters") else iter(())
        device = next(iter(params), torch.empty(0)).device
    model_max = getattr(getattr(model, "config", None), "max_len", None)
    if isinstance(model_max, int):  # positions beyond the model's table would fail in the middle of a run
        max_src_len = model_max if max_src_len is None else min(max_src_len, model_max)
        if config.max_len > model_max:
            config = dataclasses.replace(config, max_len=model_max)
    keep = [i for i, line in enumerate(lines) if line.strip()]  # a blank line translates to a blank line
    src = encode_sources(tokenizers.src, [lines[i] for i in keep])
    warn_unknown(src, tokenizers.src.unk_id, "the input", stacklevel=3)  # the caller, past the no_grad wrapper
    if max_src_len is not None:
        long = [j for j, ids in enumerate(src) if len(ids) > max_src_len]
        if long:
            warnings.warn(
                f"{len(long)} input lines are longer than {max_src_len} tokens (first: line {keep[long[0]] + 1}, "
                f"{len(src[long[0]])} tokens); translating only their first {max_src_len - 1} tokens",
                stacklevel=3,  # the caller, past the no_grad wrapper
            )
            src = [ids[: max_src_len - 1] + ids[-1:] if len(ids) > max_src_len else ids for ids in src]  # eos kept
    out: list[str] = [""] * len(lines)
    for indices, src_t, mask in inference_batches(src, max_tokens, pad_id=tokenizers.src.pad_id):
        res = generate(model, src_t.to(device), mask.to(device), config, **search_kwargs)
        for j, toks in zip(indices, res.tokens):
            out[keep[j]] = tokenizers.tgt.decode(toks)
    return out
