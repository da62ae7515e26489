"""Batched greedy and beam search over an encoder–decoder with an incremental (KV-cache) decoder.

The model is used through three calls (any object providing them works):

* ``model.encode(src (B, S) long, src_mask (B, S) bool, True = real) -> (memory, src_mask)``;
* ``model.decode_step(tokens (B, 1) long, memory, src_mask, cache) -> (logits (B, V), cache)``, with
  ``cache=None`` at the first step;
* ``model.config.pad_id``, ``bos_id``, ``eos_id`` (or pass them explicitly).

Beam search keeps ``B · K`` rows and reorders the cache after every step with ``reorder_cache(cache, index)``
(``index`` (B·K,) long: new row ``i`` continues old row ``index[i]``). By default it uses ``cache.reorder(index)``
if the cache has that method, else ``model.reorder_cache(cache, index)``, else it selects rows along dim 0 of every
tensor inside nested tuples/lists/dicts (:func:`reorder_nested`).

Scores are sums of log-probabilities. Finished beam hypotheses are compared after a length penalty
(``length_penalty_kind``):

* ``"gnmt"`` (Wu et al., 2016): ``score / ((5 + |y|) / 6) ** length_penalty``;
* ``"average"`` (fairseq's normalisation): ``score / |y| ** length_penalty``;

``|y|`` counts the generated tokens including eos; ``length_penalty = 0`` ranks by the raw log-probability. The
returned ``scores`` are the penalised ones (raw log-probabilities in ``log_probs``). The output length is at most
``round(max_len_ratio · source length + max_len_offset)`` tokens (eos included), per sentence, and never more than
``max_len``. A beam sentence is finished when it holds ``beam_size`` ended hypotheses (fairseq's criterion); at
its maximum length its live beams are ended there. With ``beam_size=1`` beam search returns exactly the greedy
output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["SearchConfig", "SearchResult", "greedy_search", "beam_search", "generate", "reorder_nested"]

_LP_KINDS = ("gnmt", "average")


@dataclass(frozen=True)
class SearchConfig:
    """Decoding options (see the module docstring)."""

    beam_size: int = 1
    length_penalty: float = 1.0
    length_penalty_kind: str = "gnmt"
    max_len_ratio: float = 1.5
    max_len_offset: int = 10
    max_len: int = 512

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.length_penalty_kind not in _LP_KINDS:
            raise ValueError(f"length_penalty_kind must be one of {_LP_KINDS}, got {self.length_penalty_kind!r}")
        for name in ("length_penalty", "max_len_ratio"):  # nan and inf would pass a plain >= 0
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} ({flag}) must be a finite number >= 0, got {value!r}")
        if isinstance(self.max_len_offset, bool) or not isinstance(self.max_len_offset, int) or self.max_len_offset < 0:
            raise ValueError(f"max_len_offset (--max-len-offset) must be an int >= 0, got {self.max_len_offset!r}")
        if self.max_len_ratio == 0 and self.max_len_offset < 2:
            raise ValueError(
                f"max_len_ratio=0 with max_len_offset={self.max_len_offset} leaves no room for a single token before "
                "the end of the sentence: give max_len_offset >= 2 (--max-len-offset)"
            )
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")


@dataclass
class SearchResult:
    """Per sentence: the token ids (no bos, no eos), the ranking score and the summed log-probability."""

    tokens: list[list[int]]
    scores: list[float]
    log_probs: list[float]


def reorder_nested(cache: Any, index: Tensor) -> Any:
    """Select rows ``index`` along dim 0 of every tensor in a nested tuple/list/dict cache."""
    if isinstance(cache, Tensor):
        return cache.index_select(0, index.to(cache.device))
    if isinstance(cache, (list, tuple)):
        items = [reorder_nested(c, index) for c in cache]
        return type(cache)(*items) if hasattr(cache, "_fields") else type(cache)(items)
    if isinstance(cache, dict):
        return {k: reorder_nested(v, index) for k, v in cache.items()}
    if cache is None or isinstance(cache, (int, float, str, bool)):
        return cache
    raise TypeError(f"reorder_nested: cannot reorder a {type(cache).__name__}; pass reorder_cache=")


def _default_reorder(model: Any) -> Callable[[Any, Tensor], Any]:
    def reorder(cache: Any, index: Tensor) -> Any:
        if hasattr(cache, "reorder"):
            return cache.reorder(index)
        if hasattr(model, "reorder_cache"):
            return model.reorder_cache(cache, index)
        return reorder_nested(cache, index)

    return reorder


def _special_ids(model: Any, pad_id, bos_id, eos_id) -> tuple[int, int, int]:
    cfg = getattr(model, "config", None)
    ids = []
    for name, given in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
        value = given if given is not None else getattr(cfg, name, None)
        if value is None:
            raise ValueError(f"{name} is neither given nor found on model.config")
        ids.append(int(value))
    return ids[0], ids[1], ids[2]


def _max_lengths(src_mask: Tensor, config: SearchConfig) -> Tensor:
    src_len = src_mask.sum(1).float()  # (B,)
    limit = torch.round(src_len * config.max_len_ratio + config.max_len_offset).long()
    return limit.clamp(1, config.max_len)


def _length_penalty(length: int, config: SearchConfig) -> float:
    if config.length_penalty == 0:
        return 1.0
    if config.length_penalty_kind == "gnmt":
        return ((5.0 + length) / 6.0) ** config.length_penalty
    return float(length) ** config.length_penalty


@torch.no_grad()
def greedy_search(
    model: Any,
    src: Tensor,
    src_mask: Tensor,
    config: SearchConfig = SearchConfig(),
    *,
    pad_id: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
) -> SearchResult:
    """Pick the most probable next token at every step, for the whole batch at once."""
    pad_id, bos_id, eos_id = _special_ids(model, pad_id, bos_id, eos_id)
    memory, src_mask = model.encode(src, src_mask)
    b = src.shape[0]
    max_lens = _max_lengths(src_mask, config)
    tokens = torch.full((b, 1), bos_id, dtype=torch.long, device=src.device)  # (B, 1)
    out = torch.full((b, int(max_lens.max())), pad_id, dtype=torch.long, device=src.device)  # (B, L)
    lengths = torch.zeros(b, dtype=torch.long, device=src.device)
    log_probs = torch.zeros(b, dtype=torch.float64, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    cache = None
    for t in range(out.shape[1]):
        logits, cache = model.decode_step(tokens, memory, src_mask, cache)  # (B, V)
        logp = torch.log_softmax(logits.float(), dim=-1)
        best = logp.argmax(-1)  # (B,)
        live = ~done
        out[live, t] = best[live]
        log_probs[live] += logp[live, best[live]].double()
        lengths[live] += 1
        done |= (best == eos_id) | (lengths >= max_lens)
        if bool(done.all()):
            break
        tokens = best.unsqueeze(1)  # (B, 1)
    seqs, lps = [], []
    for i in range(b):
        seq = out[i, : int(lengths[i])].tolist()
        seqs.append(seq[:-1] if seq and seq[-1] == eos_id else seq)
        lps.append(float(log_probs[i]))
    return SearchResult(seqs, list(lps), lps)


@torch.no_grad()
def beam_search(
    model: Any,
    src: Tensor,
    src_mask: Tensor,
    config: SearchConfig = SearchConfig(beam_size=4),
    *,
    reorder_cache: Callable[[Any, Tensor], Any] | None = None,
    pad_id: int | None = None,
    bos_id: int | None = None,
    eos_id: int | None = None,
) -> SearchResult:
    """Batched beam search with ``config.beam_size`` beams per sentence (see the module docstring)."""
    pad_id, bos_id, eos_id = _special_ids(model, pad_id, bos_id, eos_id)
    reorder = reorder_cache or _default_reorder(model)
    k = config.beam_size
    memory, src_mask = model.encode(src, src_mask)
    b, device = src.shape[0], src.device
    max_lens = _max_lengths(src_mask, config).tolist()
    rows = torch.arange(b, device=device).repeat_interleave(k)  # (B*K,) sentence of each row
    memory = reorder_nested(memory, rows)
    src_mask = src_mask.index_select(0, rows)  # (B*K, S)
    tokens = torch.full((b * k, 1), bos_id, dtype=torch.long, device=device)  # (B*K, t+1) incl. bos
    scores = torch.full((b, k), float("-inf"), dtype=torch.float64, device=device)
    scores[:, 0] = 0.0  # only the first beam is alive at the start (all beams are equal)
    finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(b)]
    done = [False] * b
    cache = None
    for t in range(max(max_lens)):
        logits, cache = model.decode_step(tokens[:, -1:], memory, src_mask, cache)  # (B*K, V)
        logp = torch.log_softmax(logits.float(), dim=-1).double()
        v = logp.shape[-1]
        cand = (scores.view(-1, 1) + logp).view(b, k * v)  # (B, K*V)
        n_cand = min(2 * k, k * v)
        top_scores, top_idx = cand.topk(n_cand, dim=1)  # (B, 2K)
        top_beam, top_tok = top_idx // v, top_idx % v
        new_scores = torch.full((b, k), float("-inf"), dtype=torch.float64, device=device)
        new_src_row = torch.arange(b * k, device=device)  # dead or finished sentences keep their rows
        new_tok = torch.full((b * k,), pad_id, dtype=torch.long, device=device)
        ts, tb, tt = top_scores.tolist(), top_beam.tolist(), top_tok.tolist()
        for i in range(b):
            if done[i]:
                continue
            last_step = t + 1 >= max_lens[i]
            n_alive = 0
            for rank, (score, beam, tok) in enumerate(zip(ts[i], tb[i], tt[i])):
                if score == float("-inf"):
                    break
                row = i * k + beam
                if tok == eos_id or last_step:
                    # as in fairseq, only an ending among the top K candidates is final; a lower one is dropped
                    if (rank < k or last_step) and len(finished[i]) < k:
                        hyp = tokens[row, 1:].tolist() + ([] if tok == eos_id else [tok])
                        finished[i].append((score / _length_penalty(t + 1, config), score, hyp))
                elif n_alive < k:
                    new_scores[i, n_alive] = score
                    new_src_row[i * k + n_alive] = row
                    new_tok[i * k + n_alive] = tok
                    n_alive += 1
                if len(finished[i]) >= k or (n_alive >= k and rank >= k - 1):
                    break
            done[i] = len(finished[i]) >= k or last_step or n_alive == 0
        if all(done):
            break
        scores = new_scores
        tokens = torch.cat([tokens.index_select(0, new_src_row), new_tok.unsqueeze(1)], dim=1)  # (B*K, t+2)
        cache = reorder(cache, new_src_row)
    seqs, ranked, lps = [], [], []
    for hyps in finished:
        best = max(hyps, key=lambda h: h[0]) if hyps else (float("-inf"), float("-inf"), [])
        ranked.append(best[0])
        lps.append(best[1])
        seqs.append(best[2])
    return SearchResult(seqs, ranked, lps)


def generate(
    model: Any,
    src: Tensor,
    src_mask: Tensor,
    config: SearchConfig = SearchConfig(),
    **kwargs: Any,
) -> SearchResult:
    """Greedy search when ``config.beam_size == 1``, beam search otherwise."""
    if config.beam_size == 1:
        kwargs.pop("reorder_cache", None)
        return greedy_search(model, src, src_mask, config, **kwargs)
    return beam_search(model, src, src_mask, config, **kwargs)
