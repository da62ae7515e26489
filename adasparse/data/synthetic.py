"""Synthetic sequence tasks for length generalisation: train at short lengths, test at long ones.

Every task samples ``(inputs, targets)``, two int64 tensors ``(B, L)`` of exactly ``L`` tokens: ``targets[b, t]``
is the token a causal language model must predict after reading ``inputs[b, : t + 1]``, or :data:`IGNORE`
(-100, ``cross_entropy``'s ``ignore_index``) where nothing is asked.  Each answer is a function of the
sequence (``task.solve(inputs)`` recomputes the targets from the inputs alone), and a seeded
``torch.Generator`` gives the same batch every time.  Token ids 0, 1, 2 are pad, BOS and EOS (the models'
defaults); task tokens start at 3.

Tasks:

* :class:`MQAR`: multi-query associative recall as in Zoology (Arora et al. 2023; checked against its
  ``multiquery_ar`` generator): ``P`` key–value pairs ``k₁ v₁ … k_P v_P`` first (keys from the lower half
  of the task vocabulary, values from the upper half, both drawn without replacement), then a region where
  every key is queried once, at even offsets ``2g`` with the gaps ``g`` drawn without replacement from
  Zoology's power law ``p(g) ∝ g^(a−1)``, ``a = 0.01`` (about ``1/g``: a gap is roughly as likely in 1–10 as in
  10–100); the target at a query is its value, which is not repeated after the query.  Differences:
  the number of pairs grows with the length, ``P = L // kv_ratio`` (Zoology fixes ``P`` per data set and
  sweeps 64–512 tokens with 4–64 pairs; ASEntmax's multi-token variant also grows the pairs with the
  length); the filler between queries is drawn from the *value* half only (Zoology draws it from the whole
  vocabulary, where a key re-appearing as filler is rare at its 8k vocabulary and ≤ 512 tokens, but would
  be common at 4096 tokens and make the first occurrence ambiguous): every key occurs exactly twice, in its
  pair and as its query; and the vocabulary needs only ``num_keys ≥ P`` (Zoology asks for more tokens than
  the sequence length).
* :class:`Copy`: ``BOS x₁ … x_n SEP x₁ … x_n`` with ``n = L/2 − 1`` symbols drawn uniformly (with
  repetition) from a small alphabet, the copying task of the length-generalisation literature (e.g. the
  ASEntmax paper's: random tokens from a 32-symbol vocabulary, as here); targets are the copy and a final
  EOS.  Exact match is per sequence: every copied token right (under teacher forcing, which is the same as
  greedy decoding getting the whole copy right).
* :class:`FlipFlop`: flip-flop language modelling (Liu et al. 2023, "Exposing attention glitches with
  flip-flop language modeling"): ``L/2`` pairs ``(instruction, bit)``, instructions write ``w`` / read ``r`` /
  ignore ``i`` with probabilities ``(1 − p_i)/2, (1 − p_i)/2, p_i`` (``FFL(p_i)``, default ``p_i = 0.8``),
  the first one a write; the bit after a read must equal the bit of the latest write, every other bit is
  random.  Targets are the bits after reads (the only deterministic tokens, on which Liu et al. evaluate).

``task.unit`` says what one exact match is: ``"answer"`` (each query / read separately, as Zoology and
Liu et al. report) or ``"sequence"`` (copy).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["IGNORE", "SyntheticTask", "MQAR", "Copy", "FlipFlop", "TASKS", "make_task"]

#: target of positions without a question (``torch.nn.functional.cross_entropy``'s default ``ignore_index``)
IGNORE = -100
PAD, BOS, EOS = 0, 1, 2
FIRST = 3  # first task token id


def _check_length(length: int, minimum: int, even: bool, name: str) -> None:
    if isinstance(length, bool) or not isinstance(length, int):
        raise TypeError(f"{name}: length must be an int, got {type(length).__name__}")
    if length < minimum or (even and length % 2):
        kind = "an even int" if even else "an int"
        raise ValueError(f"{name}: length must be {kind} >= {minimum}, got {length}")


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise ValueError(f"batch must be a positive int, got {batch!r}")


class SyntheticTask:
    """Base class: ``sample(batch, length, generator) → (inputs, targets)`` and ``solve(inputs) → targets``."""

    name: str = ""
    unit: str = "answer"
    vocab_size: int = 0
    min_length: int = 2

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def solve(self, inputs: Tensor) -> Tensor:
        """The targets of ``inputs`` ``(B, L)``, recomputed from the tokens alone (slow, for checks)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _without_replacement(batch: int, population: int, k: int, generator) -> Tensor:
    """``(B, k)`` distinct indices in ``[0, population)`` per row, uniformly."""
    return torch.rand(batch, population, generator=generator).argsort(dim=1)[:, :k]


