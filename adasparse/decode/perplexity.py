"""Perplexity of a decoder-only language model on text: token-normalised and byte-normalised.

What is counted, over the non-blank lines of the text (each stripped of surrounding space, as the readers of
:mod:`adasparse.data.text` give them):

* **NLL**: the sum, in nats, of ``−log p(id | ids before it)`` over every id of every line's sequence ``bos,
  pieces..., eos`` except ``bos`` — the pieces and the ``eos`` that ends the line. A line longer than the window of
  ``max_len`` inputs is scored in windows that overlap by one id (:func:`~adasparse.data.text.split_sequence`):
  every id is still predicted once, each window seeing only its own ids (so a split line costs more than it would
  in one window). Log-probabilities are computed in float32 (float64 for a float64 model).
* **tokens**: the number of predicted ids, ``Σ (pieces + 1)``; ``token_perplexity = exp(NLL / tokens)``.
* **bytes**: ``Σ (UTF-8 bytes of the line + 1)``, the ``+ 1`` being the newline that the ``eos`` prediction stands
  for (as enwik8/text8 count newlines); ``bits_per_byte = NLL / ln 2 / bytes`` and ``byte_perplexity =
  exp(NLL / bytes) = 2 ** bits_per_byte``. Bytes are those of the text, not of the tokenizer's normalised form, so
  byte-normalised figures compare across tokenizers and vocabulary sizes; token perplexity does not.

A tokenizer that maps unseen characters to ``<unk>`` scores ``<unk>`` as one id, which makes both figures
optimistic on text with such characters (``byte_fallback=True`` avoids it for SentencePiece).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data.batching import inference_batches, warn_unknown
from ..data.text import lm_sequences, lm_tokenizer

__all__ = ["PerplexityScores", "score_text"]


@dataclass(frozen=True)
class PerplexityScores:
    """Sums over a text (see the module docstring) and the perplexities they give."""

    nll: float
    n_tokens: int
    n_bytes: int
    n_lines: int
    n_split: int = 0

    @property
    def nll_per_token(self) -> float:
        return self.nll / self.n_tokens if self.n_tokens else float("nan")

    @property
    def token_perplexity(self) -> float:
        """``exp(NLL / tokens)``."""
        return math.exp(self.nll_per_token) if self.n_tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        """``NLL / ln 2 / bytes``."""
        return self.nll / math.log(2) / self.n_bytes if self.n_bytes else float("nan")

    @property
    def byte_perplexity(self) -> float:
        """``exp(NLL / bytes)`` (``2 ** bits_per_byte``)."""
        return math.exp(self.nll / self.n_bytes) if self.n_bytes else float("nan")

    def as_dict(self) -> dict[str, float | int]:
        return {
            "nll": self.nll,
            "n_tokens": self.n_tokens,
            "n_bytes": self.n_bytes,
            "n_lines": self.n_lines,
            "n_split": self.n_split,
            "token_perplexity": self.token_perplexity,
            "bits_per_byte": self.bits_per_byte,
            "byte_perplexity": self.byte_perplexity,
        }

    def summary(self) -> str:
        """One line for the user."""
        split = f", {self.n_split} split into windows" if self.n_split else ""
        return (
            f"perplexity {self.token_perplexity:.3f} per token, {self.bits_per_byte:.4f} bits per byte "
            f"(byte perplexity {self.byte_perplexity:.4f}); {self.n_lines} lines{split}, {self.n_tokens} tokens, "
            f"{self.n_bytes} bytes"
        )


@torch.no_grad()
def score_text(
    model: Any,
    tokenizer: Any,
    lines: Sequence[str],
    *,
    max_len: int | None = None,
    max_tokens: int = 8192,
    device: torch.device | str | None = None,
) -> PerplexityScores:
    """NLL, token and byte counts of ``lines`` under ``model`` (see the module docstring for what is counted).

    Args:
        model: a decoder-only model with ``features(tokens, pad_mask)`` and ``output`` (the LM head), in eval mode.
        tokenizer: a :class:`~adasparse.data.tokenizer.Tokenizer` or a joint ``TokenizerPair``.
        lines: the text, one document or sentence per line; blank lines are skipped.
        max_len: the window, in model inputs (default: ``model.config.max_len``).
        max_tokens: padded inputs per batch (a longer window gets a batch of its own).
        device: where to run (default: the model's device).
    """
    tok = lm_tokenizer(tokenizer)
    if max_len is None:
        max_len = model.config.max_len
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    lines = [line.strip() for line in lines]
    lines = [line for line in lines if line]
    seqs, _, n_split = lm_sequences(tok, lines, max_len, long="split")
    warn_unknown(seqs, tok.unk_id, "the text")
    n_bytes = sum(len(line.encode("utf-8")) + 1 for line in lines)
    nll = torch.zeros((), dtype=torch.float64)
    n_tokens = 0
    inputs = [s[:-1] for s in seqs]
    for idx, inp, mask in inference_batches(inputs, max_tokens, pad_id=tok.pad_id):
        targets = torch.zeros_like(inp)  # (B, T)
        for row, j in enumerate(idx):
            targets[row, : len(seqs[j]) - 1] = torch.as_tensor(seqs[j][1:], dtype=torch.long)
        inp, mask, targets = inp.to(device), mask.to(device), targets.to(device)
        h = model.features(inp, mask)[mask]  # (N, E): only the scored positions go through the LM head
        logits = model.output(h)  # (N, V)
        logp = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(dim=-1)
        nll -= logp.gather(-1, targets[mask][:, None]).sum().double().cpu()
        n_tokens += int(mask.sum())
    return PerplexityScores(float(nll), n_tokens, n_bytes, len(lines), n_split)
