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

**Comparing two systems on the same test set** is paired: each test item is scored by both, so the item-to-item
variation that both share cancels and a difference far smaller than either score's standard error can be
significant. :func:`compare_g2p` gives the WER and PER differences with paired standard errors (the standard error
of the mean per-word difference; for PER the same linearisation as above applied to ``e_i − e'_i``) and two-sided
normal p-values; each side may be several runs (seeds), averaged word by word. :func:`compare_translation` runs
sacreBLEU's paired bootstrap resampling (its ``--paired-bs``: 1,000 resamples, seed 12345, two-sided p-value) for
BLEU and chrF.
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
    "G2PComparison",
    "TranslationComparison",
    "compare_g2p",
    "compare_translation",
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


def _ratio_se(values: Sequence[float], lengths: Sequence[int], ratio: float) -> float:
    """Standard error of the ratio ``Σ values / Σ lengths`` (= ``ratio``) over items, by linearisation (module
    docstring); NaN for fewer than two items."""
    n = len(lengths)
    if n < 2:
        return float("nan")
    resid = sum((x - ratio * m) ** 2 for x, m in zip(values, lengths))
    return math.sqrt(resid / (n * (n - 1))) / (sum(lengths) / n)


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
    per_se = _ratio_se(errors, lengths, ratio)
    return G2PScores(100.0 * p, 100.0 * ratio, 100.0 * wer_se, 100.0 * per_se, n)


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


@dataclass(frozen=True)
class G2PComparison:
    """``system − baseline`` in WER and PER (percentage points), paired over the same words (module docstring).

    ``*_p`` are two-sided p-values of a zero difference (normal approximation; NaN when the difference has no
    spread, e.g. two identical systems). ``n_runs`` / ``n_baseline_runs``: how many runs each side averages.
    """

    wer: float
    baseline_wer: float
    wer_diff: float
    wer_diff_se: float
    wer_p: float
    per: float
    baseline_per: float
    per_diff: float
    per_diff_se: float
    per_p: float
    n_words: int
    n_runs: int = 1
    n_baseline_runs: int = 1

    def __str__(self) -> str:
        runs = "" if self.n_runs == self.n_baseline_runs == 1 else f", {self.n_runs} vs {self.n_baseline_runs} runs"
        return (
            f"WER {self.wer:.2f}% vs {self.baseline_wer:.2f}%: {self.wer_diff:+.2f} ± {self.wer_diff_se:.2f} "
            f"(p = {self.wer_p:.3g})  PER {self.per:.2f}% vs {self.baseline_per:.2f}%: {self.per_diff:+.2f} ± "
            f"{self.per_diff_se:.2f} (p = {self.per_p:.3g})  (system − baseline, ± one paired standard error over "
            f"{self.n_words} words{runs})"
        )


def _runs(name: str, runs: Sequence[Sequence[str]], refs: Sequence[str]) -> None:
    if isinstance(runs, str) or not runs or isinstance(runs[0], str):
        raise TypeError(
            f"{name} must be a list of runs, each a list of output lines (one run: [lines]), got "
            f"{type(runs).__name__}{' of strings' if runs and not isinstance(runs, str) else ''}"
        )
    for i, run in enumerate(runs):
        if len(run) != len(refs):
            raise ValueError(f"{name}[{i}] has {len(run)} lines vs {len(refs)} references; they must be aligned")


def compare_g2p(hyps: Sequence[Sequence[str]], baseline: Sequence[Sequence[str]], refs: Sequence[str]) -> G2PComparison:
    """Paired WER/PER difference of grapheme-to-phoneme outputs ``hyps`` against ``baseline`` on ``refs``.

    ``hyps`` and ``baseline`` are lists of runs (e.g. training seeds; ``[lines]`` for one run), each aligned
    line by line with ``refs``. A side's per-word errors are averaged over its runs, so a side's WER is the mean
    of its runs' WERs and its PER their pooled PER; the standard errors are over words (module docstring), so
    they do not include the spread between seeds, which the caller should report beside them.
    """
    if not refs:
        raise ValueError("no references to score against")
    _runs("hyps", hyps, refs)
    _runs("baseline", baseline, refs)
    n = len(refs)
    ref_toks = [r.split() for r in refs]
    lengths = [len(r) for r in ref_toks]
    total = sum(lengths)
    if total == 0:
        raise ValueError("the references hold no tokens")

    def per_word(runs: Sequence[Sequence[str]]) -> tuple[list[float], list[float]]:
        wrong = [0.0] * n
        edits = [0.0] * n
        for run in runs:
            for i, (h, r) in enumerate(zip(run, ref_toks)):
                ht = h.split()
                wrong[i] += ht != r
                edits[i] += edit_distance(ht, r)
        k = len(runs)
        return [w / k for w in wrong], [e / k for e in edits]

    wa, ea = per_word(hyps)
    wb, eb = per_word(baseline)
    d = [a - b for a, b in zip(wa, wb)]
    wer_diff = sum(d) / n
    wer_se = math.sqrt(sum((x - wer_diff) ** 2 for x in d) / (n * (n - 1))) if n > 1 else float("nan")
    de = [a - b for a, b in zip(ea, eb)]
    per_diff = sum(de) / total
    per_se = _ratio_se(de, lengths, per_diff)

    def p(diff: float, se: float) -> float:
        return _two_sided_p(diff / se) if se > 0 else float("nan")

    return G2PComparison(
        wer=100.0 * sum(wa) / n,
        baseline_wer=100.0 * sum(wb) / n,
        wer_diff=100.0 * wer_diff,
        wer_diff_se=100.0 * wer_se,
        wer_p=p(wer_diff, wer_se),
        per=100.0 * sum(ea) / total,
        baseline_per=100.0 * sum(eb) / total,
        per_diff=100.0 * per_diff,
        per_diff_se=100.0 * per_se,
        per_p=p(per_diff, per_se),
        n_words=n,
        n_runs=len(hyps),
        n_baseline_runs=len(baseline),
    )


@dataclass(frozen=True)
class TranslationComparison:
    """sacreBLEU's paired bootstrap of a system against a baseline: scores, two-sided p-values, 95% half-widths.

    ``*_ci``: half the width of the system's 95% confidence interval from the resamples (sacreBLEU's ``±``);
    ``signatures``: sacreBLEU's signature of each metric, which names the test, resamples and seed.
    """

    bleu: float
    baseline_bleu: float
    bleu_p: float
    bleu_ci: float
    chrf: float
    baseline_chrf: float
    chrf_p: float
    chrf_ci: float
    signatures: dict

    def __str__(self) -> str:
        return (
            f"BLEU {self.bleu:.2f} (± {self.bleu_ci:.2f}) vs {self.baseline_bleu:.2f}: "
            f"{self.bleu - self.baseline_bleu:+.2f} (p = {self.bleu_p:.3g})  chrF {self.chrf:.2f} "
            f"(± {self.chrf_ci:.2f}) vs {self.baseline_chrf:.2f}: {self.chrf - self.baseline_chrf:+.2f} "
            f"(p = {self.chrf_p:.3g})  (sacreBLEU paired bootstrap; system − baseline; {self.signatures['BLEU']})"
        )


def compare_translation(
    hyps: Sequence[str], baseline: Sequence[str], refs: Sequence[str], n_samples: int = 1000
) -> TranslationComparison:
    """BLEU and chrF of ``hyps`` against ``baseline`` on ``refs`` with sacreBLEU's paired bootstrap resampling.

    The same test as ``sacrebleu REF -i BASELINE HYPS --paired-bs``: ``n_samples`` resamples of the test
    sentences (seed 12345 unless ``SACREBLEU_SEED`` says otherwise), a two-sided p-value of the observed
    difference, and the system's 95% confidence interval. One departure: for two identical outputs sacreBLEU's
    test returns p = 1/(n_samples + 1) (no resample's centred difference exceeds the observed zero); here their
    p-values are 1, since no difference is no evidence of one.
    """
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    _check(hyps, refs)
    _check(baseline, refs)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    metrics = {"BLEU": BLEU(references=[list(refs)]), "chrF": CHRF(references=[list(refs)])}
    test = PairedTest(
        [("baseline", list(baseline)), ("system", list(hyps))], metrics, references=None, test_type="bs",
        n_samples=n_samples,
    )  # fmt: skip
    signatures, scores = test()
    bleu_key, chrf_key = (k for k in scores if k != "System")  # sacreBLEU renames chrF to its variant, chrF2
    (bleu_base, bleu_sys), (chrf_base, chrf_sys) = scores[bleu_key], scores[chrf_key]
    identical = list(hyps) == list(baseline)
    return TranslationComparison(
        bleu=float(bleu_sys.score),
        baseline_bleu=float(bleu_base.score),
        bleu_p=1.0 if identical else float(bleu_sys.p_value),
        bleu_ci=float(bleu_sys.ci),
        chrf=float(chrf_sys.score),
        baseline_chrf=float(chrf_base.score),
        chrf_p=1.0 if identical else float(chrf_sys.p_value),
        chrf_ci=float(chrf_sys.ci),
        signatures={"BLEU": str(signatures[bleu_key]), "chrF": str(signatures[chrf_key])},
    )
