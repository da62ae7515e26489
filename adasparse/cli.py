"""The ``adasparse`` command. Thin: it parses arguments and calls the library.

Sub-commands: ``train``, ``translate``, ``evaluate``, ``demo``, ``analyze``, ``bench``.
``torchrun --nproc_per_node=N -m adasparse train ...`` runs ``train`` on N processes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from ._argparse import HelpFormatter
from .ops.normalizers import LEARNED, NORMALIZERS


class _StderrHandler(logging.Handler):
    """The library's warnings (a damaged checkpoint skipped, a stale lock taken over...) as one line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"adasparse: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:  # pragma: no cover - a closed stderr
            self.handleError(record)


def _setup_logging() -> None:
    logger = logging.getLogger("adasparse")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler(logging.WARNING))


def _fail(msg: str) -> int:
    print(f"adasparse: error: {msg}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from .train.config import load_train_config, parse_overrides
    from .train.trainer import TrainingDiverged, saved_train_options, train

    if args.resume and args.overwrite:
        return _fail(
            "--resume and --overwrite contradict each other: --resume continues the run in --out, "
            "--overwrite deletes it and starts again; give one of them"
        )
    overrides = parse_overrides(args.set)
    keys = (
        "task",
        "text_suffix",
        "preset",
        "attention",
        "data_dir",
        "src_lang",
        "tgt_lang",
        "train_src",
        "train_tgt",
        "valid_src",
        "valid_tgt",
        "recipe",
    )
    for key in (*keys, "seed"):
        v = getattr(args, key)
        if v is not None:
            overrides[key] = v
    if args.attention is not None:  # "1.3" means α = 1.3
        overrides["attention"] = parse_overrides([f"attention={args.attention}"])["attention"]
    # --resume: the run's own options (from its newest checkpoint); what is given again must agree with them,
    # except the options a resumed run may change (RESUMABLE_OPTIONS), checked by the trainer
    base = saved_train_options(args.out) if args.resume else None
    cfg = load_train_config(args.config, overrides, base=base)
    if args.resume and base is None and cfg.data_dir is None and cfg.train_src is None:
        return _fail(f"--resume: {args.out} holds no checkpoint to resume, and no --data or --src/--tgt was given")
    try:
        result = train(cfg, args.out, resume=args.resume, quiet=args.quiet, overwrite=args.overwrite)
    except KeyboardInterrupt:  # checkpoints are written atomically: the last complete one is intact
        from .train.checkpoint import CheckpointManager

        try:
            last = CheckpointManager(args.out, create=False).latest()
        except (OSError, ValueError):
            last = None
        where = f"the last checkpoint is {last}" if last else "no checkpoint was written yet"
        print(f"\nadasparse train: interrupted; {where}. Continue with the same command and --resume.", file=sys.stderr)
        return 130
    except TrainingDiverged as e:  # the run failed (not a usage error): exit status 1
        print(f"adasparse train: error: {e}", file=sys.stderr)
        return 1
    print(f"finished at step {result.step} ({result.stopped_because}); best checkpoint: {result.best_checkpoint}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an encoder–decoder model on a parallel corpus, or a language model on text (--task lm)",
        description="Train a sequence-to-sequence Transformer (or, with --task lm, a decoder-only language model) "
        "with α-entmax attention. Options come from "
        "--config (YAML/JSON), then --set key=value overrides, then the flags below; with --resume they come from "
        "the run's checkpoint and only the run-length and runtime options may change (see "
        "adasparse.train.config.RESUMABLE_OPTIONS). Defaults left unset scale to the data: vocab_size, "
        "warmup_steps and log_every.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--config", help="YAML or JSON file of training options, the fields of adasparse.train.config.TrainConfig "
        "(default: its defaults)",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override an option, value as YAML (repeatable), e.g. --set lr=5e-4 --set model.d_model=128",
    )  # fmt: skip
    p.add_argument(
        "--task", choices=["translation", "lm"],
        help="translation: an encoder–decoder on a parallel corpus; lm: a decoder-only language model on a text "
        "folder (default: translation)",
    )  # fmt: skip
    p.add_argument(
        "--data", dest="data_dir",
        help="corpus folder: train/valid/test files per language, or with --task lm train.txt, valid.txt, "
        "optionally test.txt (plain or .gz, one document or sentence per line)",
    )  # fmt: skip
    p.add_argument(
        "--text-suffix", dest="text_suffix",
        help="--task lm: the extension of the text files in --data, e.g. en for one side of a translation corpus "
        "(default: txt)",
    )  # fmt: skip
    p.add_argument(
        "--src-lang", dest="src_lang", help="source language suffix in --data, e.g. de (default: from "
        "corpus.json, or the other of two languages)",
    )  # fmt: skip
    p.add_argument("--tgt-lang", dest="tgt_lang", help="target language suffix in --data, e.g. en (as --src-lang)")
    p.add_argument("--src", dest="train_src", help="training source file (plain or .gz), instead of --data")
    p.add_argument("--tgt", dest="train_tgt", help="training target file, with --src")
    p.add_argument("--valid-src", dest="valid_src", help="validation source file, with --src and --valid-tgt")
    p.add_argument("--valid-tgt", dest="valid_tgt", help="validation target file, with --valid-src")
    p.add_argument("--preset", choices=["tiny", "small", "base"], help="model size (default: small)")
    p.add_argument(
        "--recipe",
        choices=["paper"],
        help="a named set of training options beneath --config and --set: 'paper' = Correia et al. (2019): "
        "noam (factor 2, 8,000 warmup), Adam β2 0.998, 8,192-token batches, dropout 0.1, no clipping "
        "(default: none, the TrainConfig defaults)",
    )
    p.add_argument(
        "--attention", help=f"{' | '.join(NORMALIZERS)} | a number α, in every attention (default: {LEARNED})",
    )  # fmt: skip
    p.add_argument("--seed", type=int, help="seed of the initialisation, batching and dropout (default: 1)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, tensorboard/)")
    p.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out from its newest intact checkpoint, with its own options",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="delete the checkpoints already in --out and start again")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages (warnings and errors remain)")
    p.set_defaults(func=_train)


