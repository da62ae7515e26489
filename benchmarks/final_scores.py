"""Test scores of finished runs, seeds pooled, each system against a baseline, paired (issue 14).

Each system is one or more run folders (seeds); each run's best checkpoint translates the test set once (the
outputs are kept in ``--out`` beside a note of the checkpoint and search that made them, and reused while those
match). G2P: WER and PER per run, their mean over seeds with the spread between seeds, and the paired difference
against the baseline (``adasparse.evaluation.compare_g2p``: runs averaged word by word, ± one paired standard
error over words). Translation: BLEU and chrF per run and sacreBLEU's paired bootstrap of each run against the
baseline's run of the same position (``compare_translation``).

    python benchmarks/final_scores.py --task g2p --src runs/g2p-data/test.graphemes --ref runs/g2p-data/test.phonemes \\
      --beam 4 --out runs/g2p-test softmax=runs/g2p-softmax "learned sigmoid=runs/g2p-learned-sigmoid,runs/g2p-learned-sigmoid-s2"
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from adasparse._io import atomic_write_json, atomic_write_text
from adasparse.data.corpus import read_lines
from adasparse.decode.search import SearchConfig
from adasparse.decode.translate import translate_lines
from adasparse.evaluation import compare_g2p, compare_translation, score_g2p, score_translation
from adasparse.train.loading import load_model


def _system(spec: str) -> tuple[str, list[Path]]:
    name, sep, runs = spec.partition("=")
    if not sep or not name or not runs:
        raise SystemExit(f"final_scores: a system is NAME=RUN[,RUN...], got {spec!r}")
    paths = [Path(r) for r in runs.split(",")]
    for p in paths:
        if not p.is_dir():
            raise SystemExit(f"final_scores: {p} (system {name!r}) is not a run folder")
    return name, paths


def _outputs(run: Path, srcs: list[str], search: SearchConfig, out: Path, tag: str) -> tuple[list[str], int]:
    """The run's best checkpoint's outputs on ``srcs`` (cached in ``out``), and the checkpoint's step."""
    model, toks, ckpt = load_model(run)
    key = {"checkpoint": str(ckpt.path.resolve()), "step": ckpt.step, "search": vars(search), "n_src": len(srcs)}
    hyp_file, key_file = out / f"{tag}.txt", out / f"{tag}.json"
    if hyp_file.exists() and key_file.exists() and json.loads(key_file.read_text()) == key:
        return read_lines(hyp_file), ckpt.step
    t0 = time.perf_counter()
    hyps = translate_lines(model, toks, srcs, search)
    print(f"  {tag}: step {ckpt.step}, {len(srcs)} lines in {time.perf_counter() - t0:.0f} s", flush=True)
    atomic_write_text(hyp_file, "".join(h + "\n" for h in hyps))
    atomic_write_json(key_file, key)
    return hyps, ckpt.step


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("systems", nargs="+", help="NAME=RUN[,RUN...]; the first is the baseline unless --baseline")
    ap.add_argument("--task", choices=["g2p", "translation"], required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--baseline", help="the system the others are compared with (default: the first)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the outputs (reused while they match)")
    args = ap.parse_args(argv)

    systems = dict(_system(s) for s in args.systems)
    base = args.baseline or next(iter(systems))
    if base not in systems:
        raise SystemExit(f"final_scores: --baseline {base!r} is none of the systems {list(systems)}")
    srcs, refs = read_lines(args.src), read_lines(args.ref)
    if len(srcs) != len(refs):
        raise SystemExit(f"final_scores: {args.src} has {len(srcs)} lines but {args.ref} has {len(refs)}")
    args.out.mkdir(parents=True, exist_ok=True)
    search = SearchConfig(beam_size=args.beam)
    outs: dict[str, list[tuple[list[str], int]]] = {}
    for name, runs in systems.items():
        outs[name] = [_outputs(r, srcs, search, args.out, f"{name.replace(' ', '_')}-{i}") for i, r in enumerate(runs)]

    print(f"\n{len(refs)} test lines, beam {args.beam}; baseline: {base}\n")
    if args.task == "g2p":
        print("| system | runs (best step) | test WER per run | WER mean (spread) | PER mean | vs baseline: WER, PER |")
        print("|---|---|---|---|---|---|")
        for name, res in outs.items():
            scores = [score_g2p(h, refs) for h, _ in res]
            wers = [s.wer for s in scores]
            spread = f" (± {statistics.stdev(wers):.2f} sd)" if len(wers) > 1 else f" ± {scores[0].wer_se:.2f}"
            cmp = "—"
            if name != base:
                c = compare_g2p([h for h, _ in res], [h for h, _ in outs[base]], refs)
                cmp = f"{c.wer_diff:+.2f} ± {c.wer_diff_se:.2f} (p = {c.wer_p:.2g}), {c.per_diff:+.2f} ± {c.per_diff_se:.2f}"
            steps = ", ".join(f"{s:,}" for _, s in res)
            print(
                f"| {name} | {len(res)} ({steps}) | {' / '.join(f'{w:.2f}' for w in wers)} | "
                f"{statistics.fmean(wers):.2f}{spread} | {statistics.fmean(s.per for s in scores):.2f} | {cmp} |"
            )
        print("\n± for one run: one standard error over words; vs baseline: ± one paired standard error over words")
    else:
        print("| system | run (best step) | test BLEU | chrF | vs baseline (paired bootstrap) |")
        print("|---|---|---|---|---|")
        signature = ""
        for name, res in outs.items():
            for i, (h, step) in enumerate(res):
                s = score_translation(h, refs)
                signature = s.bleu_signature
                cmp = "—"
                if name != base:
                    c = compare_translation(h, outs[base][min(i, len(outs[base]) - 1)][0], refs)
                    cmp = (
                        f"BLEU {c.bleu - c.baseline_bleu:+.2f} (p = {c.bleu_p:.2g}), "
                        f"chrF {c.chrf - c.baseline_chrf:+.2f} (p = {c.chrf_p:.2g})"
                    )
                print(f"| {name} | {i} ({step:,}) | {s.bleu:.2f} | {s.chrf:.2f} | {cmp} |")
        print(f"\nsacreBLEU signature: {signature}")


if __name__ == "__main__":
    main()
