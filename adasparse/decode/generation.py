"""Text generation with a decoder-only language model: greedy, temperature, top-k and top-p (nucleus) sampling,
batched prompts of different lengths, on the model's KV cache.

The model is used through ``model.decode_step(tokens (B, t), cache) -> (logits (B, V), cache)`` (``cache=None``
at the first call) and ``model.config`` (``pad_id``, ``bos_id``, ``eos_id``, ``positions``, ``max_len``), as
:class:`~adasparse.models.DecoderOnlyTransformer` provides.

**Prompts of different lengths, without padding in the cache.** A prompt is ``bos, pieces...`` (no ``eos``). All
rows first read their first ``m`` ids together (``m`` the shortest prompt); then every call feeds one id per row:
the row's next prompt id while its prompt lasts, else the id chosen at the previous step. Every row therefore
holds only real ids at positions ``0, 1, 2, ...``: its positions, RoPE phases and length-scaling counts are
exactly those of the row decoded alone (tested: batched greedy output equals one prompt at a time). A row that
is finished (``eos``, or ``max_new_tokens`` ids) is fed ``pad`` until the whole batch is; those steps never reach
its output. The cost is one model call per id beyond the shortest prompt: :func:`generate_text` sorts prompts by
length before batching them.

**Choosing the next id** (:func:`next_token_scores`, :func:`choose_next`). ``pad`` and ``bos`` are never chosen
(they are not text, and never targets in training: :func:`generate_ids` sets their logits to ``-inf``). Then, in
this order on the last position's logits: divide by ``temperature``; keep the ``top_k`` highest (50 by default, as
Hugging Face's; ties at the k-th value all kept); keep the
nucleus, the smallest set of highest-probability ids whose probability sums to at least ``top_p`` (Holtzman et
al. 2020; the id that crosses ``top_p`` is in it, the most probable id always is); sample from the softmax of
what is left with a seeded :class:`torch.Generator`. ``method="greedy"`` (or ``temperature=0``, its limit) takes
the argmax (the lowest id among ties) and draws nothing. Sampling is reproducible for a seed and the same
prompts in the same batches; a prompt's sample depends on the rows it is batched with (they share the
generator), its greedy output does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.text import lm_tokenizer

__all__ = ["GenerationConfig", "next_token_scores", "choose_next", "generate_ids", "generate_text", "METHODS"]

METHODS = ("greedy", "sample")


@dataclass(frozen=True)
class GenerationConfig:
    """How to choose each next id (see the module docstring).

    Args:
        method: ``"greedy"`` (argmax) or ``"sample"``.
        temperature: sampling temperature, ``> 0``; ``0`` means greedy (the limit ``temperature → 0``).
        top_k: sample among the ``top_k`` most likely ids; ``0`` or ``None``: all ids; ``top_k=1`` is greedy.
            The default, 50, is Hugging Face's (``transformers.GenerationConfig``), as are the meanings of
            ``temperature``, ``top_k`` and ``top_p`` and their order (temperature, top-k, top-p).
        top_p: sample in the nucleus of probability ``top_p`` (``1.0``: all ids), ``0 < top_p <= 1``.
        seed: seed of the sampling generator.
    """

    method: str = "greedy"
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        if self.top_k is not None and (
            isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0
        ):
            raise ValueError(f"top_k must be an int >= 0 (0 = all ids) or None, got {self.top_k!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {p!r}")

    @property
    def is_greedy(self) -> bool:
        """Whether the choice is the argmax without sampling (``method="greedy"`` or ``temperature=0``)."""
        return self.method == "greedy" or self.temperature == 0


def next_token_scores(logits: Tensor, config: GenerationConfig) -> Tensor:
    """Sampling scores ``(B, V)`` from logits ``(B, V)``: divided by the temperature, ``-inf`` outside the top-k
    and outside the nucleus; their softmax is the distribution :func:`choose_next` samples from."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got shape {tuple(logits.shape)}")
    scores = logits.float()
    if config.temperature > 0:
        scores = scores / config.temperature
    if config.top_k and config.top_k < scores.shape[-1]:
        kth = scores.topk(config.top_k, dim=-1).values[:, -1:]  # (B, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if config.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True, stable=True)  # (B, V)
        probs = sorted_scores.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the ids ranked above each one
        drop_sorted = mass_before >= config.top_p  # the first id (mass_before = 0) is always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def choose_next(logits: Tensor, config: GenerationConfig, generator: torch.Generator | None = None) -> Tensor:
    """The next id of every row ``(B,)`` from the last position's logits ``(B, V)`` (module docstring)."""
    if config.is_greedy:
        return logits.argmax(dim=-1)
    probs = next_token_scores(logits, config).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _model_device(model: Any) -> torch.device:
    params = model.parameters() if hasattr(model, "parameters") else iter(())
    return next(iter(params), torch.empty(0)).device


def _position_limit(model: Any) -> int | None:
    """Positions the model can read (its sinusoidal table), or ``None`` (RoPE and NoPE take any length)."""
    c = getattr(model, "config", None)
    if c is None or getattr(c, "positions", "sinusoidal") != "sinusoidal":
        return None
    return getattr(c, "max_len", None)