class MQAR(SyntheticTask):
    """Multi-query associative recall (Zoology's layout; see the module docstring for the two differences).

    Args:
        num_keys: size of the key (and of the value) vocabulary; must be at least the number of pairs of the
            longest sequence asked for (``L // kv_ratio``).  Default 512 (enough for 4096 tokens).
        kv_ratio: one pair per ``kv_ratio`` tokens (default 8, i.e. 8 pairs at 64 tokens; ≥ 4).
        power_a: Zoology's power-law exponent for where the queries go (0.01; 1 = uniform).
    """

    name = "mqar"
    unit = "answer"

    def __init__(self, num_keys: int = 512, kv_ratio: int = 8, power_a: float = 0.01):
        if isinstance(num_keys, bool) or not isinstance(num_keys, int) or num_keys < 1:
            raise ValueError(f"num_keys must be a positive int, got {num_keys!r}")
        if isinstance(kv_ratio, bool) or not isinstance(kv_ratio, int) or kv_ratio < 4:
            raise ValueError(f"kv_ratio must be an int >= 4 (pairs and queries must fit), got {kv_ratio!r}")
        if not (isinstance(power_a, (int, float)) and 0 < power_a <= 1):
            raise ValueError(f"power_a must be in (0, 1], got {power_a!r}")
        self.num_keys = num_keys
        self.kv_ratio = kv_ratio
        self.power_a = float(power_a)
        self.key0 = FIRST
        self.value0 = FIRST + num_keys
        self.vocab_size = FIRST + 2 * num_keys
        self.min_length = kv_ratio  # one pair, one query

    def num_pairs(self, length: int) -> int:
        return max(1, length // self.kv_ratio)

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_batch(batch)
        _check_length(length, self.min_length, True, "mqar")
        p = self.num_pairs(length)
        if p > self.num_keys:
            raise ValueError(
                f"mqar: {length} tokens hold {p} key-value pairs but num_keys={self.num_keys}; "
                f"use num_keys >= {p} (or a larger kv_ratio)"
            )
        ctx = 2 * p
        space = (length - ctx) // 2  # query slots at even offsets of the query region
        keys = self.key0 + _without_replacement(batch, self.num_keys, p, generator)  # (B, P)
        values = self.value0 + _without_replacement(batch, self.num_keys, p, generator)  # (B, P)
        weights = self.power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (self.power_a - 1)
        gaps = torch.multinomial(weights.expand(batch, space), p, replacement=False, generator=generator)  # (B, P)
        # filler: values only, so that every key occurs exactly twice (its pair, its query)
        inputs = self.value0 + torch.randint(self.num_keys, (batch, length), generator=generator)
        inputs[:, 0:ctx:2] = keys
        inputs[:, 1:ctx:2] = values
        qpos = ctx + 2 * gaps  # (B, P) positions of the queries
        inputs.scatter_(1, qpos, keys)
        targets = torch.full((batch, length), IGNORE, dtype=torch.long)
        targets.scatter_(1, qpos, values)
        return inputs, targets

    def solve(self, inputs: Tensor) -> Tensor:
        out = torch.full_like(inputs, IGNORE)
        for b, row in enumerate(inputs.tolist()):
            seen: dict[int, int] = {}
            for t, tok in enumerate(row):
                if self.key0 <= tok < self.value0:
                    if tok in seen:  # second occurrence: a query; its answer follows the first occurrence
                        out[b, t] = row[seen[tok] + 1]
                    else:
                        seen[tok] = t
        return out

    def __repr__(self) -> str:
        return f"MQAR(num_keys={self.num_keys}, kv_ratio={self.kv_ratio}, power_a={self.power_a})"


class Copy(SyntheticTask):
    """``BOS x₁ … x_n SEP x₁ … x_n`` (``n = L/2 − 1``); targets: the copy, then EOS.

    Args:
        num_symbols: alphabet size (default 32).
    """

    name = "copy"
    unit = "sequence"

    def __init__(self, num_symbols: int = 32):
        if isinstance(num_symbols, bool) or not isinstance(num_symbols, int) or num_symbols < 2:
            raise ValueError(f"num_symbols must be an int >= 2, got {num_symbols!r}")
        self.num_symbols = num_symbols
        self.sep = FIRST
        self.sym0 = FIRST + 1
        self.vocab_size = self.sym0 + num_symbols
        self.min_length = 4

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_batch(batch)
        _check_length(length, self.min_length, True, "copy")
        n = length // 2 - 1
        x = self.sym0 + torch.randint(self.num_symbols, (batch, n), generator=generator)  # (B, n)
        col = torch.full((batch, 1), BOS, dtype=torch.long)
        inputs = torch.cat([col, x, torch.full_like(col, self.sep), x], dim=1)  # (B, 2n + 2 = L)
        targets = torch.full((batch, length), IGNORE, dtype=torch.long)
        targets[:, n + 1 : 2 * n + 1] = x  # from SEP on, predict the next symbol of the copy
        targets[:, 2 * n + 1] = EOS
        return inputs, targets

    def solve(self, inputs: Tensor) -> Tensor:
        out = torch.full_like(inputs, IGNORE)
        for b, row in enumerate(inputs.tolist()):
            s = row.index(self.sep)
            source = row[1:s]
            for j, tok in enumerate([*source, EOS]):
                out[b, s + j] = tok
        return out

    def __repr__(self) -> str:
        return f"Copy(num_symbols={self.num_symbols})"


class FlipFlop(SyntheticTask):
    """Flip-flop language modelling, ``FFL(p_ignore)`` (Liu et al. 2023); targets: the bits after reads.

    Args:
        p_ignore: probability of the ignore instruction; write and read share the rest equally (default 0.8).
    """

    name = "flipflop"
    unit = "answer"

    def __init__(self, p_ignore: float = 0.8):
        if not (isinstance(p_ignore, (int, float)) and 0 <= p_ignore < 1):
            raise ValueError(f"p_ignore must be in [0, 1), got {p_ignore!r}")
        self.p_ignore = float(p_ignore)
        self.w, self.r, self.i = FIRST, FIRST + 1, FIRST + 2
        self.bit0 = FIRST + 3  # tokens for bits 0 and 1: bit0, bit0 + 1
        self.vocab_size = FIRST + 5
        self.min_length = 4

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _check_batch(batch)
        _check_length(length, self.min_length, True, "flipflop")
        n = length // 2
        u = torch.rand(batch, n, generator=generator)
        pw = (1 - self.p_ignore) / 2
        instr = torch.where(u < pw, self.w, torch.where(u < 2 * pw, self.r, self.i))  # (B, n)
        instr[:, 0] = self.w
        bits = torch.randint(2, (batch, n), generator=generator)
        # the latest write at or before each pair: running max of the write positions
        idx = torch.arange(n).expand(batch, n)
        last_w = torch.where(instr == self.w, idx, torch.zeros_like(idx)).cummax(dim=1).values  # (B, n)
        is_read = instr == self.r
        bits = torch.where(is_read, bits.gather(1, last_w), bits)
        inputs = torch.stack([instr, self.bit0 + bits], dim=2).reshape(batch, length)  # (B, L): instr, bit, …
        targets = torch.full((batch, length), IGNORE, dtype=torch.long)
        targets[:, 0::2] = torch.where(is_read, self.bit0 + bits, IGNORE)  # at a read, predict its bit
        return inputs, targets

    def solve(self, inputs: Tensor) -> Tensor:
        out = torch.full_like(inputs, IGNORE)
        for b, row in enumerate(inputs.tolist()):
            memory = None
            for t in range(0, len(row), 2):
                if row[t] == self.w:
                    memory = row[t + 1]
                elif row[t] == self.r:
                    out[b, t] = memory
        return out

    def __repr__(self) -> str:
        return f"FlipFlop(p_ignore={self.p_ignore})"


TASKS = {"mqar": MQAR, "copy": Copy, "flipflop": FlipFlop}


def make_task(name: str, **kwargs) -> SyntheticTask:
    """The task called ``name`` (``"mqar"``, ``"copy"``, ``"flipflop"``) with its keyword options."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown synthetic task {name!r}; available: {sorted(TASKS)}") from None
    return cls(**kwargs)
