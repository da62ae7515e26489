"""Batching by token count, bucketed by length, deterministic given a seed and an epoch; distributed; resumable.

How an epoch's batches are made (:meth:`TokenBatcher.epoch_batches`):

1. the examples are shuffled with a generator seeded by ``(seed, epoch)``;
2. the shuffled order is cut into pools of ``pool_size`` examples (``None``: one pool, the whole data set) and
   each pool is stably sorted by length (target, then source), so ties keep their random order;
3. each pool is packed greedily into batches whose *padded* size ``n_examples · max(longest source, longest
   target)`` stays within ``max_tokens`` (and at most ``max_sentences`` examples);
4. the batches are shuffled (same generator).

Every example appears in exactly one batch per epoch. An example that alone exceeds ``max_tokens`` is an error at
construction (filter it, or raise ``max_tokens``).

Distributed: every rank computes the same global list of batches; if its length is not a multiple of
``world_size``, the largest batches are split in two until it is (so every rank takes the same number of steps and
the split stays disjoint and complete); rank ``r`` then takes global batches ``r, r + W, r + 2W, ...``. Global step
``k`` is made of batches ``kW .. kW + W - 1``: a single process accumulating gradients over ``W`` consecutive
batches of the same ``world_size=W`` schedule (``rank=None``, see :meth:`TokenBatcher.global_batches`) sees the same
data as ``W`` ranks.

Resuming: :meth:`state_dict` is ``{"epoch", "batch_index"}`` (batches of this rank already handed out in that
epoch); after :meth:`load_state_dict`, iteration continues with the next batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .tokenizer import BOS_ID, EOS_ID, PAD_ID

__all__ = ["Batch", "collate", "TokenBatcher", "encode_pairs", "encode_sources", "inference_batches"]


@dataclass
class Batch:
    """A padded batch (pad id where a mask is False).

    ``src`` (B, S) and ``src_mask`` (B, S), True = real token; ``tgt_in`` (B, T) is the target without its last
    token (decoder input, starts with bos), ``tgt_out`` (B, T) the target shifted left (labels, ends with eos),
    ``tgt_mask`` (B, T) True where ``tgt_out`` is a real token. ``indices`` are the examples' positions in the
    data set. ``n_tgt_tokens`` counts label tokens (the usual loss normaliser).
    """

    src: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_mask: Tensor
    indices: list[int]

    @property
    def size(self) -> int:
        return self.src.shape[0]

    @property
    def n_src_tokens(self) -> int:
        return int(self.src_mask.sum())

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.tgt_mask.sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            move(self.src),
            move(self.src_mask),
            move(self.tgt_in),
            move(self.tgt_out),
            move(self.tgt_mask),
            self.indices,
        )


def encode_sources(tokenizer, lines: Sequence[str], max_len: int | None = None) -> list[list[int]]:
    """Source ids as the encoder sees them: the pieces then ``eos`` (no ``bos``, as in fairseq), truncated to
    ``max_len`` ids (eos kept) when given."""
    out = []
    for line in lines:
        ids = tokenizer.encode(line, add_bos=False, add_eos=True)
        if max_len is not None and len(ids) > max_len:
            ids = ids[: max_len - 1] + [ids[-1]]
        out.append(ids)
    return out


def encode_pairs(
    tokenizers, src_lines: Sequence[str], tgt_lines: Sequence[str], max_len: int | None = None
) -> tuple[list[list[int]], list[list[int]], int]:
    """Tokenize a parallel corpus for training: sources as in :func:`encode_sources`, targets ``bos ... eos``.

    ``tokenizers`` is a :class:`~adasparse.data.tokenizer.TokenizerPair`. Pairs where either side has more than
    ``max_len`` ids are dropped (sub-word lengths, unlike the word limit of the corpus reader). Returns the source
    ids, the target ids and the number of dropped pairs.
    """
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"encode_pairs: {len(src_lines)} sources vs {len(tgt_lines)} targets")
    src_out, tgt_out, dropped = [], [], 0
    for s, t in zip(src_lines, tgt_lines):
        si = tokenizers.src.encode(s, add_bos=False, add_eos=True)
        ti = tokenizers.tgt.encode(t, add_bos=True, add_eos=True)
        if max_len is not None and (len(si) > max_len or len(ti) > max_len):
            dropped += 1
            continue
        src_out.append(si)
        tgt_out.append(ti)
    return src_out, tgt_out, dropped


def warn_unknown(ids: Sequence[Sequence[int]], unk_id: int, what: str, *, stacklevel: int = 2) -> float:
    """Warn when more than 10 % of the tokens in ``ids`` are ``<unk>``: text the vocabulary does not know (another
    language or script, or the wrong checkpoint) gives confident nonsense, not an error. Returns the rate."""
    specials = {PAD_ID, BOS_ID, EOS_ID}  # the text's own tokens are counted, not the markers added to it
    n = sum(1 for x in ids for t in x if t not in specials)
    unk = sum(1 for x in ids for t in x if t == unk_id)
    rate = unk / n if n else 0.0
    if rate > 0.1:
        lines = sum(1 for x in ids if unk_id in x)
        warnings.warn(
            f"{what}: {100 * rate:.0f}% of the tokens ({unk} of {n}, in {lines} of {len(ids)} lines) are unknown to "
            "the model's vocabulary (<unk>): is this text in the language and script the model was trained on?",
            stacklevel=stacklevel + 1,
        )
    return rate


def inference_batches(
    src: Sequence[Sequence[int]], max_tokens: int, pad_id: int = 0, max_sentences: int | None = None
) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """Source-only batches for decoding: ``(indices, src (B, S), src_mask (B, S))``, longest sentences first.

    Sorting by length keeps padding low; put the outputs back in order with ``indices``. A sentence longer than
    ``max_tokens`` gets a batch of its own.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(len(src)), key=lambda i: -len(src[i]))
    cur: list[int] = []
    for i in order:
        width = len(src[cur[0]]) if cur else len(src[i])  # the first is the longest
        full = max_sentences is not None and len(cur) >= max_sentences
        if cur and (full or (len(cur) + 1) * width > max_tokens):
            yield (cur, *_pad([src[j] for j in cur], pad_id))
            cur = []
        cur.append(i)
    if cur:
        yield (cur, *_pad([src[j] for j in cur], pad_id))


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, L)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    mask = torch.arange(width)[None, :] < torch.tensor([len(s) for s in seqs])[:, None]  # (B, L)
    return out, mask


