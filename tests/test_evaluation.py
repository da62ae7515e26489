import math

import numpy as np
import pytest
import sacrebleu

from adasparse.evaluation import (
    bleu,
    chrf,
    compare_g2p,
    compare_translation,
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


def _synthetic_g2p(rng, n, p_a, p_b, shared=0.5):
    """Two systems whose errors are correlated word by word (hard words are hard for both), as real ones are."""
    refs, a, b = [], [], []
    for _ in range(n):
        ref = [f"P{i}" for i in rng.integers(0, 30, size=rng.integers(2, 9))]
        hard = rng.random() < shared
        a.append(" ".join(t if rng.random() > (p_a * (1.8 if hard else 0.2)) else "X" for t in ref))
        b.append(" ".join(t if rng.random() > (p_b * (1.8 if hard else 0.2)) else "X" for t in ref))
        refs.append(" ".join(ref))
    return refs, a, b


def test_compare_g2p_hand_values():
    refs = ["F OW N", "T AH M EY T OW", "K AE T", "D AO G"]
    hyps = ["F OW N", "T AH M AA T OW", "K AE T S", "D G"]  # wrong words (0, 1, 1, 1), edits (0, 1, 1, 1)
    base = ["F OW", "T AH M EY T OW", "K AE T S", "D AO G"]  # wrong words (1, 0, 1, 0), edits (1, 0, 1, 0)
    c = compare_g2p([hyps], [base], refs)
    # per-word WER differences d = (−1, 1, 0, 1): mean 0.25, Σ(d − 0.25)² = 2.75, SE = sqrt(2.75 / 12)
    assert (c.wer, c.baseline_wer, c.wer_diff) == (pytest.approx(75.0), pytest.approx(50.0), pytest.approx(25.0))
    assert c.wer_diff_se == pytest.approx(100 * math.sqrt(2.75 / 12))
    # PER: edit differences (−1, 1, 0, 1) over 15 phones, Δ = 1/15; residuals x − Δ·m with m = (3, 6, 3, 3)
    delta = 1 / 15
    resid = sum((x - delta * m) ** 2 for x, m in zip((-1, 1, 0, 1), (3, 6, 3, 3)))
    assert c.per_diff == pytest.approx(100 * delta)
    assert c.per_diff_se == pytest.approx(100 * math.sqrt(resid / 12) / 3.75)
    assert c.wer_p == pytest.approx(math.erfc(abs(c.wer_diff / c.wer_diff_se) / math.sqrt(2)))
    assert "+25.00" in str(c) and "paired standard error over 4 words" in str(c)
    same = compare_g2p([hyps], [hyps], refs)
    assert same.wer_diff == same.per_diff == 0.0 and math.isnan(same.wer_p)


def test_compare_g2p_agrees_with_a_paired_bootstrap_and_is_tighter_than_unpaired():
    rng = np.random.default_rng(1)
    refs, a, b = _synthetic_g2p(rng, 600, 0.10, 0.12)
    c = compare_g2p([a], [b], refs)
    sa, sb = score_g2p(a, refs), score_g2p(b, refs)
    assert c.wer == pytest.approx(sa.wer) and c.baseline_wer == pytest.approx(sb.wer)
    assert c.per == pytest.approx(sa.per) and c.baseline_per == pytest.approx(sb.per)
    errs = {
        k: np.array([edit_distance(h.split(), r.split()) for h, r in zip(v, refs)]) for k, v in (("a", a), ("b", b))
    }
    wrong = {k: np.array([h != r for h, r in zip(v, refs)], dtype=float) for k, v in (("a", a), ("b", b))}
    lens = np.array([len(r.split()) for r in refs])
    idx = rng.integers(0, len(refs), size=(4000, len(refs)))  # the same resampled words for both systems
    boot_wer = 100 * (wrong["a"][idx].mean(1) - wrong["b"][idx].mean(1))
    boot_per = 100 * (errs["a"][idx].sum(1) - errs["b"][idx].sum(1)) / lens[idx].sum(1)
    assert c.wer_diff_se == pytest.approx(boot_wer.std(), rel=0.08)
    assert c.per_diff_se == pytest.approx(boot_per.std(), rel=0.08)
    # correlated errors: the paired SE is below the unpaired sqrt(se_a² + se_b²)
    assert c.wer_diff_se < 0.9 * math.hypot(sa.wer_se, sb.wer_se)


def test_compare_g2p_averages_runs_word_by_word():
    rng = np.random.default_rng(2)
    refs, a1, b = _synthetic_g2p(rng, 300, 0.10, 0.15)
    _, a2, _ = _synthetic_g2p(np.random.default_rng(3), 300, 0.10, 0.15)
    a2 = [h if i % 2 else r for i, (h, r) in enumerate(zip(a2, refs))]  # a second run, right on every other word
    c = compare_g2p([a1, a2], [b], refs)
    assert c.wer == pytest.approx((score_g2p(a1, refs).wer + score_g2p(a2, refs).wer) / 2)
    assert c.wer_diff == pytest.approx(c.wer - score_g2p(b, refs).wer)
    assert (c.n_runs, c.n_baseline_runs) == (2, 1) and "2 vs 1 runs" in str(c)
    # pooled PER: the runs' edits summed over both runs' reference phones
    edits = sum(edit_distance(h.split(), r.split()) for run in (a1, a2) for h, r in zip(run, refs))
    assert c.per == pytest.approx(100 * edits / (2 * sum(len(r.split()) for r in refs)))


def test_compare_g2p_refuses_unaligned_or_flat_inputs():
    refs = ["A B", "C"]
    with pytest.raises(TypeError, match="list of runs"):
        compare_g2p(["A B", "C"], [["A B", "C"]], refs)
    with pytest.raises(ValueError, match=r"baseline\[0\] has 1 lines vs 2 references"):
        compare_g2p([["A B", "C"]], [["A B"]], refs)


def test_compare_translation_is_sacrebleus_paired_bootstrap():
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    rng = np.random.default_rng(4)
    words = [f"w{i}" for i in range(40)]
    refs = [" ".join(rng.choice(words, size=rng.integers(5, 15))) for _ in range(150)]

    def noisy(p):
        return [" ".join(w if rng.random() > p else "zz" for w in r.split()) for r in refs]

    good, bad = noisy(0.2), noisy(0.4)
    c = compare_translation(good, bad, refs, n_samples=200)
    assert c.bleu == pytest.approx(sacrebleu.corpus_bleu(good, [refs]).score)
    assert c.baseline_bleu == pytest.approx(sacrebleu.corpus_bleu(bad, [refs]).score)
    assert c.chrf == pytest.approx(sacrebleu.corpus_chrf(good, [refs]).score)
    assert c.bleu > c.baseline_bleu and c.bleu_p < 0.01 and c.chrf_p < 0.01
    assert "bs:200" in c.signatures["BLEU"] and "seed:12345" in c.signatures["BLEU"]
    # the same figures as sacreBLEU's own paired test run directly
    _, ref_scores = PairedTest(
        [("b", bad), ("g", good)], {"BLEU": BLEU(references=[refs]), "chrF": CHRF(references=[refs])},
        references=None, test_type="bs", n_samples=200,
    )()  # fmt: skip
    assert c.bleu_p == pytest.approx(ref_scores["BLEU"][1].p_value)
    assert c.bleu_ci == pytest.approx(ref_scores["BLEU"][1].ci)
    # a system against itself: no difference, p = 1 (sacreBLEU's own test says 1/(n + 1) here)
    same = compare_translation(good, good, refs, n_samples=100)
    assert same.bleu == same.baseline_bleu and same.bleu_p == same.chrf_p == 1.0
    # one sentence changed: a small difference the bootstrap does not call significant
    near = compare_translation(good[:-1] + [bad[-1]], good, refs, n_samples=200)
    assert near.bleu != near.baseline_bleu and near.bleu_p > 0.2
    with pytest.raises(ValueError, match="2 hypotheses vs 150 references"):
        compare_translation(good[:2], bad, refs)
