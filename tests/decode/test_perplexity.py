"""Perplexity: uniform logits give the vocabulary size; batched, padded scoring equals a direct sum of
log-softmax line by line; split windows; the counts (tokens, bytes) are those documented."""

import math
from pathlib import Path

import pytest
import torch

from adasparse.data.text import load_text, train_lm_tokenizer
from adasparse.data.tokenizer import SymbolTokenizer, TokenizerConfig
from adasparse.decode.perplexity import PerplexityScores, score_text
from adasparse.models import DecoderOnlyTransformer, tiny_lm

TINY = Path(__file__).parents[1] / "data" / "tiny_text"


def _lines():
    return load_text(TINY / "valid.txt")[:25] + ["", "Zwölf Straßen ."]  # a blank line, non-ASCII bytes, <unk>


def _tok():
    return SymbolTokenizer.train(load_text(TINY / "train.txt"))


def _model(vocab, norm="learned", **kw):
    torch.manual_seed(0)
    return DecoderOnlyTransformer(tiny_lm(norm, vocab_size=vocab, tie_embeddings=False, **kw)).eval()


def test_uniform_logits_give_the_vocabulary_size():
    tok = _tok()
    model = _model(tok.vocab_size)
    with torch.no_grad():
        model.output.weight.zero_()  # every logit 0: p = 1/V for every id
    lines = _lines()
    s = score_text(model, tok, lines)
    kept = [line for line in lines if line]
    assert s.n_lines == len(kept)
    assert s.n_tokens == sum(len(line.split()) + 1 for line in kept)  # the words and eos of each line
    assert s.n_bytes == sum(len(line.encode("utf-8")) + 1 for line in kept)  # + the newline
    assert s.n_bytes > sum(len(line) + 1 for line in kept)  # ö, ß count 2 bytes
    assert s.token_perplexity == pytest.approx(tok.vocab_size, rel=1e-5)
    assert s.bits_per_byte == pytest.approx(s.n_tokens * math.log2(tok.vocab_size) / s.n_bytes, rel=1e-5)
    assert s.byte_perplexity == pytest.approx(2**s.bits_per_byte, rel=1e-9)


def _direct_nll(model, tok, lines, window=None):
    """Independent path: each line (or window) alone through ``forward``, summing −log_softmax at the targets."""
    total, n = 0.0, 0
    for line in lines:
        if not line:
            continue
        ids = tok.encode(line)
        starts = [0] if window is None else range(0, len(ids) - 1, window)
        for s in starts:
            chunk = ids[s:] if window is None else ids[s : s + window + 1]
            x = torch.tensor([chunk[:-1]])
            with torch.no_grad():
                logp = torch.log_softmax(model(x, pad_mask=torch.ones_like(x, dtype=torch.bool))[0].double(), -1)
            total -= float(logp[torch.arange(len(chunk) - 1), torch.tensor(chunk[1:])].sum())
            n += len(chunk) - 1
    return total, n


@pytest.mark.parametrize(
    "kw", [dict(norm="softmax"), dict(norm="learned", positions="rope", length_scaling="learned")], ids=str
)
def test_batched_scoring_equals_a_direct_sum(kw):
    tok = _tok()
    kw = dict(kw)
    model = _model(tok.vocab_size, kw.pop("norm"), **kw)
    lines = _lines()
    s = score_text(model, tok, lines, max_tokens=64)  # several padded batches
    nll, n = _direct_nll(model, tok, lines)
    assert s.n_tokens == n and s.n_split == 0
    assert s.nll == pytest.approx(nll, rel=1e-5)
    assert s.token_perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert s.token_perplexity < 2 * tok.vocab_size  # sanity: a random model is near uniform


def test_long_lines_are_scored_in_windows_every_token_once():
    tok = _tok()
    model = _model(tok.vocab_size, "entmax15")
    lines = _lines()
    whole = score_text(model, tok, lines)
    s = score_text(model, tok, lines, max_len=5)
    assert s.n_split == sum(len(line.split()) + 2 > 6 for line in lines if line)
    assert s.n_tokens == whole.n_tokens and s.n_bytes == whole.n_bytes  # the same ids are predicted
    nll, n = _direct_nll(model, tok, lines, window=5)
    assert n == s.n_tokens and s.nll == pytest.approx(nll, rel=1e-5)
    assert s.nll != pytest.approx(whole.nll, rel=1e-3)  # shorter contexts: a different score


def test_sentencepiece_counts_and_a_joint_pair():
    lines = load_text(TINY / "train.txt")
    pair = train_lm_tokenizer(lines, TokenizerConfig(vocab_size=100))
    model = _model(pair.tgt.vocab_size, "softmax")
    text = _lines()[:10]
    s = score_text(model, pair, text)
    assert s.n_tokens == sum(len(pair.tgt.encode(line)) - 1 for line in text)  # pieces + eos, no bos
    assert s.n_bytes == sum(len(line.encode()) + 1 for line in text)


def test_scores_summary_and_empty_text():
    s = PerplexityScores(nll=10.0, n_tokens=5, n_bytes=20, n_lines=2)
    assert s.token_perplexity == pytest.approx(math.exp(2.0))
    assert s.bits_per_byte == pytest.approx(10.0 / math.log(2) / 20)
    assert "per token" in s.summary() and s.as_dict()["n_tokens"] == 5
    empty = PerplexityScores(0.0, 0, 0, 0)
    assert math.isnan(empty.token_perplexity) and math.isnan(empty.bits_per_byte)
