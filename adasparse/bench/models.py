"""Benchmark of whole models: forward + backward time of the ``small`` encoder–decoder with α-entmax
attention (learned α, 1.5-entmax, sparsemax) against the same model with softmax attention (CPU).

Every candidate is timed interleaved with the softmax model in the same process (same weights
apart from the α parameters, same batch) and reported as a ratio of medians, plus tokens per second
(target tokens).  The paper's implementation trained at 75% of softmax's tokens/s with learned α
(1.5-entmax: 90%); a ratio of 1.33 here corresponds to that 75%.

Run: ``adasparse bench models`` or ``python -m adasparse.bench.models`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from ..models import Seq2SeqTransformer, count_parameters, small, summary, tiny

CANDIDATES = ["learned", "entmax15", "sparsemax"]


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


def _fmt(r: dict) -> str:
    return (
        f"{r['model']:<18} fwd+bwd {r['ms']:8.1f} ms  softmax {r['softmax_ms']:8.1f} ms  {r['ratio']:5.2f}x  "
        f"{r['tok_s']:8.0f} tok/s ({100 / r['ratio']:.0f}% of softmax's {r['softmax_tok_s']:.0f})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="adasparse bench models", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["small", "tiny"], default="small")
    ap.add_argument("--attention", nargs="+", default=CANDIDATES, help=f"normalizers to compare (default {CANDIDATES})")
    ap.add_argument("--batch", type=int, default=32, help="sentences per batch (default 32)")
    ap.add_argument("--src-len", type=int, default=20)
    ap.add_argument("--tgt-len", type=int, default=20)
    ap.add_argument("--reps", type=int, default=15, help="timed repetitions per candidate (default 15)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="tiny preset, few reps (smoke run)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset, reps, warmup = ("tiny", 3, 1) if args.quick else (args.preset, args.reps, args.warmup)
    attention = [float(a) if a.replace(".", "", 1).isdigit() else a for a in args.attention]
    print(
        f"# adasparse bench models: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, float32, forward+backward (label-smoothed loss), "
        f"batch {args.batch}x{args.src_len}->{args.tgt_len} tokens, medians of {reps} interleaved reps"
    )
    run(preset, attention, args.batch, args.src_len, args.tgt_len, reps, warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
