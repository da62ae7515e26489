from pathlib import Path

import pytest

from adasparse.data.corpus import load_parallel
from adasparse.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    SentencePieceTokenizer,
    SymbolTokenizer,
    TokenizerConfig,
    TokenizerPair,
)

MULTI30K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "multi30k"


@pytest.fixture(scope="module")
def multi30k():
    if not (MULTI30K / "train.de.gz").is_file():
        pytest.skip(f"Multi30k not found at {MULTI30K} (the shared data folder is absent)")
    return load_parallel(MULTI30K / "train.de.gz", MULTI30K / "train.en.gz", max_pairs=400)


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
@pytest.mark.parametrize("joint", [True, False])
def test_sentencepiece_round_trip_on_multi30k(multi30k, tmp_path, model_type, joint):
    config = TokenizerConfig(kind="sentencepiece", model_type=model_type, vocab_size=600, joint=joint)
    pair = TokenizerPair.train(multi30k.src[:300], multi30k.tgt[:300], config)
    assert pair.joint == joint
    pair.save(tmp_path)
    loaded = TokenizerPair.load(tmp_path)
    assert loaded.joint == joint and loaded.config == config
    for side, lines in (("src", multi30k.src), ("tgt", multi30k.tgt)):
        tok, tok2 = getattr(pair, side), getattr(loaded, side)
        trained = multi30k.src[:300] + multi30k.tgt[:300] if joint else lines[:300]
        seen_chars = set("".join(trained))
        for line in lines[:50] + lines[300:350]:  # seen and unseen sentences
            ids = tok.encode(line)
            assert ids[0] == BOS_ID and ids[-1] == EOS_ID and PAD_ID not in ids
            assert tok2.encode(line) == ids
            if set(line) <= seen_chars:
                # lossless up to SentencePiece's whitespace collapsing (the data has double spaces)
                assert tok.decode(ids) == " ".join(line.split())
            else:
                assert UNK_ID in ids
            assert tok.decode(ids + [EOS_ID, 7, PAD_ID]) == tok.decode(ids)
    if joint:
        assert pair.src.encode("ein Hund") == pair.tgt.encode("ein Hund")


def test_sentencepiece_word_ids(multi30k):
    tok = SentencePieceTokenizer.train(multi30k.tgt[:300], TokenizerConfig(vocab_size=300))
    for line in multi30k.tgt[:30]:
        pieces = tok.tokenize(line)
        w = tok.word_ids(line, add_bos=False, add_eos=False)
        assert len(w) == len(pieces) == len(tok.encode(line, False, False))
        assert w[0] == 0 and w[-1] == len(line.split()) - 1
        # pieces of word j, joined, spell word j
        words = ["".join(p for p, i in zip(pieces, w) if i == j).lstrip("\u2581") for j in range(w[-1] + 1)]
        assert words == line.split()
    ids = tok.word_ids("a dog")
    assert ids[0] == -1 and ids[-1] == -1 and len(ids) == len(tok.encode("a dog"))


def test_sentencepiece_training_is_deterministic(multi30k):
    config = TokenizerConfig(vocab_size=400, model_type="unigram")
    a = SentencePieceTokenizer.train(multi30k.src[:200], config)
    b = SentencePieceTokenizer.train(multi30k.src[:200], config)
    assert a.model_proto == b.model_proto


def test_whitespace_tokenizer_for_g2p(tmp_path):
    src = ["p h o n e", "t o m a t o", "a"]
    tgt = ["F OW N", "T AH M EY T OW", "AH"]
    pair = TokenizerPair.train(src, tgt, TokenizerConfig(kind="whitespace", joint=False, vocab_size=None))
    assert pair.tgt.vocab_size == 4 + len({"F", "OW", "N", "T", "AH", "M", "EY"})
    # most frequent first: T, AH and OW appear twice
    assert [pair.tgt.id_to_piece(i) for i in (4, 5, 6)] == ["AH", "OW", "T"]
    pair.save(tmp_path)
    loaded = TokenizerPair.load(tmp_path)
    for s, t in zip(src, tgt):
        assert loaded.src.decode(loaded.src.encode(s)) == s
        assert loaded.tgt.decode(pair.tgt.encode(t)) == t
        assert loaded.tgt.word_ids(t, add_bos=False, add_eos=False) == list(range(len(t.split())))
    assert pair.src.encode("p x", add_bos=False, add_eos=False) == [pair.src.piece_to_id("p"), UNK_ID]
    assert pair.src.decode([BOS_ID, pair.src.piece_to_id("a"), EOS_ID, pair.src.piece_to_id("p")]) == "a"


def test_char_tokenizer_round_trip_and_words():
    tok = SymbolTokenizer.train(["ein Hund", "zwei Männer"], mode="char")
    text = "ein Männer"
    ids = tok.encode(text)
    assert len(ids) == len(text) + 2 and tok.decode(ids) == text
    assert tok.word_ids(text, add_bos=False, add_eos=False) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert tok.encode("Q", add_bos=False, add_eos=False) == [UNK_ID]


def test_symbol_vocabulary_limits():
    tok = SymbolTokenizer.train(["a a a b b c"], max_size=2)
    assert tok.pieces[4:] == ["a", "b"]
    tok = SymbolTokenizer.train(["a a a b b c"], min_frequency=2)
    assert tok.pieces[4:] == ["a", "b"]


def test_config_and_load_errors(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        TokenizerConfig(kind="wordpiece")
    with pytest.raises(ValueError, match="model_type"):
        TokenizerConfig(model_type="wordpiece")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        TokenizerPair.load(tmp_path)
    pair = TokenizerPair.train(["a b"], ["c"], TokenizerConfig(kind="whitespace", joint=False))
    pair.save(tmp_path)
    (tmp_path / "tgt.vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="tgt.vocab.json"):
        TokenizerPair.load(tmp_path)


def test_auto_vocab_size_fits_the_text():
    from adasparse.data.tokenizer import auto_vocab_size, min_vocab_size

    lines = ["ab cd ef"] * 100  # 300 words, 6 characters
    assert min_vocab_size(lines) == 6 + 1 + 4  # characters, ▁, the special pieces
    assert auto_vocab_size(lines) == 300 // 20
    assert auto_vocab_size(["ab"] * 10) == min_vocab_size(["ab"])  # at least every character
    assert auto_vocab_size(["a b"] * 10**6) == 8000  # capped


def test_sentencepiece_vocab_too_small_is_a_clear_error():
    from adasparse.data.tokenizer import SentencePieceTokenizer

    with pytest.raises(ValueError, match=r"vocab_size=10 is too small for this text: SentencePiece needs at least"):
        SentencePieceTokenizer.train(["abcdefghijklmnop qrstuvwxyz"] * 20, TokenizerConfig(vocab_size=10))
