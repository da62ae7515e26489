"""SentencePiece, the default tokenizer, trained on synthetic text: runs in a fresh clone (no shared data).

The corpus is a few hundred lines of pseudo-words (syllables of a small alphabet, Zipf-like word frequencies)
drawn from a seeded RNG and written to ``tmp_path``; the tokenizers are trained from the file as a user's text.
"""

from __future__ import annotations

import random

import pytest

from adasparse.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_PIECES,
    UNK_ID,
    SentencePieceTokenizer,
    TokenizerConfig,
    TokenizerPair,
    min_vocab_size,
)

ONSETS = ["", "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sch", "tr"]
VOWELS = ["a", "e", "i", "o", "u", "ä", "ö", "ei", "au"]
CODAS = ["", "", "n", "r", "s", "t", "ng"]


def pseudo_text(seed: int, n_lines: int, n_words: int = 300) -> list[str]:
    """``n_lines`` sentences of 3–12 pseudo-words (a lexicon of ``n_words``, Zipf-distributed), some ending in
    '.' or '?', a few with doubled or outer spaces."""
    rng = random.Random(seed)
    lexicon = sorted(
        {
            "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.randint(1, 3)))
            for _ in range(n_words)
        }
    )
    rng.shuffle(lexicon)
    weights = [1 / (k + 1) for k in range(len(lexicon))]
    lines = []
    for _ in range(n_lines):
        words = rng.choices(lexicon, weights, k=rng.randint(3, 12))
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        line = " ".join(words) + rng.choice(["", ".", " ?"])
        if rng.random() < 0.1:
            line = "  " + line.replace(" ", "  ", 1) + " "
        lines.append(line)
    return lines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(train lines, held-out lines) read back from files written in a temporary folder."""
    folder = tmp_path_factory.mktemp("synthetic_text")
    lines = pseudo_text(seed=0, n_lines=500)
    (folder / "train.txt").write_text("\n".join(lines[:400]) + "\n", encoding="utf-8")
    (folder / "test.txt").write_text("\n".join(lines[400:]) + "\n", encoding="utf-8")
    read = [(folder / f).read_text(encoding="utf-8").splitlines() for f in ("train.txt", "test.txt")]
    assert read == [lines[:400], lines[400:]]
    return read


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_round_trip_and_vocab_size(corpus, model_type):
    train, held_out = corpus
    config = TokenizerConfig(model_type=model_type, vocab_size=200)
    tok = SentencePieceTokenizer.train(train, config)
    assert min_vocab_size(train) < 200
    assert tok.vocab_size == 200  # the text supports 200 pieces, so the (soft) limit is reached, not passed
    assert [tok.id_to_piece(i) for i in range(len(SPECIAL_PIECES))] == list(SPECIAL_PIECES)
    seen = set("".join(train))
    lines = train[:50] + [line for line in held_out if set(line) <= seen]
    assert len(lines) > 120  # most held-out lines use only characters seen in training (see test_unknown_characters)
    for line in lines:
        ids = tok.encode(line)
        assert ids[0] == BOS_ID and ids[-1] == EOS_ID
        body = ids[1:-1]
        assert body and all(len(SPECIAL_PIECES) <= i < tok.vocab_size for i in body)  # no pad, bos, eos or unk
        assert tok.decode(ids) == " ".join(line.split())  # lossless up to whitespace collapsing
        assert tok.encode(line, add_bos=False, add_eos=False) == body
        assert tok.decode(ids + [EOS_ID, 9, PAD_ID]) == tok.decode([PAD_ID] + ids)  # stops at eos, skips pad
        # the pieces of word j, joined, spell word j
        pieces, w = tok.tokenize(line), tok.word_ids(line, add_bos=False, add_eos=False)
        assert len(w) == len(pieces) == len(body)
        words = ["".join(p for p, i in zip(pieces, w) if i == j).lstrip("\u2581") for j in range(w[-1] + 1)]
        assert words == line.split()


def test_smaller_vocabulary_gives_longer_encodings(corpus):
    train, held_out = corpus
    small, large = (SentencePieceTokenizer.train(train, TokenizerConfig(vocab_size=v)) for v in (80, 400))
    assert small.vocab_size == 80 and large.vocab_size == 400
    length = {t: sum(len(t.encode(line)) for line in held_out) for t in (small, large)}
    assert length[small] > length[large]


@pytest.mark.parametrize("joint", [True, False])
def test_save_load_gives_the_same_ids(corpus, tmp_path, joint):
    train, held_out = corpus
    src, tgt = train[::2], train[1::2]
    config = TokenizerConfig(vocab_size=150, joint=joint)
    pair = TokenizerPair.train(src, tgt, config)
    assert pair.joint == joint
    pair.save(tmp_path)
    loaded = TokenizerPair.load(tmp_path)
    assert loaded.joint == joint and loaded.config == config
    for side in ("src", "tgt"):
        a, b = getattr(pair, side), getattr(loaded, side)
        assert a.model_proto == b.model_proto and a.vocab_size == b.vocab_size
        for line in held_out:
            assert b.encode(line) == a.encode(line)
            assert b.decode(a.encode(line)) == a.decode(a.encode(line))
    if not joint:
        assert pair.src.model_proto != pair.tgt.model_proto  # trained on different halves


def test_unknown_characters(corpus):
    train, _ = corpus
    tok = SentencePieceTokenizer.train(train, TokenizerConfig(vocab_size=150))
    line = "bala Ωmega tu€ ki"  # Ω and € never occur in training
    assert not set("Ω€") & set("".join(train))
    ids = tok.encode(line)
    assert ids.count(UNK_ID) == 2 and all(0 <= i < tok.vocab_size for i in ids)
    text = tok.decode(ids)
    assert "Ω" not in text and "€" not in text
    assert tok.decode(tok.encode("bala tu ki")) == "bala tu ki"  # the known characters around them still work
    # with byte fallback, unseen characters are spelt as UTF-8 bytes: no <unk>, and the round trip is lossless
    fallback = SentencePieceTokenizer.train(train, TokenizerConfig(vocab_size=400, byte_fallback=True))
    ids = fallback.encode(line)
    assert UNK_ID not in ids and fallback.decode(ids) == line
    assert sum(fallback.id_to_piece(i).startswith("<0x") for i in ids) == len("Ω€".encode())


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_training_is_deterministic(model_type):
    config = TokenizerConfig(model_type=model_type, vocab_size=150, seed=3)
    lines = pseudo_text(seed=1, n_lines=200)
    assert pseudo_text(seed=1, n_lines=200) == lines  # the corpus itself is reproducible
    a = SentencePieceTokenizer.train(lines, config)
    b = SentencePieceTokenizer.train(pseudo_text(seed=1, n_lines=200), config)
    assert a.model_proto == b.model_proto
    other = SentencePieceTokenizer.train(pseudo_text(seed=2, n_lines=200), config)
    assert other.model_proto != a.model_proto  # so the equality above is not vacuous
