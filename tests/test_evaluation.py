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
