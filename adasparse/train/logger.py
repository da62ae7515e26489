"""Training logs: a JSONL file (the source of truth, read by ``adasparse analyze``), TensorBoard scalars.

Each JSONL line is one event. Training lines::

    {"kind": "train", "step": 100, "epoch": 0, "loss": 3.21, "lr": 1.7e-4, "tokens_per_s": 5400.0,
     "alpha": {"enc_self": [[α per head] per layer], "dec_self": [...], "context": [...]}, "time": 12.3}

Validation lines have ``"kind": "valid"``, ``"scheduled"`` (true for the validations every ``valid_every`` updates
and at ``max_steps``, the ones ``patience`` counts; false for the extra one where a session ends) and the metrics
(``valid_loss``, ``bleu``, ``chrf``, ``wer``, ...).
Appends are line-atomic (one ``write`` of a full line, flushed), so a killed run leaves a readable log (at
worst its last line cut short, which :func:`read_log` skips with a warning); on ``--resume`` lines past the resumed step are dropped first, so the log of a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._io import read_jsonl

__all__ = ["RunLogger", "read_log"]


class RunLogger:
    """JSONL + optional TensorBoard writer (rank 0 only; other ranks get a disabled logger)."""

    def __init__(
        self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, resume_step: int | None = None
    ):
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._tb = None
            else:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=resume_step)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._tb is not None:
            step = record.get("step", 0)
            prefix = record.get("kind", "train")
            for k, v in record.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("step", "epoch"):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)
            for atype, layers in (record.get("alpha") or {}).items():
                for li, heads in enumerate(layers):
                    for hi, a in enumerate(heads):
                        self._tb.add_scalar(f"alpha/{atype}/layer{li}/head{hi}", a, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL log, by :func:`adasparse._io.read_jsonl`'s rule: a last line cut short (a run
    killed mid-write) is skipped with a warning, an unreadable line before it raises ``ValueError`` naming it."""
    return [record for _, record in read_jsonl(path)]
