"""``adasparse analyze``: statistics, figures and the HTML report for one or several checkpoints.

``adasparse analyze CHECKPOINT [CHECKPOINT ...] --data SRC TGT [--max-sentences N] [--sentence I ...] --out DIR``

Status: the argument parsing, data reading, statistics and report are implemented here; turning a checkpoint into
teacher-forced attention batches (:func:`load_checkpoint_for_analysis`) is not, because the models and the
checkpoint format do not exist yet: it raises ``NotImplementedError``. To wire the command into the top-level CLI::

    from .analysis.cli import add_analyze_parser
    add_analyze_parser(sub)          # sub = the subparsers of adasparse.cli.build_parser()
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .stats import AttentionBatch, analyze_attention

__all__ = [
    "AnalysisSource",
    "add_analyze_parser",
    "build_parser",
    "load_checkpoint_for_analysis",
    "read_parallel",
    "run_analyze",
    "main",
]

DEFAULT_MAP_SENTENCES = (0, 1)


@dataclass(frozen=True)
class AnalysisSource:
    """What the analysis needs from one checkpoint.

    Attributes:
        name: model name for the report (e.g. "softmax", "1.5-entmax", "learned α").
        batches: teacher-forced :class:`AttentionBatch` objects over the given sentences, in order, with the
            tokens and word indices filled in from the checkpoint's tokenizer.
        alpha: attention type → ``(layers, heads)`` α per head (a float for a fixed α, ``None`` if unknown).
        alpha_log: the JSON Lines training log with α trajectories, if the checkpoint has one.
    """

    name: str
    batches: Iterable[AttentionBatch]
    alpha: Mapping[str, Any] | None = None
    alpha_log: Path | None = None


def load_checkpoint_for_analysis(
    checkpoint: str | Path, src_lines: Sequence[str], tgt_lines: Sequence[str], *, batch_size: int = 32
) -> AnalysisSource:
    """Load a checkpoint and run teacher-forced passes over ``(src_lines, tgt_lines)``, collecting attention.

    Not implemented yet: it needs the models (``adasparse.models``) and the checkpoint format (training toolkit).
    It must return an :class:`AnalysisSource` whose batches carry, per attention type, the list over layers of
    ``(B, H, Q, K)`` probabilities, the padding masks, the token strings and the tokenizer's word indices.
    """
    raise NotImplementedError(
        f"adasparse analyze: loading checkpoint {str(checkpoint)!r} is not wired yet: "
        "adasparse.analysis.cli.load_checkpoint_for_analysis needs the models and the checkpoint format. "
        "Use the Python API meanwhile: adasparse.analysis.analyze_attention(batches, ...) and write_report(...)."
    )


def read_parallel(src: str | Path, tgt: str | Path, max_sentences: int | None = None) -> tuple[list[str], list[str]]:
    """Read a parallel corpus (one sentence per line), keeping the first ``max_sentences`` pairs."""
    src_lines = Path(src).read_text(encoding="utf-8").splitlines()
    tgt_lines = Path(tgt).read_text(encoding="utf-8").splitlines()
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"--data: {src} has {len(src_lines)} lines but {tgt} has {len(tgt_lines)}; they must match")
    if max_sentences is not None:
        src_lines, tgt_lines = src_lines[:max_sentences], tgt_lines[:max_sentences]
    if not src_lines:
        raise ValueError(f"--data: no sentences in {src}")
    return src_lines, tgt_lines


def _positive(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {s}")
    return v


def _non_negative(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative sentence index, got {s}")
    return v


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="one or several checkpoints to compare")
    p.add_argument("--data", nargs=2, required=True, metavar=("SRC", "TGT"), help="parallel text, one sentence a line")
    p.add_argument("--max-sentences", type=_positive, default=500, metavar="N", help="use the first N pairs")
    p.add_argument(
        "--sentence",
        type=_non_negative,
        nargs="+",
        default=None,
        metavar="I",
        help=f"indices of the sentences drawn as attention maps (default: {', '.join(map(str, DEFAULT_MAP_SENTENCES))})",
    )
    p.add_argument("--map-layers", type=_non_negative, nargs="+", default=None, metavar="L", help="layers to draw")
    p.add_argument("--batch-size", type=_positive, default=32, help="sentences per teacher-forced batch")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (report.html, metrics.json)")
    p.set_defaults(func=run_analyze)
    return p


def add_analyze_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` sub-command to the subparsers of the top-level ``adasparse`` parser."""
    p = subparsers.add_parser("analyze", help="attention statistics, figures and an HTML report for checkpoints")
    return _configure(p)


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser for ``python -m adasparse.analysis.cli``."""
    return _configure(
        argparse.ArgumentParser(
            prog="adasparse analyze",
            description="Attention statistics, figures and a self-contained HTML report for one or several checkpoints.",
        )
    )


def run_analyze(args: argparse.Namespace) -> int:
    """Run the analysis for parsed arguments; prints the summary and the report's path."""
    from .report import write_report  # matplotlib only when needed

    if args.max_sentences is not None:
        bad = [i for i in (args.sentence or []) if i >= args.max_sentences]
        if bad:
            raise SystemExit(f"adasparse analyze: --sentence {bad} beyond --max-sentences {args.max_sentences}")
    src_lines, tgt_lines = read_parallel(args.data[0], args.data[1], args.max_sentences)
    keep = args.sentence if args.sentence is not None else [i for i in DEFAULT_MAP_SENTENCES if i < len(src_lines)]
    results = []
    seen: set[str] = set()
    for ckpt in args.checkpoints:
        source = load_checkpoint_for_analysis(ckpt, src_lines, tgt_lines, batch_size=args.batch_size)
        name = source.name
        k = 2
        while name in seen:  # distinct names for the side-by-side report
            name, k = f"{source.name} ({k})", k + 1
        seen.add(name)
        results.append(
            analyze_attention(
                source.batches, name=name, alpha=source.alpha, alpha_log=source.alpha_log, keep_sentences=keep
            )
        )
    report = write_report(results, args.out, map_layers=args.map_layers)
    print(report.summary)
    print(f"report: {report.html_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
