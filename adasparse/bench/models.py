"""Benchmark of whole models: forward + backward time of the ``small`` encoder–decoder with α-entmax
attention (learned α, 1.5-entmax, sparsemax) against the same model with softmax attention (CPU), or with
``--model lm`` of the ``small_lm`` decoder-only model (learned α with learned length scaling, …) against the
softmax decoder-only model with the same positions.

Every candidate is timed interleaved with the softmax model in the same process (same weights
apart from the α and scaling parameters, same batch) and reported as a ratio of medians, plus tokens per
second (target tokens).  The paper's implementation trained at 75% of softmax's tokens/s with learned α
(1.5-entmax: 90%); a ratio of 1.33 here corresponds to that 75%.

Decoder-only candidates are ``NORMALIZER`` or ``NORMALIZER+SCALING`` (``SCALING`` one of ``learned``,
``ssmax``; see :mod:`adasparse.nn.length_scaling`), e.g. ``learned+learned`` = learned α with learned
``δ + β·log n`` scaling.

Run: ``adasparse bench models [--model lm]`` or ``python -m adasparse.bench.models`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from ..models import (
    DecoderOnlyTransformer,
    Seq2SeqTransformer,
    count_parameters,
    small,
    small_lm,
    summary,
    tiny,
    tiny_lm,
)
from ..nn.length_scaling import LENGTH_SCALINGS

CANDIDATES = ["learned", "entmax15", "sparsemax"]
LM_CANDIDATES = ["learned+learned", "learned", "entmax15+learned"]


def _batch(cfg, batch: int, src_len: int, tgt_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, cfg.src_vocab_size, (batch, src_len), generator=g)
    tgt = torch.randint(3, cfg.tgt_vocab_size, (batch, tgt_len + 1), generator=g)
    tgt[:, 0] = cfg.bos_id
    return src, tgt[:, :-1], tgt[:, 1:]


def _step(model, src, tgt_in, tgt_out) -> None:
    model.zero_grad(set_to_none=True)
    loss, _ = model.loss(model(src, tgt_in), tgt_out)
    loss.backward()


def _time(model, batch) -> float:
    t = time.perf_counter()
    _step(model, *batch)
    return time.perf_counter() - t


def run(
    preset: str, candidates: list[str], batch: int, src_len: int, tgt_len: int, reps: int, warmup: int
) -> list[dict]:
    make = {"small": small, "tiny": tiny}[preset]
    torch.manual_seed(0)
    ref = Seq2SeqTransformer(make("softmax")).train()
    print(f"# reference: {summary(ref)}")
    data = _batch(ref.config, batch, src_len, tgt_len)
    n_tok = batch * tgt_len
    rows = []
    for name in candidates:
        model = Seq2SeqTransformer(make(name)).train()
        model.load_state_dict(ref.state_dict(), strict=False)  # same weights; α parameters stay as initialised
        for _ in range(warmup):
            _step(ref, *data)
            _step(model, *data)
        tc, tr = [], []
        for _ in range(reps):  # interleaved
            tr.append(_time(ref, data))
            tc.append(_time(model, data))
        mc, mr = statistics.median(tc), statistics.median(tr)
        row = {
            "model": f"{preset}/{name}",
            "params": count_parameters(model),
            "ms": mc * 1e3,
            "softmax_ms": mr * 1e3,
            "ratio": mc / mr,
            "tok_s": n_tok / mc,
            "softmax_tok_s": n_tok / mr,
        }
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


def parse_lm_candidate(spec: str) -> tuple[str | float, str]:
    """``"NORMALIZER[+SCALING]"`` → ``(normalizer, length_scaling)``; a number means a fixed α."""
    norm, _, scaling = spec.partition("+")
    scaling = scaling or "none"
    if scaling not in LENGTH_SCALINGS:
        raise ValueError(f"length scaling {scaling!r} in {spec!r} is not one of {list(LENGTH_SCALINGS)}")
    return (float(norm) if norm.replace(".", "", 1).isdigit() else norm), scaling


def _lm_step(model, tokens) -> None:
    model.zero_grad(set_to_none=True)
    loss, _ = model.loss(model(tokens[:, :-1]), tokens[:, 1:])
    loss.backward()


def run_lm(
    preset: str, candidates: list[str], batch: int, seq_len: int, positions: str, reps: int, warmup: int
) -> list[dict]:
    """Decoder-only: each candidate vs the softmax model with the same positions, no scaling, same weights."""
    make = {"small": small_lm, "tiny": tiny_lm}[preset]
    specs = [parse_lm_candidate(c) for c in candidates]  # errors before any timing
    torch.manual_seed(0)
    ref = DecoderOnlyTransformer(make("softmax", positions=positions, max_len=max(seq_len + 1, 16))).train()
    print(f"# reference: {summary(ref)}")
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, ref.config.vocab_size, (batch, seq_len + 1), generator=g)
    n_tok = batch * seq_len
    rows = []
    for name, (norm, scaling) in zip(candidates, specs):
        cfg = make(norm, positions=positions, length_scaling=scaling, max_len=max(seq_len + 1, 16))
        model = DecoderOnlyTransformer(cfg).train()
        model.load_state_dict(ref.state_dict(), strict=False)  # same weights; α and δ, β stay as initialised
        for _ in range(warmup):
            _lm_step(ref, tokens)
            _lm_step(model, tokens)
        tc, tr = [], []
        for _ in range(reps):  # interleaved
            t = time.perf_counter()
            _lm_step(ref, tokens)
            tr.append(time.perf_counter() - t)
            t = time.perf_counter()
            _lm_step(model, tokens)
            tc.append(time.perf_counter() - t)
        mc, mr = statistics.median(tc), statistics.median(tr)
        row = {
            "model": f"{preset}_lm/{positions}/{name}",
            "params": count_parameters(model),
            "ms": mc * 1e3,
            "softmax_ms": mr * 1e3,
            "ratio": mc / mr,
            "tok_s": n_tok / mc,
            "softmax_tok_s": n_tok / mr,
        }
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


def _fmt(r: dict) -> str:
    return (
        f"{r['model']:<30} fwd+bwd {r['ms']:8.1f} ms  softmax {r['softmax_ms']:8.1f} ms  {r['ratio']:5.2f}x  "
        f"{r['tok_s']:8.0f} tok/s ({100 / r['ratio']:.0f}% of softmax's {r['softmax_tok_s']:.0f})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="adasparse bench models", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", choices=["seq2seq", "lm"], default="seq2seq",
        help="seq2seq: the encoder-decoder preset; lm: the decoder-only preset (small_lm / tiny_lm)",
    )  # fmt: skip
    ap.add_argument("--preset", choices=["small", "tiny"], default="small")
    ap.add_argument(
        "--attention", nargs="+", default=None,
        help=f"normalizers to compare (default {CANDIDATES}; with --model lm NORMALIZER[+SCALING], "
        f"default {LM_CANDIDATES})",
    )  # fmt: skip
    ap.add_argument("--batch", type=int, default=None, help="sentences per batch (default 32; lm: 16)")
    ap.add_argument("--src-len", type=int, default=20)
    ap.add_argument("--tgt-len", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=128, help="lm: tokens per sequence (default 128)")
    ap.add_argument("--positions", choices=["rope", "none", "sinusoidal"], default="rope", help="lm: positions")
    ap.add_argument("--reps", type=int, default=15, help="timed repetitions per candidate (default 15)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="tiny preset, few reps (smoke run)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset, reps, warmup = ("tiny", 3, 1) if args.quick else (args.preset, args.reps, args.warmup)
    if args.model == "lm":
        batch = args.batch or 16
        candidates = args.attention or LM_CANDIDATES
        try:
            for c in candidates:
                parse_lm_candidate(c)
        except ValueError as e:
            ap.error(str(e))
        print(
            f"# adasparse bench models --model lm: torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{platform.processor() or platform.machine()}, float32, forward+backward (label-smoothed LM loss), "
            f"batch {batch}x{args.seq_len} tokens, {args.positions} positions, medians of {reps} interleaved reps"
        )
        run_lm(preset, candidates, batch, args.seq_len, args.positions, reps, warmup)
        return 0
    batch = args.batch or 32
    attention = [float(a) if a.replace(".", "", 1).isdigit() else a for a in (args.attention or CANDIDATES)]
    print(
        f"# adasparse bench models: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, float32, forward+backward (label-smoothed loss), "
        f"batch {batch}x{args.src_len}->{args.tgt_len} tokens, medians of {reps} interleaved reps"
    )
    run(preset, attention, batch, args.src_len, args.tgt_len, reps, warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
