"""Atomic writes and the one JSON Lines reader (a torn last line is skipped, damage elsewhere is an error)."""

import json
import logging
import re

import pytest

from adasparse._io import atomic_write_json, atomic_write_text, read_jsonl


def test_atomic_write_replaces_whole_file(tmp_path):
    f = tmp_path / "x.txt"
    atomic_write_text(f, "old")
    atomic_write_text(f, "new content")
    assert f.read_text() == "new content" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
    atomic_write_json(f, {"a": [1, "é"]})
    assert json.loads(f.read_text(encoding="utf-8")) == {"a": [1, "é"]}


def _records(n: int) -> list[dict]:
    return [{"kind": "train", "step": i, "loss": 1.0 / (i + 1)} for i in range(n)]


def test_read_jsonl_gives_every_record_with_its_line_number(tmp_path):
    f = tmp_path / "log.jsonl"
    recs = _records(3)
    f.write_text(json.dumps(recs[0]) + "\n\n" + json.dumps(recs[1]) + "\r\n" + json.dumps(recs[2]))  # no final \n
    assert list(read_jsonl(f)) == [(1, recs[0]), (3, recs[1]), (4, recs[2])]


@pytest.mark.parametrize("cut", [1, 10, -1])
def test_read_jsonl_skips_a_torn_last_line_with_a_warning(tmp_path, caplog, cut):
    f = tmp_path / "log.jsonl"
    recs = _records(3)
    torn = json.dumps(recs[2])[:cut]  # a run killed while writing its third line (blank lines after it are no line)
    f.write_text("".join(json.dumps(r) + "\n" for r in recs[:2]) + torn + "\n\n")
    with caplog.at_level(logging.WARNING, logger="adasparse"):
        got = [r for _, r in read_jsonl(f)]
    assert got == recs[:2]
    assert f"{f}:3: skipping the last line" in caplog.text


def test_read_jsonl_skips_a_last_line_cut_inside_a_utf8_character(tmp_path, caplog):
    f = tmp_path / "log.jsonl"
    f.write_bytes(b'{"step": 1}\n' + '{"note": "é'.encode()[:-1])
    with caplog.at_level(logging.WARNING, logger="adasparse"):
        assert [r for _, r in read_jsonl(f)] == [{"step": 1}]
    assert "not UTF-8" in caplog.text


def test_read_jsonl_names_file_and_line_of_damage_before_the_end(tmp_path):
    f = tmp_path / "log.jsonl"
    recs = _records(3)
    f.write_text(json.dumps(recs[0]) + "\n" + json.dumps(recs[1])[:-5] + "\n" + json.dumps(recs[2]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{f}:2: not valid JSON")):
        list(read_jsonl(f))


def test_read_jsonl_of_an_empty_file(tmp_path):
    f = tmp_path / "log.jsonl"
    f.write_text("\n \n")
    assert list(read_jsonl(f)) == []
