import logging

import pytest

from adasparse.data.corpus import find_corpus, load_parallel, read_lines

from .files import write_lines

_write = write_lines


def test_plain_and_gzip_read_the_same(tmp_path):
    lines = ["Ein Hund läuft.", "  Zwei Männer  ", "😀 ok"]
    plain = _write(tmp_path / "a.txt", lines)
    gz = _write(tmp_path / "a.txt.gz", lines, gz=True)
    # gzip is detected from the content, not the name
    gz_no_suffix = _write(tmp_path / "b.de", lines, gz=True)
    expected = ["Ein Hund läuft.", "Zwei Männer", "😀 ok"]
    assert read_lines(plain) == read_lines(gz) == read_lines(gz_no_suffix) == expected


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    src = _write(tmp_path / "train.de", ["a", "b", "c"])
    tgt = _write(tmp_path / "train.en.gz", ["x", "y"], gz=True)
    with pytest.raises(ValueError) as e:
        load_parallel(src, tgt)
    msg = str(e.value)
    assert str(src) in msg and str(tgt) in msg and "3 lines" in msg and "2 lines" in msg


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_reports_file_and_line(tmp_path, gz):
    raw = "grün\nauch gut\n".encode() + b"caf\xe9 latin-1\n" + b"ok\n"
    bad = _write(tmp_path / ("bad.de.gz" if gz else "bad.de"), None, gz=gz, raw=raw)
    good = _write(tmp_path / "good.en", ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"line 3 is not valid UTF-8") as e:
        load_parallel(bad, good)
    assert str(bad) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.de"):
        read_lines(tmp_path / "nope.de")


def test_filters_empty_and_long_pairs_with_counts(tmp_path, caplog):
    src = _write(tmp_path / "s", ["one two", "", "a b c d e", "ok", "   "])
    tgt = _write(tmp_path / "t", ["eins zwei", "leer", "kurz", "", "x"])
    with caplog.at_level(logging.WARNING):
        c = load_parallel(src, tgt, max_words=4)
    assert c.src == ["one two"] and c.tgt == ["eins zwei"]
    assert (c.n_read, c.n_empty, c.n_too_long, len(c)) == (5, 3, 1, 1)
    assert c.kept_lines == [1]
    assert "dropped 3 empty and 1 over-long" in c.summary()
    assert "dropped 3 empty and 1 over-long" in caplog.text


def test_max_pairs(tmp_path):
    src = _write(tmp_path / "s", [f"s{i}" for i in range(10)])
    tgt = _write(tmp_path / "t", [f"t{i}" for i in range(10)])
    c = load_parallel(src, tgt, max_pairs=4)
    assert c.src == ["s0", "s1", "s2", "s3"] and c.tgt[-1] == "t3"


def test_find_corpus_folder(tmp_path):
    for split in ("train", "val", "test_2016_flickr", "test_2017"):
        _write(tmp_path / f"{split}.de.gz", ["a"], gz=True)
        _write(tmp_path / f"{split}.en.gz", ["b"], gz=True)
    _write(tmp_path / "README", ["not a split"])
    files = find_corpus(tmp_path, "de", "en")
    assert sorted(files.splits) == ["test_2016_flickr", "test_2017", "train", "valid"]
    assert files.get("valid") == (tmp_path / "val.de.gz", tmp_path / "val.en.gz")
    assert files.test_names == ["test_2016_flickr", "test_2017"]
    with pytest.raises(KeyError, match="available"):
        files.get("test")  # two test sets: the name must be given
    # one language named is enough when the folder holds two
    assert find_corpus(tmp_path, tgt_lang="de").src_lang == "en"
    with pytest.raises(ValueError, match="cannot tell the source"):
        find_corpus(tmp_path)
    rev = find_corpus(tmp_path, "en", "de")
    assert rev.load("train").src == ["b"]


def test_find_corpus_reads_corpus_json_and_checks_sides(tmp_path):
    (tmp_path / "corpus.json").write_text('{"src_lang": "graphemes", "tgt_lang": "phonemes"}')
    _write(tmp_path / "train.graphemes", ["a b"])
    _write(tmp_path / "train.phonemes", ["EY B"])
    _write(tmp_path / "test.graphemes", ["c"])
    _write(tmp_path / "test.phonemes", ["S IY"])
    files = find_corpus(tmp_path)
    assert (files.src_lang, files.tgt_lang) == ("graphemes", "phonemes")
    assert files.get("test")[1].name == "test.phonemes"
    _write(tmp_path / "valid.graphemes", ["x"])
    with pytest.raises(ValueError, match="valid.graphemes but no file for language 'phonemes'"):
        find_corpus(tmp_path)


def test_find_corpus_without_training_files(tmp_path):
    _write(tmp_path / "test.de", ["a"])
    with pytest.raises(FileNotFoundError, match="no training files"):
        find_corpus(tmp_path, "de", "en")


def test_damaged_gzip_names_the_file(tmp_path):
    good = _write(tmp_path / "a.gz", [f"line {i}" for i in range(2000)], gz=True)
    raw = good.read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cut.gz: the gzip file is damaged or cut short"):
        read_lines(cut)
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.gz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match=r"bad.gz: the gzip file is damaged"):
        read_lines(tmp_path / "bad.gz")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_lines(tmp_path)


def test_validation_prefix_is_recognised(tmp_path):
    for split in ("train", "validation"):
        _write(tmp_path / f"{split}.de", ["a"])
        _write(tmp_path / f"{split}.en", ["b"])
    files = find_corpus(tmp_path, "de", "en")
    assert files.has("valid") and files.get("valid") == (tmp_path / "validation.de", tmp_path / "validation.en")


def test_decode_lines_names_the_stream():
    from adasparse.data.corpus import decode_lines

    assert list(decode_lines([b" a b \n", b"\n"], "<stdin>")) == ["a b", ""]
    with pytest.raises(ValueError, match=r"<stdin>: line 2 is not valid UTF-8"):
        list(decode_lines([b"ok\n", b"\xff\n"], "<stdin>"))


def test_unreadable_corpus_json_names_it(tmp_path):
    _write(tmp_path / "train.de", ["a"]), _write(tmp_path / "train.en", ["b"])
    (tmp_path / "corpus.json").write_text("{oops")
    with pytest.raises(ValueError, match=r"corpus.json is not valid JSON"):
        find_corpus(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path, gz):
    """Windows editors may open a UTF-8 file with U+FEFF; it is read as Python's utf-8-sig reads it (dropped at
    the start of the file only; one inside a line is text and stays)."""
    raw = "\ufeffgrün\r\nhallo \ufeffwelt\n".encode()
    f = _write(tmp_path / ("bom.txt.gz" if gz else "bom.txt"), None, gz=gz, raw=raw)
    assert read_lines(f) == raw.decode("utf-8-sig").replace("\r", "").splitlines() == ["grün", "hallo \ufeffwelt"]
