"""``adasparse analyze``: statistics, figures and the HTML report for one or several checkpoints.

``adasparse analyze CHECKPOINT [CHECKPOINT ...] (--data SRC TGT | --text FILE) [--max-sentences N]
[--sentence I ...] [--map-layers L ...] [--names NAME ...] [--batch-size B] --out DIR``

Translation models (``adasparse train``) are run teacher-forced over the pairs of ``--data``
(:func:`load_checkpoint_for_analysis`): their ``enc_self``, ``dec_self`` and ``context`` attention. Language
models (``adasparse train --task lm``) read the lines of ``--text`` (:func:`load_lm_checkpoint_for_analysis`):
their causal ``self`` attention. Each checkpoint's statistics go into one report (side by side when several
checkpoints are given); one report holds models of one kind, and a checkpoint given the other kind's data is an
error naming the option.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._argparse import HelpFormatter
from ..ops.normalizers import normalizer_alpha
from .stats import AttentionBatch, analyze_attention

__all__ = [
    "AnalysisSource",
    "CheckpointKindError",
    "add_analyze_parser",
    "build_parser",
    "load_checkpoint_for_analysis",
    "load_lm_checkpoint_for_analysis",
    "read_parallel",
    "read_text",
    "run_analyze",
    "analyze_checkpoints",
    "analyze_lm_checkpoints",
    "main",
]

log = logging.getLogger(__name__)

DEFAULT_MAP_SENTENCES = (0, 1)

# kind of checkpoint → (what it is, the option that gives its data)
_KINDS = {
    "translation": ("a translation model (encoder–decoder)", "--data SRC TGT"),
    "lm": ("a language model (decoder-only)", "--text FILE"),
}


@dataclass(frozen=True)
class AnalysisSource:
    """What the analysis needs from one checkpoint.

    Attributes:
        name: model name for the report (e.g. "softmax", "1.5-entmax", "learned α").
        batches: :class:`AttentionBatch` objects over the given sentences, in order (teacher-forced pairs for a
            translation model, text lines for a language model), with the tokens and word indices filled in
            from the checkpoint's tokenizer.
        alpha: attention type → ``(layers, heads)`` α per head (a float for a fixed α, ``None`` if unknown).
        alpha_log: the JSON Lines training log with α trajectories, if the checkpoint has one.
        path: the checkpoint folder (names the model when several are compared).
        layers: attention type → number of layers (checks ``--map-layers``).
    """

    name: str
    batches: Iterable[AttentionBatch]
    alpha: Mapping[str, Any] | None = None
    alpha_log: Path | None = None
    path: Path | None = None
    layers: Mapping[str, int] | None = None


class CheckpointKindError(ValueError):
    """A checkpoint given the other kind's data: a language model with ``--data``, a translation model with
    ``--text``. ``kind`` is the checkpoint's kind (``"translation"`` or ``"lm"``)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def _load(checkpoint: str | Path, expected: str):
    """:func:`~adasparse.train.loading.load_model`, and a :class:`CheckpointKindError` naming the data option when
    the checkpoint is not of the ``expected`` kind."""
    from ..models.config import DecoderOnlyConfig
    from ..train.loading import load_model

    model, toks, ckpt = load_model(checkpoint)
    kind = "lm" if isinstance(model.config, DecoderOnlyConfig) else "translation"
    if kind != expected:
        what, option = _KINDS[kind]
        given = _KINDS[expected][1]
        raise CheckpointKindError(
            f"{given.split()[0]}: {checkpoint} is {what}; give its data with {option} instead of {given}", kind
        )
    return model, toks, ckpt


def _alphas(model) -> dict[str, Any]:
    """Attention type → learned α ``(layers, heads)`` or the fixed normalizer's α (a float)."""
    norms = model.config.normalizers
    return {t: (model.alphas()[t] if norms[t] == "learned" else normalizer_alpha(norms[t], t)) for t in norms}


def _run_log(ckpt) -> Path | None:
    """The run's ``log.jsonl`` (``<run>/checkpoints/step_N`` → ``<run>/log.jsonl``), if there is one."""
    log_file = ckpt.path.parent.parent / "log.jsonl"
    return log_file if log_file.is_file() else None


class TooLongError(ValueError):
    """Analysis sentences longer than the model's positions (the CLI adds the files they come from)."""


