"""GPU benchmark of the fused α-entmax attention kernel: forward + backward time and peak memory.

Candidates, on the same inputs (q, k, v of shape (B, H, L, D), default H = 16, D = 64, bfloat16):

* ``sdpa-flash``: ``torch.nn.functional.scaled_dot_product_attention`` restricted to the flash backend
  (softmax; the speed to match);
* ``triton learned α``: :func:`adasparse.kernels.triton_entmax_attention.triton_entmax_attention` with one
  α per head, ``α = clamp(1 + sigmoid(θ), 1.01, 2)``, θ ~ N(0, 1), gradient to θ included;
* ``triton α=1.5``: the same kernel with a fixed α = 1.5 (no α gradient);
* ``adasplash α=1.5``: ``adasplash.adasplash`` (fixed α only), when the package is installed;
* ``reference learned α``: materialised scores + :func:`adasparse.entmax` + ``@ v`` (runs out of memory at
  long sequences; reported as ``OOM``).

Times are medians of CUDA-event timings of one forward + backward, candidates interleaved round-robin after
warm-up; the table also gives each time as a multiple of ``sdpa-flash`` at the same length. Peak memory is
``torch.cuda.max_memory_allocated`` during one step beyond what was allocated before it. "empty blocks" is
the measured fraction of (query block, key block) tiles with no non-zero weight in the kernel's block mask
(for the α = 1.5 rows, the same mask AdaSplash would skip at equal tile sizes).

Run: ``python -m adasparse.bench.attention`` (``--help`` for options). Needs a CUDA GPU and Triton.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

DEFAULT_SEQ_LENS = (1024, 2048, 4096, 8192, 16384, 32768)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class BenchConfig:
    """What to run; built from the command line by :func:`parse_config`."""

    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS
    batch: int = 1
    heads: int = 16
    head_dim: int = 64
    dtype: str = "bf16"
    causal: bool = False
    q_scale: float = 1.0
    reps: int = 20
    warmup: int = 3
    seed: int = 0
    reference: bool = True
    adasplash: bool = True
    check: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adasparse bench attention",
        description="Fused α-entmax attention (Triton) vs SDPA-flash, the reference path and AdaSplash "
        "(forward + backward time, peak memory, empty-block fraction). Needs a CUDA GPU.",
    )
    p.add_argument("--seq-lens", type=int, nargs="+", default=list(DEFAULT_SEQ_LENS), help="sequence lengths")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    p.add_argument("--causal", action="store_true", help="causal self-attention")
    p.add_argument(
        "--q-scale", type=float, default=1.0, help="multiply q by this (sharper scores give sparser attention)"
    )
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per candidate")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-reference", action="store_true", help="skip the materialised reference path")
    p.add_argument("--no-adasplash", action="store_true", help="skip adasplash even when it is installed")
    p.add_argument("--no-check", action="store_true", help="skip the accuracy check against the reference")
    return p


def parse_config(argv: list[str] | None) -> BenchConfig:
    a = build_parser().parse_args(argv)
    for name in ("batch", "heads", "head_dim", "reps"):
        if getattr(a, name) < 1:
            raise SystemExit(f"adasparse bench attention: --{name.replace('_', '-')} must be >= 1")
    if any(n < 1 for n in a.seq_lens):
        raise SystemExit(f"adasparse bench attention: sequence lengths must be >= 1, got {a.seq_lens}")
    return BenchConfig(
        seq_lens=tuple(a.seq_lens), batch=a.batch, heads=a.heads, head_dim=a.head_dim, dtype=a.dtype,
        causal=a.causal, q_scale=a.q_scale, reps=a.reps, warmup=a.warmup, seed=a.seed,
        reference=not a.no_reference, adasplash=not a.no_adasplash, check=not a.no_check,
    )  # fmt: skip


def _adasplash_fn() -> Callable | None:
    try:
        from adasplash import adasplash
    except ImportError:
        return None
    return adasplash


def _reference(q, k, v, alpha, causal: bool):
    """Materialised (B, H, L, L) scores, then adasparse.entmax and @ v."""
    from adasparse import entmax

    z = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, L, L)
    if causal:
        L = q.shape[2]
        keep = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        z = z.masked_fill(~keep, float("-inf"))
    return entmax(z, alpha.view(1, -1, 1, 1), dim=-1) @ v


def _candidates(cfg: BenchConfig, theta: torch.Tensor) -> dict[str, Callable]:
    """Each candidate maps (q, k, v) → out; gradients flow to q, k, v (and θ for learned α)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from adasparse.kernels.triton_entmax_attention import triton_entmax_attention

    def learned_alpha():
        return (1 + torch.sigmoid(theta)).clamp(1.01, 2.0)  # (H,)

    def sdpa(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=cfg.causal)

    c: dict[str, Callable] = {
        "sdpa-flash": sdpa,
        "triton learned α": lambda q, k, v: triton_entmax_attention(q, k, v, learned_alpha(), is_causal=cfg.causal),
        "triton α=1.5": lambda q, k, v: triton_entmax_attention(q, k, v, 1.5, is_causal=cfg.causal),
    }
    ada = _adasplash_fn() if cfg.adasplash else None
    if ada is not None:
        c["adasplash α=1.5"] = lambda q, k, v: ada(q, k, v, alpha=1.5, niter=10, is_causal=cfg.causal, varlen=None)
    if cfg.reference:
        c["reference learned α"] = lambda q, k, v: _reference(q, k, v, learned_alpha(), cfg.causal)
    return c


