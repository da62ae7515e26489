"""The ``adasparse`` command. Thin: it parses arguments and calls the library.

Sub-commands: ``train``, ``translate``, ``evaluate``, ``demo``, ``analyze``, ``bench``.
``torchrun --nproc_per_node=N -m adasparse train ...`` runs ``train`` on N processes.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _fail(msg: str) -> int:
    print(f"adasparse: error: {msg}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------------------------------- train


def _train(args: argparse.Namespace) -> int:
    from .train.config import load_train_config, parse_overrides
    from .train.trainer import train

    overrides = parse_overrides(args.set)
    keys = (
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
    cfg = load_train_config(args.config, overrides)
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
    print(f"finished at step {result.step} ({result.stopped_because}); best checkpoint: {result.best_checkpoint}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an encoder–decoder model on a parallel corpus",
        description="Train a sequence-to-sequence Transformer with α-entmax attention. Options come from "
        "--config (YAML/JSON), then --set key=value overrides, then the flags below.",
    )
    p.add_argument("--config", help="YAML or JSON file of training options (see adasparse.train.config)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override an option (repeatable)")
    p.add_argument("--data", dest="data_dir", help="folder with train/valid/test files per language")
    p.add_argument("--src-lang", dest="src_lang", help="source language suffix in --data (e.g. de)")
    p.add_argument("--tgt-lang", dest="tgt_lang", help="target language suffix in --data (e.g. en)")
    p.add_argument("--src", dest="train_src", help="training source file (plain or .gz)")
    p.add_argument("--tgt", dest="train_tgt", help="training target file")
    p.add_argument("--valid-src", dest="valid_src")
    p.add_argument("--valid-tgt", dest="valid_tgt")
    p.add_argument("--preset", choices=["tiny", "small", "base"])
    p.add_argument(
        "--recipe",
        choices=["paper"],
        help="a named set of training options beneath --config and --set: 'paper' = Correia et al. (2019): "
        "noam (factor 2, 8,000 warmup), Adam β2 0.998, 8,192-token batches, dropout 0.1, no clipping",
    )
    p.add_argument("--attention", help="softmax | sparsemax | entmax15 | learned | a number α")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", required=True, help="run folder (checkpoints, log.jsonl, tensorboard/)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete the run folder's checkpoints and start again")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_train)


# ---------------------------------------------------------------------------------------------- translate


def _read_input(path: str | None) -> list[str]:
    if path in (None, "-"):
        return [line.rstrip("\n") for line in sys.stdin]
    from .data.corpus import read_lines

    return read_lines(path)


def _write_output(path: str | None, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path in (None, "-"):
        sys.stdout.write(text)
        return
    from .train.checkpoint import atomic_write_text

    atomic_write_text(path, text)


def _search_config(args: argparse.Namespace):
    from .decode.search import SearchConfig

    return SearchConfig(
        beam_size=args.beam,
        length_penalty=args.length_penalty,
        max_len_ratio=args.max_len_ratio,
        max_len_offset=args.max_len_offset,
    )


def _add_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or run folder (its best checkpoint)")
    p.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy; default 5)")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--max-len-ratio", type=float, default=1.5, help="max output length = ratio·source + offset")
    p.add_argument("--max-len-offset", type=int, default=10)
    p.add_argument("--batch-tokens", type=int, default=4096, help="source tokens per decoding batch")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def _load(args: argparse.Namespace):
    from .train.trainer import load_model, pick_device

    return load_model(args.checkpoint, pick_device(args.device))


def _translate(args: argparse.Namespace) -> int:
    from .decode.translate import translate_lines

    model, toks, _ = _load(args)
    lines = _read_input(args.input)
    hyps = translate_lines(model, toks, lines, _search_config(args), max_tokens=args.batch_tokens)
    _write_output(args.output, hyps)
    return 0


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate text with a trained checkpoint (greedy or beam search)")
    _add_search_args(p)
    p.add_argument("--input", default="-", help="source text, one sentence per line (default: stdin)")
    p.add_argument("--output", default="-", help="where to write translations (default: stdout)")
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
    p = sub.add_parser("evaluate", help="score a test set: sacreBLEU BLEU + chrF (and WER/PER for g2p)")
    _add_search_args(p)
    p.set_defaults(checkpoint=None)
    for a in p._actions:
        if a.dest == "checkpoint":
            a.required = False
    p.add_argument("--src", help="test sources to translate with --checkpoint")
    p.add_argument("--ref", required=True, help="references, one per line")
    p.add_argument("--hyp", help="score these outputs instead of translating")
    p.add_argument("--output", help="also write the translations here")
    p.add_argument("--task", choices=["translation", "g2p"], default="translation")
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
    )
    p.add_argument("--data", help="use your own parallel corpus folder instead of the embedded CMUdict data")
    p.add_argument("--src-lang", help="source language suffix in --data (when the folder does not say)")
    p.add_argument("--tgt-lang", help="target language suffix in --data")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--minutes", type=float, default=6.5, help="training time budget in minutes (default 6.5)")
    p.add_argument("--seed", type=int, default=1)
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
    b = sub.add_parser("bench", help="run a benchmark and print a table of ratios")
    b.add_argument(
        "what",
        choices=["ops", "models", "attention", "length"],
        help="ops: mappings vs torch.softmax; models: model fwd+bwd vs softmax model; attention: GPU kernel; "
        "length: length generalisation of tiny decoder-only models on synthetic tasks",
    )
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark (see --help there)")
    b.set_defaults(func=_bench)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adasparse", description="Adaptively sparse Transformers (α-entmax attention).")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as e:  # bad values; missing, unreadable or unwritable paths
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