def load_checkpoint_for_analysis(
    checkpoint: str | Path, src_lines: Sequence[str], tgt_lines: Sequence[str], *, batch_size: int = 32
) -> AnalysisSource:
    """Load a translation checkpoint and run teacher-forced passes over ``(src_lines, tgt_lines)``, collecting
    attention.

    The batches carry, per attention type, the list over layers of ``(B, H, Q, K)`` probabilities, the padding
    masks, the token strings (encoder input: pieces + ``</s>``; decoder input: ``<s>`` + pieces) and the
    tokenizer's word indices. α comes from the model; the α trajectories from the run's ``log.jsonl``. A
    language-model checkpoint raises :class:`CheckpointKindError` (it reads ``--text``).
    """
    import torch

    from ..data.batching import collate, encode_pairs, warn_unknown

    model, toks, ckpt = _load(checkpoint, "translation")
    src_ids, tgt_ids, dropped = encode_pairs(toks, src_lines, tgt_lines, max_len=model.config.max_len)
    warn_unknown(src_ids, toks.src.unk_id, "the analysis sources")
    warn_unknown(tgt_ids, toks.tgt.unk_id, "the analysis targets")
    if dropped:
        n = model.config.max_len
        lengths = encode_pairs(toks, src_lines, tgt_lines)[:2]
        first = next(i for i, (a, b) in enumerate(zip(*lengths)) if len(a) > n or len(b) > n)
        raise TooLongError(
            f"{dropped} of the {len(src_lines)} analysis pairs are longer than the model's max_len={n} tokens "
            f"(the first: line {first + 1}, {len(lengths[0][first])} source / {len(lengths[1][first])} target "
            "tokens); analyse shorter sentences"
        )
    norms = model.config.normalizers

    def batches():
        for start in range(0, len(src_ids), batch_size):
            s, t = src_ids[start : start + batch_size], tgt_ids[start : start + batch_size]
            b = collate(s, t, pad_id=model.config.pad_id)
            with torch.no_grad():
                maps = model.attention_maps(b.src, b.tgt_in, b.src_mask, b.tgt_mask)
            lines = range(start, start + len(s))
            yield AttentionBatch(
                attention=maps,
                src_mask=b.src_mask,
                tgt_mask=b.tgt_mask,
                src_tokens=[toks.src.tokenize(src_lines[i]) + ["</s>"] for i in lines],
                tgt_tokens=[["<s>"] + toks.tgt.tokenize(tgt_lines[i]) for i in lines],
                src_word_ids=[toks.src.word_ids(src_lines[i], add_bos=False, add_eos=True) for i in lines],
                tgt_word_ids=[toks.tgt.word_ids(tgt_lines[i], add_bos=True, add_eos=False) for i in lines],
            )

    cfg = model.config
    layers = {"enc_self": cfg.enc_layers, "dec_self": cfg.dec_layers, "context": cfg.dec_layers}
    return AnalysisSource(
        name=_model_name(norms),
        batches=batches(),
        alpha=_alphas(model),
        alpha_log=_run_log(ckpt),
        path=ckpt.path,
        layers={t: n for t, n in layers.items() if t in norms},
    )


