import math

import numpy as np
import pytest
import sacrebleu

from adasparse.evaluation import (
    bleu,
    chrf,
    edit_distance,
    phone_error_rate,
    score_g2p,
    score_translation,
    token_error_rate,
    word_error_rate,
)


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "abc", 0), ("flaw", "lawn", 2), ("ab", "ba", 2)],
)
def test_edit_distance_hand_values(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_g2p_error_rates_hand_computed():
    refs = ["F OW N", "T AH M EY T OW", "K AE T", "D AO G"]
    hyps = ["F OW N", "T AH M AA T OW", "K AE T S", "D G"]
    # phone errors: 0 + 1 substitution + 1 insertion + 1 deletion = 3 over 3 + 6 + 3 + 3 = 15 reference phones
    assert phone_error_rate(hyps, refs) == pytest.approx(100 * 3 / 15)
    # words with any error: 3 of 4
    assert word_error_rate(hyps, refs) == pytest.approx(75.0)
    s = score_g2p(hyps, refs)
    assert (s.wer, s.per) == (pytest.approx(75.0), pytest.approx(20.0))
    assert "WER 75.00%" in str(s)


def test_g2p_standard_errors_hand_values_and_bootstrap():
    refs = ["F OW N", "T AH M EY T OW", "K AE T", "D AO G"]
    hyps = ["F OW N", "T AH M AA T OW", "K AE T S", "D G"]
    s = score_g2p(hyps, refs)
    # WER: 3 of 4 words wrong, binomial SE sqrt(.75 · .25 / 4); PER: errors (0, 1, 1, 1), lengths (3, 6, 3, 3),
    # R = 0.2, residuals e − R·m = (−0.6, −0.2, 0.4, 0.4), Σ² = 0.72, SE = sqrt(0.72 / 12) / 3.75
    assert s.n_words == 4
    assert s.wer_se == pytest.approx(100 * math.sqrt(0.75 * 0.25 / 4))
    assert s.per_se == pytest.approx(100 * math.sqrt(0.72 / 12) / 3.75)
    assert "± 21.65" in str(s) and "over 4 words" in str(s)
    # against an independent estimate: the bootstrap over words of a larger synthetic test set
    rng = np.random.default_rng(0)
    refs, hyps = [], []
    for _ in range(400):
        ref = [f"P{i}" for i in rng.integers(0, 30, size=rng.integers(2, 9))]
        hyp = [t if rng.random() > 0.12 else "X" for t in ref]
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    s = score_g2p(hyps, refs)
    errs = np.array([edit_distance(h.split(), r.split()) for h, r in zip(hyps, refs)])
    lens = np.array([len(r.split()) for r in refs])
    wrong = np.array([h != r for h, r in zip(hyps, refs)], dtype=float)
    idx = rng.integers(0, len(refs), size=(4000, len(refs)))
    boot_per = 100 * errs[idx].sum(1) / lens[idx].sum(1)
    boot_wer = 100 * wrong[idx].mean(1)
    assert s.per_se == pytest.approx(boot_per.std(), rel=0.08)
    assert s.wer_se == pytest.approx(boot_wer.std(), rel=0.08)


def test_token_error_rate_is_asr_wer():
    assert token_error_rate(["the cat sat on mat"], ["the cat sat on the mat"]) == pytest.approx(100 / 6)
    assert token_error_rate(["a b", "c"], ["a b", "c"]) == 0.0


def test_bleu_and_chrf_match_sacrebleu():
    refs = ["The cat is on the mat.", "There is a dog in the garden, isn't there?", "A man rides a bike."]
    hyps = ["The cat sits on the mat.", "A dog is in the garden, isn't it?", "A man rides a bicycle."]
    b, b_sig = bleu(hyps, refs)
    c, c_sig = chrf(hyps, refs)
    assert b == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert c == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert b_sig.startswith("nrefs:1|case:mixed") and "tok:13a" in b_sig and f"version:{sacrebleu.__version__}" in b_sig
    assert "nc:6" in c_sig
    s = score_translation(refs, refs)
    assert s.bleu == pytest.approx(100.0) and s.chrf == pytest.approx(100.0)
    assert 0 < b < 100


def test_misaligned_inputs():
    with pytest.raises(ValueError, match="2 hypotheses vs 1 references"):
        word_error_rate(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no references"):
        bleu([], [])
