import pytest

from adasparse.data import cmudict as cmu
from adasparse.data.corpus import find_corpus


@pytest.fixture(scope="module")
def pairs():
    return cmu.g2p_pairs()


def test_pairs_are_letters_to_stressless_arpabet(pairs):
    d = dict(pairs)
    # first pronunciation of "tomato" in CMUdict is T AH0 M EY1 T OW2
    assert d["t o m a t o"] == "T AH M EY T OW"
    assert len(pairs) > 100_000
    phones = {p for _, t in pairs for p in t.split()}
    assert len(phones) == 39 and not any(ch.isdigit() for p in phones for ch in p)
    letters = {c for s, _ in pairs for c in s.split()}
    assert letters == set("abcdefghijklmnopqrstuvwxyz")
    assert len({s for s, _ in pairs}) == len(pairs)  # one pronunciation per word


def test_keep_stress():
    d = cmu.load_pronunciations(keep_stress=True)
    assert d["tomato"] == ["T", "AH0", "M", "EY1", "T", "OW2"]


def test_licence_notice_available():
    text = cmu.license_text()
    assert "Carnegie Mellon University" in text and "Redistributions" in text


def test_split_is_seeded_disjoint_and_capped(pairs):
    a = cmu.split_pairs(pairs, cmu.G2PSplitConfig(seed=7))
    b = cmu.split_pairs(pairs, cmu.G2PSplitConfig(seed=7))
    c = cmu.split_pairs(pairs, cmu.G2PSplitConfig(seed=8))
    assert a == b and a["test"] != c["test"]
    words = [{s for s, _ in a[k]} for k in ("train", "valid", "test")]
    assert sum(map(len, words)) == len(pairs) and len(set.union(*words)) == len(pairs)
    assert abs(len(a["test"]) / len(pairs) - 0.05) < 0.001
    capped = cmu.split_pairs(pairs, cmu.G2PSplitConfig(seed=7, max_train=100, max_test=20))
    assert len(capped["train"]) == 100 and capped["test"] == a["test"][:20]
    assert capped["valid"] == a["valid"]


def test_bad_split_config():
    with pytest.raises(ValueError, match="valid_fraction"):
        cmu.G2PSplitConfig(valid_fraction=0.0)
    with pytest.raises(ValueError, match="must be < 1"):
        cmu.G2PSplitConfig(valid_fraction=0.6, test_fraction=0.5)


def test_written_corpus_reads_like_any_corpus(tmp_path):
    config = cmu.G2PSplitConfig(max_train=50, max_valid=10, max_test=10)
    out = cmu.write_g2p_corpus(tmp_path / "g2p", config)
    files = find_corpus(out)
    assert (files.src_lang, files.tgt_lang) == (cmu.SRC_LANG, cmu.TGT_LANG)
    train = files.load("train")
    assert len(train) == 50 and len(files.load("test")) == 10
    assert "Carnegie Mellon" in (out / "LICENSE.cmudict").read_text()
    # the same configuration reuses the folder (no rewrite)
    mtime = (out / "train.phonemes").stat().st_mtime_ns
    cmu.write_g2p_corpus(out, config)
    assert (out / "train.phonemes").stat().st_mtime_ns == mtime
    cmu.write_g2p_corpus(out, cmu.G2PSplitConfig(max_train=40, max_valid=10, max_test=10))
    assert len(find_corpus(out).load("train")) == 40


def test_prepare_uses_the_data_dir_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ADASPARSE_DATA_DIR", str(tmp_path))
    assert cmu.default_data_dir() == tmp_path / "cmudict-g2p"
    files = cmu.prepare_g2p_corpus(config=cmu.G2PSplitConfig(max_train=5, max_valid=5, max_test=5))
    assert files.directory == tmp_path / "cmudict-g2p" and len(files.load("valid")) == 5
