"""The run log: read_log's rule for a cut-short last line, and --resume cutting the log back to its step."""

import json
import logging
import re

import pytest

from adasparse.train.logger import RunLogger, read_log


def _write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")


def test_read_log_skips_a_last_line_cut_by_a_kill(tmp_path, caplog):
    log = tmp_path / "log.jsonl"
    recs = [{"kind": "init", "step": 0}, {"kind": "train", "step": 2, "loss": 3.5}]
    _write(log, recs, tail='{"kind": "train", "step": 4, "lo')
    with caplog.at_level(logging.WARNING, logger="adasparse"):
        assert read_log(log) == recs
    assert f"{log}:3: skipping the last line" in caplog.text


def test_read_log_names_the_line_of_damage_before_the_last(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"kind": "init", "step": 0}\n{"kind": "tra\n{"kind": "train", "step": 4}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{log}:2: not valid JSON")):
        read_log(log)


def test_resume_cuts_the_log_back_and_drops_a_torn_last_line(tmp_path, caplog):
    recs = [{"kind": "init", "step": 0}, {"kind": "train", "step": 2}, {"kind": "train", "step": 4}]
    _write(tmp_path / "log.jsonl", recs, tail='{"kind": "train", "st')
    with caplog.at_level(logging.WARNING, logger="adasparse"):
        logger = RunLogger(tmp_path, tensorboard=False, resume_step=2)
    logger.log({"kind": "train", "step": 3})
    logger.close()
    assert read_log(tmp_path / "log.jsonl") == [*recs[:2], {"kind": "train", "step": 3}]
    assert "skipping the last line" in caplog.text