def load_lm_checkpoint_for_analysis(
    checkpoint: str | Path, lines: Sequence[str], *, batch_size: int = 32
) -> AnalysisSource:
    """Load a language-model checkpoint and run it over ``lines``, collecting its causal self-attention.

    Each line is one sequence, read as the model reads text in training and in ``adasparse evaluate``: its input
    is ``bos, pieces...`` (:func:`~adasparse.data.text.encode_text` without the final ``eos``, which is only
    predicted), cut to the model's window of ``max_len`` inputs (a warning counts the lines cut). The batches
    carry ``{"self": [(B, H, T, T) per layer]}`` with the sequence mask as ``tgt_mask``, the tokens (``<s>`` +
    pieces) and the tokenizer's word indices. α comes from the model; the α trajectories from the run's
    ``log.jsonl``. A translation checkpoint raises :class:`CheckpointKindError` (it reads ``--data``).
    """
    import torch

    from ..data.batching import warn_unknown
    from ..data.text import collate_lm, encode_text, lm_tokenizer

    model, toks, ckpt = _load(checkpoint, "lm")
    tok = lm_tokenizer(toks)
    window = model.config.max_len
    seqs = [encode_text(tok, line) for line in lines]
    warn_unknown(seqs, tok.unk_id, "the analysis text")
    cut = sum(len(s) - 1 > window for s in seqs)
    seqs = [s[: window + 1] for s in seqs]

    def batches():
        if cut:  # said when the analysis runs, not when a report of mixed kinds is refused
            log.warning("%s: %d of %d analysis lines are longer than its window of %d tokens; their first %d are "
                        "analysed", ckpt.path, cut, len(seqs), window, window)  # fmt: skip
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start : start + batch_size]
            b = collate_lm(chunk, pad_id=model.config.pad_id)
            with torch.no_grad():
                maps = model.attention_maps(b.inputs, b.mask)  # {"self": [(B, H, T, T) per layer]}
            rows = [(lines[i], len(seqs[i]) - 1) for i in range(start, start + len(chunk))]  # (line, inputs)
            yield AttentionBatch(
                attention=maps,
                tgt_mask=b.mask,
                tgt_tokens=[(["<s>"] + tok.tokenize(line))[:n] for line, n in rows],
                tgt_word_ids=[tok.word_ids(line, add_bos=True, add_eos=False)[:n] for line, n in rows],
            )

    return AnalysisSource(
        name=_model_name(model.config.normalizers),
        batches=batches(),
        alpha=_alphas(model),
        alpha_log=_run_log(ckpt),
        path=ckpt.path,
        layers={"self": model.config.n_layers},
    )


def _model_name(norms: Mapping[str, Any]) -> str:
    """ "learned α", "softmax", "1.5-entmax"... (or the three normalizers when they differ)."""
    pretty = {"learned": "learned α", "softmax": "softmax", "entmax15": "1.5-entmax", "sparsemax": "sparsemax"}
    names = {pretty.get(v, f"{v}-entmax") if isinstance(v, str) else f"{v:g}-entmax" for v in norms.values()}
    return names.pop() if len(names) == 1 else "/".join(str(v) for v in norms.values())


def read_parallel(src: str | Path, tgt: str | Path, max_sentences: int | None = None) -> tuple[list[str], list[str]]:
    """Read a parallel corpus (one sentence per line, plain or gzip), keeping the first ``max_sentences`` pairs."""
    from ..data.corpus import read_lines  # plain or gzip, errors name the file and line

    src_lines, tgt_lines = read_lines(src), read_lines(tgt)
    if len(src_lines) != len(tgt_lines):
        raise ValueError(f"--data: {src} has {len(src_lines)} lines but {tgt} has {len(tgt_lines)}; they must match")
    if max_sentences is not None:
        src_lines, tgt_lines = src_lines[:max_sentences], tgt_lines[:max_sentences]
    if not src_lines:
        raise ValueError(f"--data: no sentences in {src}")
    return src_lines, tgt_lines


def read_text(path: str | Path, max_sentences: int | None = None) -> list[str]:
    """Read a language model's analysis text (one sentence or document a line, plain or gzip; blank lines are
    skipped, :func:`~adasparse.data.text.load_text`), keeping the first ``max_sentences`` lines."""
    from ..data.text import load_text  # errors name the file and line

    lines = load_text(path, max_sentences)
    if not lines:
        raise ValueError(f"--text: no lines in {path}")
    return lines


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
    p.add_argument(
        "checkpoints", nargs="+", metavar="CHECKPOINT",
        help="one or several checkpoints to compare: a checkpoint folder, or a run folder (its best checkpoint)",
    )  # fmt: skip
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--data", nargs=2, metavar=("SRC", "TGT"),
        help="translation models: parallel text, one sentence a line (plain or .gz), run teacher-forced through "
        "each model",
    )  # fmt: skip
    data.add_argument(
        "--text", type=Path, metavar="FILE",
        help="language models (train --task lm): text, one sentence or document a line (plain or .gz; blank lines "
        "skipped), each line read as the model reads it (<s> + pieces, cut to its window of max_len tokens)",
    )  # fmt: skip
    p.add_argument(
        "--max-sentences", type=_positive, default=500, metavar="N",
        help="use the first N pairs of --data (lines of --text)",
    )  # fmt: skip
    p.add_argument(
        "--sentence",
        type=_non_negative,
        nargs="+",
        default=None,
        metavar="I",
        help=f"indices of the sentences drawn as attention maps (default: {', '.join(map(str, DEFAULT_MAP_SENTENCES))})",
    )
    p.add_argument(
        "--map-layers", type=_non_negative, nargs="+", default=None, metavar="L",
        help="layers drawn in the attention maps, from 0 (default: all layers)",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=_positive, default=32, help="sentences (pairs of --data, lines of --text) per batch"
    )
    p.add_argument(
        "--names", nargs="+", default=None, metavar="NAME",
        help="one name per checkpoint for the report (default: several checkpoints are named by their run "
        "folders, one by its attention, e.g. 'learned α')",
    )  # fmt: skip
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (report.html, metrics.json)")
    p.set_defaults(func=run_analyze)
    return p