@torch.no_grad()
def generate_ids(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    config: GenerationConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> list[list[int]]:
    """Continue each prompt (ids, starting with ``bos``) in one batch; returns the new ids of every row, ending
    with ``eos`` when the model chose it (module docstring).

    Args:
        model: a decoder-only model with ``decode_step`` (in eval mode: dropout is the caller's choice).
        prompts: one id list per row, each non-empty (``[bos]`` alone for unconditional text).
        max_new_tokens: most ids added per row (``eos`` included); a model with a sinusoidal position table adds
            at most ``max_len + 1 - len(prompt)`` (the last id chosen is never read back).
        config: how to choose ids (default: greedy).
        generator: the sampling generator (default: a new one on the model's device seeded with ``config.seed``).
        device: where the ids go (default: the model's device).
    """
    config = config or GenerationConfig()
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one id (bos)")
    device = torch.device(device) if device is not None else _model_device(model)
    c = model.config
    limit = _position_limit(model)
    lens = [len(p) for p in prompts]
    if limit is not None and max(lens) > limit:
        i = max(range(len(lens)), key=lens.__getitem__)
        raise ValueError(f"prompt {i} has {lens[i]} ids; the model reads at most max_len={limit} positions")
    budget = [max_new_tokens if limit is None else min(max_new_tokens, limit + 1 - n) for n in lens]
    out: list[list[int]] = [[] for _ in prompts]
    done = [b == 0 for b in budget]
    if all(done):
        return out
    if generator is None and not config.is_greedy:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    b, width = len(prompts), max(lens)
    buf = torch.full((b, width), c.pad_id, dtype=torch.long)  # (B, L): the prompts, right-padded
    for i, p in enumerate(prompts):
        buf[i, : len(p)] = torch.as_tensor(list(p), dtype=torch.long)
    buf = buf.to(device)
    lens_t = torch.tensor(lens, device=device)
    pos = min(lens)  # ids every row has read so far
    logits, cache = model.decode_step(buf[:, :pos], None)  # (B, V): predicts position `pos`
    banned = torch.tensor(sorted({c.pad_id, c.bos_id}), device=device)
    while True:
        logits = logits.index_fill(-1, banned, float("-inf"))  # (B, V)
        chosen = choose_next(logits, config, generator)  # (B,)
        in_prompt = pos < lens_t  # (B,) rows still reading their prompt
        if pos < width:
            chosen = torch.where(in_prompt, buf[:, pos], chosen)
        chosen_l = chosen.tolist()
        in_prompt_l = in_prompt.tolist()
        for i in range(b):
            if done[i] or in_prompt_l[i]:
                continue
            out[i].append(chosen_l[i])
            done[i] = chosen_l[i] == c.eos_id or len(out[i]) >= budget[i]
        if all(done):
            return out
        feed = chosen.masked_fill(torch.tensor(done, device=device) & ~in_prompt, c.pad_id)  # (B,)
        logits, cache = model.decode_step(feed[:, None], cache)
        pos += 1


@torch.no_grad()
def generate_text(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    config: GenerationConfig | None = None,
    *,
    batch_size: int = 16,
    include_prompt: bool = False,
    device: torch.device | str | None = None,
) -> list[str]:
    """Continue each prompt string; returns one string per prompt, in order.

    Prompts are encoded as ``bos, pieces...`` (an empty prompt is ``bos`` alone: text from scratch), sorted by
    length and generated ``batch_size`` at a time with :func:`generate_ids` and one generator seeded with
    ``config.seed``. Each result is the detokenized continuation (up to ``eos``), or with ``include_prompt`` the
    prompt and its continuation detokenized together (which keeps the space between them for sub-word
    tokenizers).

    Args:
        tokenizer: a :class:`~adasparse.data.tokenizer.Tokenizer` or a joint ``TokenizerPair`` (an LM checkpoint's).
    """
    config = config or GenerationConfig()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tok = lm_tokenizer(tokenizer)
    device = torch.device(device) if device is not None else _model_device(model)
    ids = [tok.encode(p, add_bos=True, add_eos=False) for p in prompts]
    limit = _position_limit(model)
    long = [i for i, p in enumerate(ids) if limit is not None and len(p) > limit]
    if long:  # here, before sorting: generate_ids would name the prompt by its row in a batch
        i = long[0]
        raise ValueError(
            f"prompt {i + 1} of {len(ids)} has {len(ids[i])} ids (bos included); the model reads at most "
            f"max_len={limit} positions: shorten it"
        )
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    generator = None if config.is_greedy else torch.Generator(device=device).manual_seed(config.seed)
    out = [""] * len(ids)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        new = generate_ids(model, [ids[i] for i in rows], max_new_tokens, config, generator=generator, device=device)
        for i, n in zip(rows, new):
            out[i] = tok.decode(ids[i] + n) if include_prompt else tok.decode(n)
    return out