# ---------------------------------------------------------------------------------------------- translate


def _read_input(path: str | None) -> list[str]:
    """Lines of a file, or of stdin for ``-``: the same UTF-8 decoding and error message either way."""
    from .data.corpus import decode_lines, read_lines

    if path in (None, "-"):
        buffer = getattr(sys.stdin, "buffer", None)  # bytes: the locale's decoder would let bad bytes through
        if buffer is None:  # a text stream put in place of stdin (tests, embedding)
            return [line.strip() for line in sys.stdin]
        return list(decode_lines(buffer, "<stdin>"))
    return read_lines(path)


def _write_output(path: str | None, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path in (None, "-"):
        sys.stdout.write(text)
        return
    from pathlib import Path

    from ._io import atomic_write_text

    folder = Path(path).parent
    if not folder.is_dir():
        raise FileNotFoundError(f"--output {path}: the folder {folder} does not exist")
    atomic_write_text(path, text)


def _search_config(args: argparse.Namespace):
    from .decode.search import SearchConfig

    if args.batch_tokens < 1:
        raise ValueError(f"--batch-tokens must be >= 1, got {args.batch_tokens}")

    return SearchConfig(
        beam_size=args.beam,
        length_penalty=args.length_penalty,
        max_len_ratio=args.max_len_ratio,
        max_len_offset=args.max_len_offset,
    )


def _add_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True,
        help="checkpoint folder, or run folder (its best checkpoint, else its latest)",
    )  # fmt: skip
    p.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam scores divided by length ** this")
    p.add_argument(
        "--max-len-ratio", type=float, default=1.5, help="max output length = ratio · source length + offset"
    )
    p.add_argument("--max-len-offset", type=int, default=10, help="the offset of --max-len-ratio")
    p.add_argument("--batch-tokens", type=int, default=4096, help="source tokens per decoding batch")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def _load(args: argparse.Namespace):
    from .train.loading import load_model, pick_device

    return load_model(args.checkpoint, pick_device(args.device))


def _translate(args: argparse.Namespace) -> int:
    from .decode.translate import translate_lines

    model, toks, _ = _load(args)
    lines = _read_input(args.input)
    hyps = translate_lines(model, toks, lines, _search_config(args), max_tokens=args.batch_tokens)
    _write_output(args.output, hyps)
    return 0


