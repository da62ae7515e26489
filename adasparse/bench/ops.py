"""Benchmark of the α-entmax mappings against ``torch.softmax`` (forward + backward, CPU).

Every candidate is timed interleaved with ``torch.softmax`` in the same process and reported
as a ratio of medians, so that a noisy shared machine still gives comparable figures. Peak
extra memory (bytes allocated beyond the input during forward + backward, from the
PyTorch profiler's allocation events) is reported as a multiple of the input's size.

Run: ``adasparse bench ops`` or ``python -m benchmarks.ops`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from .. import entmax, entmax15, sparsemax

SHAPES = [(64, 128, 128), (8, 512, 512)]


def _candidates(with_package: bool) -> dict[str, Callable]:
    """Each candidate maps (x, alpha_per_head) → probabilities."""
    c: dict[str, Callable] = {
        "softmax": lambda x, a: torch.softmax(x, -1),
        "entmax15": lambda x, a: entmax15(x),
        "sparsemax": lambda x, a: sparsemax(x),
        "entmax α=1.3": lambda x, a: entmax(x, 1.3),
        "entmax learned α (8,1,1)": lambda x, a: entmax(x.view(8, -1, *x.shape[1:]), a.view(8, 1, 1, 1)).view_as(x),
    }
    if with_package:
        try:
            import entmax as pkg  # the deep-spin package, as an independent reference
        except ImportError:
            pass
        else:
            c["pkg entmax15"] = lambda x, a: pkg.entmax15(x, -1)
            c["pkg sparsemax"] = lambda x, a: pkg.sparsemax(x, -1)
            c["pkg bisect α=1.3"] = lambda x, a: pkg.entmax_bisect(x, 1.3, -1)
            c["pkg bisect learned α"] = lambda x, a: pkg.entmax_bisect(
                x.view(8, -1, *x.shape[1:]), a.view(8, 1, 1, 1).expand(8, x.shape[0] // 8, x.shape[1], 1), -1
            ).view_as(x)
    return c


def _step(fn, x, a, g):
    x.grad = None
    a.grad = None
    fn(x, a).backward(g)


def _time(fn, x, a, g) -> float:
    t = time.perf_counter()
    _step(fn, x, a, g)
    return time.perf_counter() - t


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what native code writes to fd 2 (the profiler's per-session "USDT: profiler_start" lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_extra_bytes(fn, x, a, g) -> int:
    """Peak bytes allocated during forward+backward beyond what existed before (profiler events)."""
    _step(fn, x, a, g)  # warm
    x.grad = None
    a.grad = None
    acts = [torch.profiler.ProfilerActivity.CPU]
    with _quiet_native_stderr(), torch.profiler.profile(activities=acts, profile_memory=True) as prof:
        _step(fn, x, a, g)
    # every event's own allocations (+) and frees (−), in time order; the running sum peaks at the answer
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak


def parse_alphas(text: str) -> list[float]:
    """``--alphas``: one α for every head, or 8 comma-separated values (one per head), each in [1, ∞)."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--alphas must be numbers separated by commas, got {text!r}") from None
    if len(vals) not in (1, 8):
        raise ValueError(f"--alphas takes 1 value or 8 (one per head), got {len(vals)}: {text!r}")
    if any(not (v >= 1.0 and v < float("inf")) for v in vals):
        raise ValueError(f"--alphas values must be finite and >= 1, got {text!r}")
    return vals * 8 if len(vals) == 1 else vals


def run(
    shapes, reps: int, warmup: int, with_package: bool, memory: bool, alphas: list[float] | None = None
) -> list[dict]:
    rows = []
    for shape in shapes:
        torch.manual_seed(0)
        x = torch.randn(shape, requires_grad=True)
        g = torch.randn(shape)
        a = torch.tensor(alphas or [1.3] * 8, requires_grad=True)  # the per-head α of "learned α"
        cands = _candidates(with_package)
        ref = cands["softmax"]
        for name, fn in cands.items():
            for _ in range(warmup):
                _step(fn, x, a, g)
                _step(ref, x, a, g)
            tc, tr = [], []
            for _ in range(reps):  # interleaved
                tr.append(_time(ref, x, a, g))
                tc.append(_time(fn, x, a, g))
            mc, mr = statistics.median(tc), statistics.median(tr)
            row = {"shape": shape, "name": name, "ms": mc * 1e3, "softmax_ms": mr * 1e3, "ratio": mc / mr}
            if memory:
                nbytes = x.numel() * x.element_size()
                row["mem_x_input"] = peak_extra_bytes(fn, x, a, g) / nbytes
                row["softmax_mem_x_input"] = peak_extra_bytes(ref, x, a, g) / nbytes
            rows.append(row)
            print(_fmt(row), flush=True)
    return rows


def _fmt(r: dict) -> str:
    s = f"{str(r['shape']):>16} {r['name']:<26} {r['ms']:8.2f} ms  {r['ratio']:6.2f}x softmax ({r['softmax_ms']:.2f} ms)"
    if "mem_x_input" in r:
        s += f"  peak mem {r['mem_x_input']:.1f}x input (softmax {r['softmax_mem_x_input']:.1f}x)"
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="adasparse bench ops", description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30, help="timed repetitions per candidate (default 30)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-package", action="store_true", help="skip the `entmax` package even if installed")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="small shape, few reps (smoke run)")
    ap.add_argument(
        "--alphas",
        default="1.3",
        help="the per-head α of the 'learned α' rows: one value for all 8 heads or 8 comma-separated (default 1.3)",
    )
    args = ap.parse_args(argv)
    try:
        alphas = parse_alphas(args.alphas)
    except ValueError as e:
        ap.error(str(e))
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [(16, 32, 32)] if args.quick else SHAPES
    reps = 3 if args.quick else args.reps
    print(
        f"# adasparse bench ops: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, float32, forward+backward, medians of {reps} interleaved reps; "
        f"learned α per head: {', '.join(f'{a:g}' for a in alphas)}"
    )
    run(shapes, reps, 1 if args.quick else args.warmup, not args.no_package, not args.no_memory, alphas)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
