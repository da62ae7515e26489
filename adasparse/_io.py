"""Files that survive a kill: atomic writes and the reader of JSON Lines logs (standard library only).

Below every other module: ``data/`` (tokenizers, corpora), ``train/`` (checkpoints, the run log), ``analysis/``
and the CLI all write and read through it, so none of them needs to import another for it.

- :func:`atomic_write_bytes` (and ``_text``, ``_json``): the file is written to a temporary name in the same
  folder, flushed, ``fsync``-ed and moved into place with ``os.replace``; a reader sees the old file or the new
  one, never a part.
- :func:`read_jsonl`: one rule for a log that a live or killed run may have cut short. A last line that is not
  valid JSON (the run was killed in the middle of writing it) is skipped with a warning; an invalid line
  anywhere else is damage and raises ``ValueError`` naming the file and the line.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "fsync_dir", "tmp_name", "read_jsonl"]

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Persist a directory entry change (rename) on POSIX; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_name(path: Path) -> Path:
    """A hidden name next to ``path``, unique to this process: ``.NAME.tmp-PID-XXXXXXXX``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, flush, fsync, ``os.replace``."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """:func:`atomic_write_text` of ``obj`` as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for every non-blank line of the JSON Lines file ``path`` (numbered from 1).

    A last line that is not valid JSON (or not UTF-8) is the trace of a writer killed mid-line: it is skipped
    with a warning. Such a line before the last one raises ``ValueError`` naming ``path`` and its line.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    for i, raw in enumerate(lines[: last + 1]):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            why = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            if i == last:
                log.warning(
                    "%s:%d: skipping the last line, cut short (%s): a run killed while writing it?", path, i + 1, why
                )
                return
            raise ValueError(f"{path}:{i + 1}: not valid JSON ({why}); only the last line may be cut short") from None
        yield i + 1, record