def _add_translate(sub) -> None:
    p = sub.add_parser(
        "translate", help="translate text with a trained checkpoint (greedy or beam search)",
        description="Translate one sentence per line; a blank line gives a blank line.", formatter_class=HelpFormatter,
    )  # fmt: skip
    _add_search_args(p)
    p.add_argument("--input", default="-", help="source text, UTF-8, one sentence per line (default: - = stdin)")
    p.add_argument("--output", default="-", help="where to write translations (default: - = stdout)")
    p.set_defaults(func=_translate)


# ---------------------------------------------------------------------------------------------- evaluate


def _evaluate(args: argparse.Namespace) -> int:
    from .data.corpus import read_lines
    from .evaluation import score_g2p, score_translation

    refs = read_lines(args.ref)
    if args.hyp:
        hyps = read_lines(args.hyp)
    else:
        from .decode.translate import translate_lines

        if not args.src:
            return _fail("evaluate: give --src (to translate with --checkpoint) or --hyp (existing outputs)")
        if not args.checkpoint:
            return _fail("evaluate: --src needs --checkpoint (the model that translates it)")
        srcs = read_lines(args.src)
        if len(srcs) != len(refs):  # before decoding, which can take long
            return _fail(f"evaluate: {args.src} has {len(srcs)} lines but {args.ref} has {len(refs)}")
        model, toks, _ = _load(args)
        hyps = translate_lines(model, toks, srcs, _search_config(args), max_tokens=args.batch_tokens)
        if args.output:
            _write_output(args.output, hyps)
    if len(hyps) != len(refs):
        return _fail(f"evaluate: {len(hyps)} hypotheses vs {len(refs)} references in {args.ref}")
    print(score_translation(hyps, refs))
    if args.task == "g2p":
        print(score_g2p(hyps, refs))
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a test set: sacreBLEU BLEU + chrF (and WER/PER for g2p)", formatter_class=HelpFormatter
    )
    _add_search_args(p)
    p.set_defaults(checkpoint=None)
    for a in p._actions:
        if a.dest == "checkpoint":
            a.required = False
    p.add_argument("--src", help="test sources to translate with --checkpoint")
    p.add_argument("--ref", required=True, help="references, one per line")
    p.add_argument("--hyp", help="score these outputs instead of translating")
    p.add_argument("--output", help="also write the translations here")
    p.add_argument(
        "--task", choices=["translation", "g2p"], default="translation", help="g2p adds word and phone error rates"
    )
    p.set_defaults(func=_evaluate)


# ---------------------------------------------------------------------------------------------- demo, bench


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .train.config import parse_overrides

    return run_demo(
        data_dir=args.data,
        out=args.out,
        minutes=args.minutes,
        seed=args.seed,
        src_lang=args.src_lang,
        tgt_lang=args.tgt_lang,
        overrides=parse_overrides(args.set),
    )


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: train a small learned-α model on CMUdict grapheme-to-phoneme, evaluate, report",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", help="use your own parallel corpus folder instead of the embedded CMUdict data")
    p.add_argument("--src-lang", help="source language suffix in --data (when the folder does not say)")
    p.add_argument("--tgt-lang", help="target language suffix in --data")
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--minutes", type=float, default=6.5, help="training time budget in minutes")
    p.add_argument("--seed", type=int, default=1, help="seed of the split, the initialisation and the batching")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override one of the demo's training options, as in `adasparse train` (repeatable), "
        "e.g. --set alpha_lr_scale=10 --set max_steps=1100",
    )  # fmt: skip
    p.set_defaults(func=_demo)


def _bench(args: argparse.Namespace) -> int:
    import importlib

    mod = importlib.import_module(f".bench.{args.what}", __package__)
    return mod.main(args.rest)


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="run a benchmark and print a table of ratios", formatter_class=HelpFormatter)
    b.add_argument(
        "what",
        choices=["ops", "models", "attention", "length"],
        help="ops: mappings vs torch.softmax; models: model fwd+bwd vs softmax model; attention: GPU kernel; "
        "length: length generalisation of tiny decoder-only models on synthetic tasks",
    )
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark (see --help there)")
    b.set_defaults(func=_bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adasparse",
        description="Adaptively sparse Transformers (α-entmax attention).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"adasparse {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_translate(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    try:
        from .analysis.cli import add_analyze_parser
    except ImportError:  # pragma: no cover - analysis is part of the package
        pass
    else:
        add_analyze_parser(sub)
    _add_bench(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .train.lock import RunLockedError

    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RunLockedError) as e:  # bad values; missing/unreadable paths; a run folder in use
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