def add_analyze_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` sub-command to the subparsers of the top-level ``adasparse`` parser."""
    p = subparsers.add_parser(
        "analyze", help="attention statistics, figures and an HTML report for checkpoints",
        formatter_class=HelpFormatter,
    )  # fmt: skip
    return _configure(p)


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser for ``python -m adasparse.analysis.cli``."""
    return _configure(
        argparse.ArgumentParser(
            prog="adasparse analyze",
            description="Attention statistics, figures and a self-contained HTML report for one or several checkpoints.",
            formatter_class=HelpFormatter,
        )
    )


def analyze_checkpoints(
    checkpoints: Sequence[str | Path],
    src_lines: Sequence[str],
    tgt_lines: Sequence[str],
    out_dir: str | Path,
    *,
    sentences: Sequence[int] | None = None,
    map_layers: Sequence[int] | None = None,
    batch_size: int = 32,
    names: Sequence[str] | None = None,
):
    """Analyse one or several translation checkpoints on the same pairs and write one report; returns the report
    object (``.html_path``, ``.summary``). ``names`` (one per checkpoint) replace the default names (see
    :func:`_run_names`). Out-of-range ``sentences`` or ``map_layers``, language-model checkpoints (see
    :func:`analyze_lm_checkpoints`) or a mix of both kinds raise ``ValueError``."""
    return _analyze(
        checkpoints,
        lambda c: load_checkpoint_for_analysis(c, src_lines, tgt_lines, batch_size=batch_size),
        "translation",
        f"there are only {len(src_lines)} sentence pairs",
        len(src_lines),
        out_dir,
        sentences=sentences,
        map_layers=map_layers,
        names=names,
    )


def analyze_lm_checkpoints(
    checkpoints: Sequence[str | Path],
    lines: Sequence[str],
    out_dir: str | Path,
    *,
    sentences: Sequence[int] | None = None,
    map_layers: Sequence[int] | None = None,
    batch_size: int = 32,
    names: Sequence[str] | None = None,
):
    """:func:`analyze_checkpoints` for language-model checkpoints on the same text ``lines`` (one sequence each,
    see :func:`load_lm_checkpoint_for_analysis`); ``sentences`` are line indices. Translation checkpoints, or a
    mix of both kinds, raise ``ValueError``."""
    return _analyze(
        checkpoints,
        lambda c: load_lm_checkpoint_for_analysis(c, lines, batch_size=batch_size),
        "lm",
        f"--text has only {len(lines)} lines",
        len(lines),
        out_dir,
        sentences=sentences,
        map_layers=map_layers,
        names=names,
    )


def _load_sources(
    checkpoints: Sequence[str | Path], load: Callable[[str | Path], AnalysisSource], kind: str
) -> list[AnalysisSource]:
    """``load`` every checkpoint; checkpoints of the other kind raise one error: the loader's when all are of that
    kind, else one naming a checkpoint of each kind (a report compares models of one kind)."""
    sources, wrong = [], []
    for c in checkpoints:
        try:
            sources.append((c, load(c)))
        except CheckpointKindError as e:
            wrong.append((c, e))
    if wrong and sources:
        (c_bad, e), (c_ok, _) = wrong[0], sources[0]
        option = _KINDS[kind][1].split()[0]
        raise ValueError(
            f"{option}: {c_bad} is {_KINDS[e.kind][0]} but {c_ok} is {_KINDS[kind][0]}; a report compares models "
            f"of one kind: analyze the language models with --text FILE and the translation models with --data SRC "
            "TGT, in two reports"
        )
    if wrong:
        raise wrong[0][1]
    return [s for _, s in sources]


def _analyze(
    checkpoints: Sequence[str | Path],
    load: Callable[[str | Path], AnalysisSource],
    kind: str,
    too_few: str,
    n_sentences: int,
    out_dir: str | Path,
    *,
    sentences: Sequence[int] | None,
    map_layers: Sequence[int] | None,
    names: Sequence[str] | None,
):
    """The report of :func:`analyze_checkpoints` / :func:`analyze_lm_checkpoints`: ``load`` gives each
    checkpoint's source, ``too_few`` says how many sentences there are (the message of a bad ``--sentence``)."""
    from .report import write_report  # matplotlib only when needed

    if names is not None and (len(names) != len(checkpoints) or len(set(names)) != len(names)):
        raise ValueError(f"--names: give {len(checkpoints)} distinct names, one per checkpoint; got {list(names)}")
    if sentences is not None:
        bad = [i for i in sentences if i >= n_sentences]
        if bad:
            raise ValueError(f"--sentence {' '.join(map(str, bad))}: {too_few} (0–{n_sentences - 1})")
    keep = sentences if sentences is not None else [i for i in DEFAULT_MAP_SENTENCES if i < n_sentences]
    sources = _load_sources(checkpoints, load, kind)
    if map_layers is not None:
        for c, source in zip(checkpoints, sources):
            most = max((source.layers or {}).values(), default=None)
            bad = [li for li in map_layers if most is not None and li >= most]
            if bad:
                counts = ", ".join(f"{n} {t}" for t, n in source.layers.items())
                raise ValueError(
                    f"--map-layers {' '.join(map(str, bad))}: {c} has {counts} layers (layer indices 0–{most - 1})"
                )
    labels = list(names) if names is not None else _run_names(checkpoints, sources)
    results = [
        analyze_attention(s.batches, name=n, alpha=s.alpha, alpha_log=s.alpha_log, keep_sentences=keep)
        for s, n in zip(sources, labels)
    ]
    return write_report(results, out_dir, map_layers=map_layers)


def _run_names(checkpoints: Sequence[str | Path], sources: Sequence[AnalysisSource]) -> list[str]:
    """One checkpoint: its attention ("learned α"). Several: their run folders ("m30k-softmax"), then
    ``run/step_N`` where two come from the same run, then a counter for the same checkpoint given twice."""
    if len(sources) == 1:
        return [sources[0].name]

    def folder(c, s) -> Path:
        p = Path(s.path) if s.path is not None else Path(c)
        return p.parent.parent if p.parent.name == "checkpoints" else p

    runs = [folder(c, s) for c, s in zip(checkpoints, sources)]
    first = [r.name or str(r) for r in runs]
    names = [
        f"{run.name}/{Path(s.path).name}" if first.count(n) > 1 and s.path is not None and Path(s.path) != run else n
        for n, run, s in zip(first, runs, sources)
    ]
    out, seen = [], {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def run_analyze(args: argparse.Namespace) -> int:
    """Run the analysis for parsed arguments; prints the summary and the report's path."""
    if args.max_sentences is not None:
        bad = [i for i in (args.sentence or []) if i >= args.max_sentences]
        if bad:
            raise ValueError(
                f"--sentence {' '.join(map(str, bad))}: beyond --max-sentences {args.max_sentences} "
                f"(sentence indices 0–{args.max_sentences - 1})"
            )
    options = dict(sentences=args.sentence, map_layers=args.map_layers, batch_size=args.batch_size, names=args.names)
    if args.text is not None:  # a language model
        lines = read_text(args.text, args.max_sentences)
        report = analyze_lm_checkpoints(args.checkpoints, lines, args.out, **options)
    else:
        src_lines, tgt_lines = read_parallel(args.data[0], args.data[1], args.max_sentences)
        try:
            report = analyze_checkpoints(args.checkpoints, src_lines, tgt_lines, args.out, **options)
        except TooLongError as e:
            raise ValueError(f"--data {args.data[0]} {args.data[1]}: {e}") from None
    print(report.summary)
    print(f"report: {report.html_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as e:  # bad options or files, damaged checkpoints: one line, exit status 2
        print(f"adasparse analyze: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
