"""The ``adasparse`` command. Thin: it parses arguments and calls the library.

Sub-commands:

* ``train``: an encoder–decoder on a parallel corpus, or (``--task lm``) a decoder-only language model on text;
* ``translate``: greedy or beam search with an encoder–decoder checkpoint;
* ``evaluate``: BLEU and chrF (WER and PER for g2p) of translations (``--src``/``--hyp`` with ``--ref``), or the
  perplexity of a language-model checkpoint on a text (``--text``);
* ``generate``: continue prompts with a language-model checkpoint (greedy, or sampling with temperature, top-k,
  top-p), on the KV cache;
* ``demo``: train, evaluate and report a learned-α model on CMUdict grapheme-to-phoneme;
* ``analyze``: α, density, head diversity and roles of a trained checkpoint;
* ``bench``: benchmarks that print tables of time ratios.

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
    if result.interrupted_by:  # SIGINT / SIGTERM: checkpointed at the last update
        print(
            f"adasparse train: {result.stopped_because} at step {result.step}; a checkpoint of that step was written. "
            "Continue with the same command and --resume.",
            file=sys.stderr,
        )
        return 128 + result.interrupted_by  # the shell's convention: 130, 143
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


def _check_output(path: str | None) -> None:
    """``--output`` can be written (its folder exists and is writable, it is not a folder): checked before the
    decoding, which can take long, and again when writing."""
    if path in (None, "-"):
        return
    import os
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"--output {path} is a folder; give a file name (e.g. {p / 'output.txt'})")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"--output {path}: the folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--output {path}: the folder {p.parent} is not writable")


def _write_output(path: str | None, lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    if path in (None, "-"):
        sys.stdout.write(text)
        return
    from ._io import atomic_write_text

    _check_output(path)
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


_CHECKPOINT_HELP = "checkpoint folder, or run folder (its best checkpoint, else its latest)"
# the search options' defaults (evaluate --text refuses other values: it does not search)
_SEARCH_DEFAULTS = {"beam": 5, "length_penalty": 1.0, "max_len_ratio": 1.5, "max_len_offset": 10}


def _add_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help=_CHECKPOINT_HELP)
    d = _SEARCH_DEFAULTS
    p.add_argument("--beam", type=int, default=d["beam"], help="beam size (1 = greedy)")
    p.add_argument(
        "--length-penalty", type=float, default=d["length_penalty"], help="beam scores divided by length ** this"
    )
    p.add_argument(
        "--max-len-ratio", type=float, default=d["max_len_ratio"],
        help="max output length = ratio · source length + offset",
    )  # fmt: skip
    p.add_argument("--max-len-offset", type=int, default=d["max_len_offset"], help="the offset of --max-len-ratio")
    p.add_argument("--batch-tokens", type=int, default=4096, help="source tokens per decoding batch")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")


def _load(args: argparse.Namespace):
    from .train.loading import load_model, pick_device

    return load_model(args.checkpoint, pick_device(args.device))


def _is_lm(model) -> bool:
    """Whether a loaded model is a decoder-only language model (``adasparse train --task lm``)."""
    from .models.config import DecoderOnlyConfig

    return isinstance(model.config, DecoderOnlyConfig)


def _lm_refused(command: str, ckpt) -> str:
    return (
        f"{command}: {ckpt.path} is a language model (adasparse train --task lm), which does not translate; "
        "measure its perplexity with `adasparse evaluate --text FILE` or continue text with `adasparse generate`"
    )


def _seq2seq_refused(command: str, ckpt) -> str:
    return (
        f"{command}: {ckpt.path} is an encoder–decoder (translation) checkpoint, not a language model "
        "(adasparse train --task lm); use `adasparse translate`, or `adasparse evaluate --src ... --ref ...`"
    )


def _translate(args: argparse.Namespace) -> int:
    from .decode.translate import translate_lines

    model, toks, ckpt = _load(args)
    if _is_lm(model):
        return _fail(_lm_refused("translate", ckpt))
    lines = _read_input(args.input)
    _check_output(args.output)
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
    if args.text is not None:
        return _evaluate_text(args)
    if args.json:
        return _fail("evaluate: --json prints the perplexity figures of --text; translation scores print as text")
    if args.ref is None:
        return _fail(
            "evaluate: give --ref FILE (references, with --src to translate or --hyp for existing outputs) to score "
            "translations, or --text FILE to measure a language model's perplexity"
        )
    return _evaluate_translation(args)


def _evaluate_translation(args: argparse.Namespace) -> int:
    from .data.corpus import read_lines
    from .evaluation import score_g2p, score_translation

    refs = read_lines(args.ref)
    if not args.hyp:
        _check_output(args.output)
    baseline = None
    if args.baseline is not None:  # checked before decoding, which can take long
        baseline = read_lines(args.baseline)
        if len(baseline) != len(refs):
            return _fail(
                f"evaluate: --baseline {args.baseline} has {len(baseline)} lines but {args.ref} has {len(refs)}"
            )
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
        model, toks, ckpt = _load(args)
        if _is_lm(model):
            return _fail(_lm_refused("evaluate --src", ckpt))
        hyps = translate_lines(model, toks, srcs, _search_config(args), max_tokens=args.batch_tokens)
        if args.output:
            _write_output(args.output, hyps)
    if len(hyps) != len(refs):
        return _fail(f"evaluate: {len(hyps)} hypotheses vs {len(refs)} references in {args.ref}")
    print(score_translation(hyps, refs))
    if args.task == "g2p":
        print(score_g2p(hyps, refs))
    if baseline is not None:
        from .evaluation import compare_g2p, compare_translation

        print(f"against --baseline {args.baseline}: {compare_translation(hyps, baseline, refs)}")
        if args.task == "g2p":
            print(f"against --baseline {args.baseline}: {compare_g2p([hyps], [baseline], refs)}")
    return 0


def _evaluate_text(args: argparse.Namespace) -> int:
    """``evaluate --text``: perplexity of a language-model checkpoint (:func:`~adasparse.decode.score_text`)."""
    from .data.text import load_text
    from .decode.perplexity import score_text

    given = [f"--{k}" for k in ("ref", "src", "hyp", "output", "baseline") if getattr(args, k) is not None]
    if args.task != "translation":
        given.append(f"--task {args.task}")
    given += [f"--{k.replace('_', '-')}" for k, v in _SEARCH_DEFAULTS.items() if getattr(args, k) != v]
    if given:
        return _fail(
            f"evaluate: --text (perplexity of a language model) cannot be combined with {', '.join(given)} "
            "(translation scoring); give --text alone, or drop it to score translations"
        )
    if not args.checkpoint:
        return _fail("evaluate: --text needs --checkpoint (the language model that scores it)")
    if args.batch_tokens < 1:
        raise ValueError(f"--batch-tokens must be >= 1, got {args.batch_tokens}")
    lines = [line for line in _read_input(args.text) if line] if args.text == "-" else load_text(args.text)
    if not lines:
        name = "<stdin>" if args.text == "-" else args.text
        return _fail(f"evaluate --text: {name} holds no text (only blank lines); there is nothing to score")
    model, toks, ckpt = _load(args)
    if not _is_lm(model):
        return _fail(_seq2seq_refused("evaluate --text", ckpt))
    scores = score_text(model, toks, lines, max_tokens=args.batch_tokens)
    if args.json:
        import json

        print(json.dumps(scores.as_dict()))
    else:
        print(scores.summary())
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a test set: sacreBLEU BLEU + chrF (and WER/PER for g2p), or a language model's perplexity "
        "(--text)",
        description="Two modes. Translation: --ref with --src (translated with --checkpoint) or --hyp (existing "
        "outputs) prints BLEU and chrF. Language model: --checkpoint of `adasparse train --task lm` with --text "
        "prints the perplexity per token and per byte (bits per byte) of the text, one document or sentence per "
        "line (see adasparse.decode.perplexity).",
        formatter_class=HelpFormatter,
    )  # fmt: skip
    _add_search_args(p)
    p.set_defaults(checkpoint=None)
    for a in p._actions:
        if a.dest == "checkpoint":
            a.required = False
        if a.dest == "batch_tokens":
            a.help = "tokens per batch: source tokens when translating, padded inputs with --text"
    p.add_argument("--src", help="test sources to translate with --checkpoint")
    p.add_argument("--ref", help="references, one per line (translation mode: required)")
    p.add_argument("--hyp", help="score these outputs instead of translating")
    p.add_argument("--output", help="also write the translations here")
    p.add_argument(
        "--baseline",
        help="another system's outputs on the same test set: also print the paired comparison, system − baseline "
        "(sacreBLEU's paired bootstrap for BLEU and chrF; with --task g2p, WER and PER differences with paired "
        "standard errors; adasparse.evaluation.compare_translation / compare_g2p)",
    )
    p.add_argument(
        "--task", choices=["translation", "g2p"], default="translation", help="g2p adds word and phone error rates"
    )
    p.add_argument(
        "--text",
        help="measure the perplexity of the language model --checkpoint on this text: UTF-8, plain or .gz, one "
        "document or sentence per line (blank lines skipped); - = stdin",
    )
    p.add_argument(
        "--json", action="store_true",
        help="with --text: print the figures as one JSON object (nll, n_tokens, n_bytes, n_lines, n_split, "
        "token_perplexity, bits_per_byte, byte_perplexity) instead of a sentence",
    )  # fmt: skip
    p.set_defaults(func=_evaluate)


# ---------------------------------------------------------------------------------------------- generate


_SAMPLING_OPTIONS = ("temperature", "top_k", "top_p")


def _generation_config(args: argparse.Namespace):
    """The :class:`~adasparse.decode.GenerationConfig` of ``generate``'s options; its ``ValueError`` names the
    option (``--top-p must be in (0, 1], got 0.0``)."""
    from .decode.generation import GenerationConfig

    given = {k: getattr(args, k) for k in _SAMPLING_OPTIONS if getattr(args, k) is not None}
    if args.method == "greedy" and given:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        raise ValueError(
            f"generate: {flags} {'applies' if len(given) == 1 else 'apply'} only to --method sample, and the method "
            "is greedy (the most likely token, always): add --method sample"
        )
    try:
        return GenerationConfig(method=args.method, seed=args.seed, **given)
    except ValueError as e:  # "top_p must be ..." → "--top-p must be ..."
        field, _, rest = str(e).partition(" ")
        if field not in (*_SAMPLING_OPTIONS, "method", "seed"):
            raise
        rest = rest.replace(" or None", "")  # top_k=None is not an option value
        raise ValueError(f"generate: --{field.replace('_', '-')} {rest}") from None


def _generate(args: argparse.Namespace) -> int:
    from .decode.generation import generate_text

    cfg = _generation_config(args)
    if args.max_new_tokens < 0:
        raise ValueError(f"generate: --max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise ValueError(f"generate: --batch-size must be >= 1, got {args.batch_size}")
    if args.prompt is not None:
        prompts = args.prompt
    elif args.input is not None:
        prompts = _read_input(args.input)
    else:
        prompts = [""]  # one text from scratch
    _check_output(args.output)
    model, toks, ckpt = _load(args)
    if not _is_lm(model):
        return _fail(_seq2seq_refused("generate", ckpt))
    texts = generate_text(
        model, toks, prompts, args.max_new_tokens, cfg, batch_size=args.batch_size, include_prompt=args.include_prompt
    )
    _write_output(args.output, [t.replace("\r", " ").replace("\n", " ") for t in texts])  # one line per prompt
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="continue text with a language-model checkpoint (greedy, or sampling with temperature, top-k, top-p)",
        description="Continue each prompt with a checkpoint of `adasparse train --task lm`, on the model's KV cache; "
        "one output line per prompt, in order, the continuation only (with --include-prompt: the prompt and its "
        "continuation). Without --prompt or --input, one text is generated from scratch. Sampling applies the "
        "temperature, then top-k, then top-p (see adasparse.decode.generation); it is reproducible for a --seed and "
        "the same prompts and --batch-size.",
        formatter_class=HelpFormatter,
    )  # fmt: skip
    p.add_argument("--checkpoint", required=True, help=_CHECKPOINT_HELP)
    given = p.add_mutually_exclusive_group()
    given.add_argument(
        "--prompt", action="append",
        help='a text to continue (repeatable: one output line each; "" = from scratch)',
    )  # fmt: skip
    given.add_argument(
        "--input",
        help="prompts, UTF-8, plain or .gz, one per line (a blank line is an empty prompt: text from scratch); "
        "- = stdin",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=50,
        help="most tokens added to each prompt, the end-of-sequence token included (a model with sinusoidal "
        "positions stops at its max_len)",
    )  # fmt: skip
    p.add_argument(
        "--method", choices=["greedy", "sample"], default="greedy",
        help="greedy: the most likely token; sample: draw from the model's distribution, shaped by the options below",
    )  # fmt: skip
    p.add_argument(
        "--temperature", type=float,
        help="with --method sample: divide the logits by this, >= 0 (0 = greedy) (default: 1.0)",
    )  # fmt: skip
    p.add_argument(
        "--top-k", type=int,
        help="with --method sample: draw among the k most likely tokens; 0 = all (default: 50, as Hugging Face's)",
    )  # fmt: skip
    p.add_argument(
        "--top-p", type=float,
        help="with --method sample: draw in the nucleus, the most likely tokens of total probability p, 0 < p <= 1 "
        "(default: 1.0, all)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (unused by greedy)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts generated together (sorted by length)")
    p.add_argument(
        "--include-prompt", action="store_true",
        help="write each prompt followed by its continuation (default: the continuation only)",
    )  # fmt: skip
    p.add_argument("--output", default="-", help="where to write the texts, one line per prompt (default: - = stdout)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.set_defaults(func=_generate)


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
    _add_generate(sub)
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
    except KeyboardInterrupt:  # Ctrl-C (train and demo say what they checkpointed themselves)
        print(f"\nadasparse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