def collate(
    src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], pad_id: int = 0, indices: Sequence[int] | None = None
) -> Batch:
    """Pad token-id lists into a :class:`Batch`. Targets must hold bos ... eos (at least 2 ids)."""
    if len(src) != len(tgt):
        raise ValueError(f"collate: {len(src)} sources vs {len(tgt)} targets")
    if any(len(t) < 2 for t in tgt):
        raise ValueError("collate: every target needs at least bos and eos (2 ids)")
    src_t, src_mask = _pad(src, pad_id)
    tgt_in, _ = _pad([t[:-1] for t in tgt], pad_id)
    tgt_out, tgt_mask = _pad([t[1:] for t in tgt], pad_id)
    return Batch(src_t, src_mask, tgt_in, tgt_out, tgt_mask, list(indices if indices is not None else range(len(src))))


class TokenBatcher:
    """Token-budget batches of tokenized pairs; see the module docstring for the algorithm and guarantees.

    Args:
        src, tgt: token-id sequences (targets with bos and eos).
        max_tokens: budget of padded tokens per batch, ``n · max(max source len, max target len)``.
        max_sentences: cap on examples per batch (``None``: no cap).
        seed: base seed; epoch ``e`` uses the generator seeded with ``(seed, e)``.
        shuffle: ``False`` keeps the data order (batches of consecutive examples; for evaluation).
        pool_size: examples per length-sorted pool (``None``: the whole data set).
        rank, world_size: this process's share (``rank=None`` iterates every global batch, in order).
        pad_id: padding id of the tensors.
    """

    def __init__(
        self,
        src: Sequence[Sequence[int]],
        tgt: Sequence[Sequence[int]],
        max_tokens: int,
        *,
        max_sentences: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        pool_size: int | None = None,
        rank: int | None = 0,
        world_size: int = 1,
        pad_id: int = 0,
    ):
        if len(src) != len(tgt):
            raise ValueError(f"TokenBatcher: {len(src)} sources vs {len(tgt)} targets")
        if len(src) == 0:
            raise ValueError("TokenBatcher: no examples")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if max_sentences is not None and max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1 or None, got {max_sentences}")
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 or None, got {pool_size}")
        if world_size < 1 or (rank is not None and not 0 <= rank < world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.src, self.tgt = src, tgt
        self.src_lens = np.array([len(s) for s in src], dtype=np.int64)
        self.tgt_lens = np.array([len(t) for t in tgt], dtype=np.int64)
        self.cost = np.maximum(self.src_lens, self.tgt_lens)
        too_long = np.flatnonzero(self.cost > max_tokens)
        if too_long.size:
            i = int(too_long[0])
            raise ValueError(
                f"{too_long.size} examples are longer than max_tokens={max_tokens} (e.g. example {i}: "
                f"{self.src_lens[i]} source / {self.tgt_lens[i]} target tokens); filter them or raise max_tokens"
            )
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.seed, self.shuffle, self.pool_size = seed, shuffle, pool_size
        self.rank, self.world_size, self.pad_id = rank, world_size, pad_id
        self.epoch, self.batch_index = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    # -- the schedule ---------------------------------------------------------------------------------------------

    def _pack(self, order: np.ndarray) -> list[list[int]]:
        batches, cur, longest = [], [], 0
        for i in order.tolist():
            c = int(self.cost[i])
            full = self.max_sentences is not None and len(cur) >= self.max_sentences
            if cur and (full or (len(cur) + 1) * max(longest, c) > self.max_tokens):
                batches.append(cur)
                cur, longest = [], 0
            cur.append(i)
            longest = max(longest, c)
        if cur:
            batches.append(cur)
        return batches

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of ``epoch`` (example indices), in order, before the split between ranks."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = len(self.cost)
        if not self.shuffle:
            batches = self._pack(np.arange(n))
        else:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(n)
            pool = self.pool_size or n
            batches = []
            for start in range(0, n, pool):
                chunk = order[start : start + pool]
                key = self.tgt_lens[chunk] * (int(self.src_lens.max()) + 1) + self.src_lens[chunk]
                batches.extend(self._pack(chunk[np.argsort(key, kind="stable")]))
            batches = [batches[j] for j in rng.permutation(len(batches))]
        batches = self._even_out(batches)
        self._cache = (epoch, batches)
        return batches

    def _even_out(self, batches: list[list[int]]) -> list[list[int]]:
        """Split the largest batches in two (in place of the original) until ``world_size`` divides the count."""
        w = self.world_size
        while len(batches) % w:
            sizes = [len(b) for b in batches]
            j = int(np.argmax(sizes))
            if sizes[j] < 2:
                raise ValueError(f"{len(self.cost)} examples cannot be spread over world_size={w} ranks")
            b = batches[j]
            batches[j : j + 1] = [b[: len(b) // 2], b[len(b) // 2 :]]
        return batches

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (example indices)."""
        batches = self.global_batches(epoch)
        return batches if self.rank is None else batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        """Batches of this rank in the current epoch."""
        return len(self.epoch_batches(self.epoch))

    # -- iteration and resuming -----------------------------------------------------------------------------------

    def make_batch(self, indices: Sequence[int]) -> Batch:
        return collate([self.src[i] for i in indices], [self.tgt[i] for i in indices], self.pad_id, indices)

    def __iter__(self) -> Iterator[Batch]:
        """The remaining batches of the current epoch, from :attr:`batch_index`; then moves to the next epoch."""
        batches = self.epoch_batches(self.epoch)
        while self.batch_index < len(batches):
            idx = batches[self.batch_index]
            self.batch_index += 1
            yield self.make_batch(idx)
        self.epoch, self.batch_index = self.epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch, self.batch_index = epoch, 0

    def state_dict(self) -> dict[str, int]:
        """Where iteration stands: ``epoch`` and ``batch_index`` (batches of this rank already handed out)."""
        return {"epoch": self.epoch, "batch_index": self.batch_index, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict`; a different seed or world size is an error (the schedule differs)."""
        for key in ("seed", "world_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"cannot resume: saved {key}={state[key]}, this batcher has {getattr(self, key)}")
        self.epoch, self.batch_index = int(state["epoch"]), int(state["batch_index"])