def _inputs(cfg: BenchConfig, L: int, device: torch.device):
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    shape = (cfg.batch, cfg.heads, L, cfg.head_dim)  # (B, H, L, D)
    dt = _DTYPES[cfg.dtype]
    q = (torch.randn(shape, generator=g, device=device) * cfg.q_scale).to(dt).requires_grad_(True)
    k = torch.randn(shape, generator=g, device=device).to(dt).requires_grad_(True)
    v = torch.randn(shape, generator=g, device=device).to(dt).requires_grad_(True)
    do = torch.randn(shape, generator=g, device=device).to(dt)
    return q, k, v, do


def _step(fn, q, k, v, do, theta) -> None:
    for x in (q, k, v, theta):
        x.grad = None
    fn(q, k, v).backward(do)


def _time_ms(fn, q, k, v, do, theta) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    _step(fn, q, k, v, do, theta)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def _peak_mib(fn, q, k, v, do, theta) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _step(fn, q, k, v, do, theta)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _empty_fraction(q, k, v, alpha, causal: bool) -> float:
    from adasparse.kernels.triton_entmax_attention import triton_entmax_attention_forward

    with torch.no_grad():
        return triton_entmax_attention_forward(q, k, v, alpha, is_causal=causal).empty_block_fraction


def _accuracy(cfg: BenchConfig, theta: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Relative errors of the kernel vs the float32 reference on a short sequence (sanity check on GPU)."""
    from adasparse.kernels.triton_entmax_attention import triton_entmax_attention

    L = min(512, min(cfg.seq_lens))
    q, k, v, do = _inputs(cfg, L, device)
    th = theta.detach().clone().requires_grad_(True)
    alpha = (1 + torch.sigmoid(th)).clamp(1.01, 2.0)
    out = triton_entmax_attention(q, k, v, alpha, is_causal=cfg.causal)
    got = (out, *torch.autograd.grad(out, (q, k, v, th), do))
    qf, kf, vf = (x.detach().float().requires_grad_(True) for x in (q, k, v))
    th2 = theta.detach().clone().requires_grad_(True)
    ref = _reference(qf, kf, vf, (1 + torch.sigmoid(th2)).clamp(1.01, 2.0), cfg.causal)
    want = (ref, *torch.autograd.grad(ref, (qf, kf, vf, th2), do.float()))
    names = ("out", "dq", "dk", "dv", "dθ")
    return {
        n: ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()
        for n, a, b in zip(names, got, want)
    }


def run(cfg: BenchConfig) -> list[dict]:
    """Time every candidate at every length; return one dict per (length, candidate)."""
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(cfg.seed)
    theta = torch.randn(cfg.heads, generator=g).to(device).requires_grad_(True)  # learned-α logits
    cands = _candidates(cfg, theta)
    rows: list[dict] = []
    for L in cfg.seq_lens:
        q, k, v, do = _inputs(cfg, L, device)
        alive = dict(cands)
        times: dict[str, list[float]] = {n: [] for n in cands}
        peaks: dict[str, float] = {}
        status: dict[str, str] = {}
        for name, fn in list(alive.items()):  # warm-up (Triton compilation) and peak memory, OOM-guarded
            try:
                for _ in range(cfg.warmup):
                    _step(fn, q, k, v, do, theta)
                peaks[name] = _peak_mib(fn, q, k, v, do, theta)
            except torch.cuda.OutOfMemoryError:
                del alive[name]
                status[name] = "OOM"
                torch.cuda.empty_cache()
            except (RuntimeError, ValueError, TypeError) as e:  # e.g. a backend that rejects the shape/dtype
                del alive[name]
                status[name] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
                torch.cuda.empty_cache()
        for _ in range(cfg.reps):  # interleaved
            for name, fn in alive.items():
                times[name].append(_time_ms(fn, q, k, v, do, theta))
        with torch.no_grad():
            learned = (1 + torch.sigmoid(theta)).clamp(1.01, 2.0)
        empty = {
            "triton learned α": _empty_fraction(q, k, v, learned, cfg.causal),
            "triton α=1.5": _empty_fraction(q, k, v, 1.5, cfg.causal),
        }
        empty["adasplash α=1.5"] = empty["triton α=1.5"]
        base = statistics.median(times["sdpa-flash"]) if times["sdpa-flash"] else math.nan
        for name in cands:
            ms = statistics.median(times[name]) if times[name] else math.nan
            rows.append(
                dict(
                    L=L, candidate=name, ms=ms, ratio=ms / base, peak_mib=peaks.get(name, math.nan),
                    empty=empty.get(name), status=status.get(name, "ok"),
                )
            )  # fmt: skip
        del q, k, v, do
        torch.cuda.empty_cache()
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| L | candidate | fwd+bwd ms | × sdpa-flash | peak MiB | empty blocks |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['L']} | {r['candidate']} | {r['status']} | – | – | – |")
            continue
        empty = "–" if r["empty"] is None else f"{100 * r['empty']:.1f}%"
        lines.append(
            f"| {r['L']} | {r['candidate']} | {r['ms']:.3f} | {r['ratio']:.2f} | {r['peak_mib']:.0f} | {empty} |"
        )
    return "\n".join(lines)


def _versions() -> str:
    import triton

    parts = [
        f"GPU {torch.cuda.get_device_name()}",
        f"torch {torch.__version__}",
        f"triton {triton.__version__}",
        f"python {platform.python_version()}",
    ]
    try:
        from importlib.metadata import version

        parts.append(f"adasplash {version('adasplash')}")
    except Exception:  # noqa: BLE001 - not installed
        parts.append("adasplash not installed")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv)
    if not torch.cuda.is_available():
        print(
            "adasparse bench attention: no CUDA GPU available (torch.cuda.is_available() is False); this "
            "benchmark times the Triton kernel on a GPU and cannot run on CPU. Correctness on CPU: "
            "pytest -m triton tests/kernels (Triton interpreter).",
            file=sys.stderr,
        )
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print("adasparse bench attention: the triton package is not installed (pip install triton)", file=sys.stderr)
        return 2
    print(f"# adasparse bench attention — {_versions()}")
    print(
        f"# B={cfg.batch} H={cfg.heads} D={cfg.head_dim} {cfg.dtype} causal={cfg.causal} q_scale={cfg.q_scale} "
        f"reps={cfg.reps} (median of CUDA-event times, interleaved)"
    )
    if cfg.check:
        theta = torch.randn(cfg.heads, generator=torch.Generator().manual_seed(cfg.seed))
        errs = _accuracy(cfg, theta.cuda(), torch.device("cuda"))
        print("# accuracy vs float32 reference (relative): " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))
    print(format_table(run(cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
