"""Scores: sacreBLEU BLEU and chrF for translation; word and phone error rates for grapheme-to-phoneme.

* BLEU and chrF are computed by sacreBLEU on **detokenized** text with its default settings (BLEU: ``13a``
  tokenization, cased, exponential smoothing; chrF: character 6-grams, β = 2), and returned with sacreBLEU's
  signature string so a score can be reproduced.
* :func:`token_error_rate`: Levenshtein distance between whitespace-separated token sequences, summed over the
  corpus and divided by the total number of reference tokens (the ASR word error rate when tokens are words).
* For grapheme-to-phoneme, one line = one word and tokens = phonemes: the **phone error rate** (PER) is
  :func:`token_error_rate` over the phonemes, and the **word error rate** (WER) is the share of words whose
  predicted pronunciation is not exactly the reference (the usual G2P definition, :func:`word_error_rate`).
All rates are percentages (0–100), like BLEU and chrF.

**Standard errors** (:class:`G2PScores`), over words taken as independent draws from the test set's
distribution: for WER, a share of words, the binomial ``√(p(1 − p)/n)``; for PER, a ratio of sums (errors over
reference phones), the delta-method (linearisation) estimate ``√(Σ (e_i − R·m_i)² / (n(n − 1))) / m̄`` with
``e_i`` the edit distance and ``m_i`` the reference length of word ``i``, ``R`` the PER as a fraction and ``m̄``
the mean reference length — what a bootstrap over words approaches (tested against one). They measure how much a
score would move on another test set of the same size, not how much it moves between training seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "TranslationScores",
    "G2PScores",
    "edit_distance",
    "token_error_rate",
    "word_error_rate",
    "phone_error_rate",
    "bleu",
    "chrf",
    "score_translation",
    "score_g2p",
]


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses vs {len(refs)} references; they must be aligned line by line")
    if not refs:
        raise ValueError("no references to score against")


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (unit-cost insertions, deletions, substitutions) between two sequences."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i]
        for j, y in enumerate(b, start=1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def token_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """100 · Σ edit_distance(hyp tokens, ref tokens) / Σ |ref tokens| (tokens split on whitespace)."""
    _check(hyps, refs)
    errors = sum(edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs))
    total = sum(len(r.split()) for r in refs)
    if total == 0:
        raise ValueError("the references hold no tokens")
    return 100.0 * errors / total


def phone_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """G2P phone error rate: :func:`token_error_rate` over space-separated phonemes."""
    return token_error_rate(hyps, refs)


def word_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """G2P word error rate: 100 · share of lines (words) whose phoneme sequence differs from the reference."""
    _check(hyps, refs)
    return 100.0 * sum(h.split() != r.split() for h, r in zip(hyps, refs)) / len(refs)


@dataclass(frozen=True)
class TranslationScores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str

    def __str__(self) -> str:
        return f"BLEU {self.bleu:.2f} ({self.bleu_signature})  chrF {self.chrf:.2f} ({self.chrf_signature})"


@dataclass(frozen=True)
class G2PScores:
    """WER and PER (percent) with their standard errors over words (module docstring) and the number of words."""

    wer: float
    per: float
    wer_se: float = float("nan")
    per_se: float = float("nan")
    n_words: int = 0

    def __str__(self) -> str:
        if self.n_words:
            return (
                f"WER {self.wer:.2f}% ± {self.wer_se:.2f}  PER {self.per:.2f}% ± {self.per_se:.2f}  "
                f"(± one standard error over {self.n_words} words)"
            )
        return f"WER {self.wer:.2f}%  PER {self.per:.2f}%"


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> tuple[float, str]:
    """sacreBLEU corpus BLEU of detokenized ``hyps`` against one reference each, and its signature."""
    from sacrebleu.metrics import BLEU

    _check(hyps, refs)
    metric = BLEU()
    return metric.corpus_score(list(hyps), [list(refs)]).score, str(metric.get_signature())


def chrf(hyps: Sequence[str], refs: Sequence[str]) -> tuple[float, str]:
    """sacreBLEU corpus chrF of detokenized ``hyps`` against one reference each, and its signature."""
    from sacrebleu.metrics import CHRF

    _check(hyps, refs)
    metric = CHRF()
    return metric.corpus_score(list(hyps), [list(refs)]).score, str(metric.get_signature())


def score_translation(hyps: Sequence[str], refs: Sequence[str]) -> TranslationScores:
    """BLEU and chrF with their signatures."""
    b, b_sig = bleu(hyps, refs)
    c, c_sig = chrf(hyps, refs)
    return TranslationScores(b, c, b_sig, c_sig)


def score_g2p(hyps: Sequence[str], refs: Sequence[str]) -> G2PScores:
    """Word and phone error rates (percent) of grapheme-to-phoneme output, with their standard errors."""
    _check(hyps, refs)
    n = len(refs)
    wrong = [h.split() != r.split() for h, r in zip(hyps, refs)]
    errors = [edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs)]
    lengths = [len(r.split()) for r in refs]
    total = sum(lengths)
    if total == 0:
        raise ValueError("the references hold no tokens")
    p = sum(wrong) / n
    ratio = sum(errors) / total
    wer_se = math.sqrt(p * (1 - p) / n) if n > 1 else float("nan")
    per_se = float("nan")
    if n > 1:
        resid = sum((e - ratio * m) ** 2 for e, m in zip(errors, lengths))
        per_se = math.sqrt(resid / (n * (n - 1))) / (total / n)
    return G2PScores(100.0 * p, 100.0 * ratio, 100.0 * wer_se, 100.0 * per_se, n)
