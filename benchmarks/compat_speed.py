"""``python -m benchmarks.compat_speed``: ``adasparse.compat.entmax`` against the ``entmax`` package, CPU time.

Forward + backward (``(f(x) * w).sum().backward()`` with a fixed random ``w``) of the same call through both,
in one process, interleaved (package, compat, package, ...), medians over ``--reps`` repetitions after one
warm-up each. float32 inputs ``x ~ N(0, 1)`` of ``--shape`` (default (64, 128, 128): B·H = 64 rows of 128 queries
over 128 keys), on ``--threads`` threads (default 1). The losses take the same numbers as (rows, classes) =
(64·128, 128). Prints one row per call: both medians and the package / compat ratio (> 1: compat is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def _cases(pkg, compat, shape):
    rows = shape[0] * shape[1] if len(shape) == 3 else shape[0]
    head_alpha = torch.linspace(1.1, 1.9, shape[0]).view(shape[0], *([1] * (len(shape) - 1)))
    target = torch.randint(0, shape[-1], (rows,), generator=torch.Generator().manual_seed(1))
    loss_x = (rows, shape[-1])

    def per_head(m):
        return lambda x, a: m.entmax_bisect(x, a)

    return [
        # (name, input shape, function of the module, extra argument needing grad or None)
        ("entmax15", shape, lambda m: lambda x: m.entmax15(x), None),
        ("sparsemax", shape, lambda m: lambda x: m.sparsemax(x), None),
        ("entmax_bisect α=1.5", shape, lambda m: lambda x: m.entmax_bisect(x, 1.5), None),
        ("entmax_bisect α=1.3", shape, lambda m: lambda x: m.entmax_bisect(x, 1.3), None),
        ("entmax_bisect per-head α (grad)", shape, per_head, head_alpha),
        ("sparsemax_bisect", shape, lambda m: lambda x: m.sparsemax_bisect(x), None),
        ("normmax_bisect α=2", shape, lambda m: lambda x: m.normmax_bisect(x, 2), None),
        ("entmax_bisect α=3 (own solver)", shape, lambda m: lambda x: m.entmax_bisect(x, 3.0), None),
        ("budget_bisect budget=2 (own solver)", shape, lambda m: lambda x: m.budget_bisect(x, 2), None),
        ("entmax15_loss", loss_x, lambda m: lambda x: m.entmax15_loss(x, target), None),
        ("sparsemax_loss", loss_x, lambda m: lambda x: m.sparsemax_loss(x, target), None),
        ("entmax_bisect_loss α=1.5", loss_x, lambda m: lambda x: m.entmax_bisect_loss(x, target, 1.5), None),
    ]


def _time(fn, x, extra, w) -> float:
    x = x.detach().requires_grad_()
    args = (x,) if extra is None else (x, extra.detach().requires_grad_())
    t0 = time.perf_counter()
    out = fn(*args)
    (out * w).sum().backward()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs="+", default=[64, 128, 128])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="run only the calls whose name contains this text")
    args = ap.parse_args(argv)
    try:
        import entmax as pkg
    except ImportError:
        print("the entmax package is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 1
    import adasparse.compat.entmax as compat

    torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    print(f"torch {torch.__version__}, entmax {pkg.__version__}, {args.threads} thread(s), float32, reps {args.reps}")
    print(f"{'call':40s} {'shape':>16s} {'package ms':>11s} {'compat ms':>10s} {'package/compat':>15s}")
    for name, s, make, extra in _cases(pkg, compat, shape):
        if args.only and args.only not in name:
            continue
        g = torch.Generator().manual_seed(0)
        x = torch.randn(s, generator=g)
        fp, fc = make(pkg), make(compat)
        with torch.no_grad():
            out_shape = fc(x, extra).shape if extra is not None else fc(x).shape
        w = torch.randn(out_shape, generator=g)
        times = {"p": [], "c": []}
        _time(fp, x, extra, w), _time(fc, x, extra, w)  # warm-up (and the CPU kernels' first build)
        for _ in range(args.reps):
            times["p"].append(_time(fp, x, extra, w))
            times["c"].append(_time(fc, x, extra, w))
        tp, tc = statistics.median(times["p"]) * 1e3, statistics.median(times["c"]) * 1e3
        print(f"{name:40s} {str(tuple(s)):>16s} {tp:11.1f} {tc:10.1f} {tp / tc:14.1f}×", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
