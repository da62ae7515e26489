"""GPU benchmark of the fused α-entmax attention kernel: forward + backward time, peak memory, empty blocks.

Candidates, on the same inputs (q, k, v of shape (B, H, L, D), default H = 16, D = 64, bfloat16):

* ``sdpa-flash``: ``torch.nn.functional.scaled_dot_product_attention`` restricted to the flash backend
  (softmax; the speed to match);
* ``triton learned α``: :func:`adasparse.kernels.triton_entmax_attention.triton_entmax_attention` with one
  α per head, ``α = 1.01 + 0.99 · sigmoid(θ)`` (the default map), θ ~ N(0, 1), gradient to θ included;
* ``triton α=1.5``: the same kernel with a fixed α = 1.5 (no α gradient);
* ``adasplash α=1.5``: ``adasplash.adasplash`` **at its own defaults** (``alpha=1.5, is_causal=...``, no
  ``niter``: its dispatcher sends causal calls to AdaSplash-2 with ``niter=1`` and non-causal ones to v1 with
  ``niter=10``), when the package is installed.  It exposes no block mask, so its empty-block column is "–";
* ``reference learned α``: materialised scores + :func:`adasparse.entmax` + ``@ v``, only up to
  ``--reference-max-len`` (default 4096; it needs the (B, H, L, L) scores).

Inputs (``--inputs``): ``gaussian`` (q·q_scale, k, v ~ N(0, 1): almost no empty blocks) or ``local``: q and k
share a positional random-Fourier-feature code c(i) with ``c(i)·c(j) ≈ (D/2)·exp(−(i−j)²/2ℓ²)`` (ℓ =
``--length-scale``), plus noise, so attention concentrates near the diagonal and most tiles are empty at
α ≥ 1.25 (measured, column "empty blocks": the fraction of reachable (query block, key block) tiles of the
kernel's block mask with no non-zero weight; "passes": key-block visits of the forward divided by the reachable
tiles, i.e. how many full sweeps over K the forward made, all solver iterations included).

Timing: one forward + backward per repetition, CUDA events recorded around the forward and the backward
(``fwd ms`` and ``fwd+bwd ms``), no host synchronisation between them (one ``synchronize`` after all repetitions
of a candidate; the kernel checks α on the device).  Medians.  Each row is printed and flushed as soon as it is
measured, and an error (OOM or any exception) fails that row only.  Repetitions are cut so that a row stays
within ``--row-budget-s`` seconds.  Peak memory: gradients of the previous step freed, then
``reset_peak_memory_stats``, then one step; reported beyond what was allocated before it (inputs, θ).

Run: ``python -m adasparse bench attention`` (``--help`` for options).  Needs a CUDA GPU and Triton; ``--device
cpu`` under ``TRITON_INTERPRET=1`` is a dry run of the whole script at tiny sizes (interpreter times mean nothing).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

DEFAULT_SEQ_LENS = (4096, 32768)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
INPUTS = ("gaussian", "local")
CANDIDATES = ("sdpa-flash", "triton learned α", "triton α=1.5", "adasplash α=1.5", "reference learned α")
_COLUMNS = ("L", "causal", "inputs", "candidate", "fwd ms", "fwd+bwd ms", "× sdpa-flash", "peak MiB", "empty blocks")
_COLUMNS += ("passes", "status")


@dataclass(frozen=True)
class BenchConfig:
    """What to run; built from the command line by :func:`parse_config`."""

    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS
    batch: int = 1
    heads: int = 16
    head_dim: int = 64
    dtype: str = "bf16"
    causal: bool = False
    inputs: str = "gaussian"
    q_scale: float = 1.0
    length_scale: float = 64.0
    reps: int = 10
    warmup: int = 2
    seed: int = 0
    reference_max_len: int = 4096
    adasplash: bool = True
    check: bool = True
    candidates: tuple[str, ...] = CANDIDATES
    row_budget_s: float = 30.0
    device: str = "cuda"
    header: bool = True


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
    p.add_argument("--inputs", choices=INPUTS, default="gaussian", help="gaussian, or local (block-sparse attention)")
    p.add_argument("--q-scale", type=float, default=1.0, help="multiply q by this (sharper scores: sparser)")
    p.add_argument("--length-scale", type=float, default=64.0, help="ℓ of the local inputs, in tokens")
    p.add_argument("--reps", type=int, default=10, help="timed repetitions per candidate (at most)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first compiles)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference-max-len", type=int, default=4096, help="run the reference path up to this length")
    p.add_argument("--no-reference", action="store_true", help="skip the materialised reference path")
    p.add_argument("--no-adasplash", action="store_true", help="skip adasplash even when it is installed")
    p.add_argument("--no-check", action="store_true", help="skip the accuracy check against the reference")
    p.add_argument(
        "--candidates", nargs="+", choices=CANDIDATES, default=list(CANDIDATES), metavar="NAME",
        help=f"which candidates (default all): {', '.join(repr(c) for c in CANDIDATES)}",
    )  # fmt: skip
    p.add_argument("--row-budget-s", type=float, default=30.0, help="cut repetitions to stay within this per row")
    p.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run under TRITON_INTERPRET=1 (tiny sizes)"
    )
    p.add_argument("--no-header", action="store_true", help="do not print the table header (appending runs)")
    return p


def parse_config(argv: list[str] | None) -> BenchConfig:
    a = build_parser().parse_args(argv)
    for name in ("batch", "heads", "head_dim", "reps"):
        if getattr(a, name) < 1:
            raise SystemExit(f"adasparse bench attention: --{name.replace('_', '-')} must be >= 1")
    if any(n < 1 for n in a.seq_lens):
        raise SystemExit(f"adasparse bench attention: sequence lengths must be >= 1, got {a.seq_lens}")
    if a.warmup < 1:
        raise SystemExit("adasparse bench attention: --warmup must be >= 1 (the first step compiles)")
    cands = tuple(dict.fromkeys(a.candidates))  # in the order given (e.g. an autotuning one last)
    if a.no_reference:
        cands = tuple(c for c in cands if c != "reference learned α")
    if a.no_adasplash:
        cands = tuple(c for c in cands if c != "adasplash α=1.5")
    return BenchConfig(
        seq_lens=tuple(a.seq_lens), batch=a.batch, heads=a.heads, head_dim=a.head_dim, dtype=a.dtype,
        causal=a.causal, inputs=a.inputs, q_scale=a.q_scale, length_scale=a.length_scale, reps=a.reps,
        warmup=a.warmup, seed=a.seed, reference_max_len=a.reference_max_len, adasplash="adasplash α=1.5" in cands,
        check=not a.no_check, candidates=cands, row_budget_s=a.row_budget_s, device=a.device, header=not a.no_header,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- inputs


def make_inputs(
    kind: str, B: int, H: int, L: int, D: int, *, q_scale: float = 1.0, length_scale: float = 64.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (B, H, L, D) in float32 on the CPU (deterministic in ``seed``); see the module docstring."""
    if kind not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {kind!r}")
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        q = torch.randn(B, H, L, D, generator=g) * q_scale
        k = torch.randn(B, H, L, D, generator=g)
    else:
        if D < 2:
            raise ValueError(f"local inputs need head_dim >= 2, got {D}")
        pos = torch.arange(L, dtype=torch.float32)
        omega = torch.randn(H, (D + 1) // 2, generator=g) / length_scale  # (H, D/2) frequencies
        ang = pos[None, :, None] * omega[:, None, :]  # (H, L, D/2)
        c = torch.cat([ang.cos(), ang.sin()], -1)[..., :D]  # (H, L, D): c(i)·c(j) ≈ (D/2) exp(−(i−j)²/2ℓ²)
        q = q_scale * (c + 0.5 * torch.randn(B, H, L, D, generator=g))
        k = c + 0.5 * torch.randn(B, H, L, D, generator=g)
    v = torch.randn(B, H, L, D, generator=g)
    return q, k, v


def _inputs(cfg: BenchConfig, L: int, device: torch.device):
    shape = (cfg.batch, cfg.heads, L, cfg.head_dim)  # (B, H, L, D)
    q, k, v = make_inputs(cfg.inputs, *shape, q_scale=cfg.q_scale, length_scale=cfg.length_scale, seed=cfg.seed)
    do = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed + 1))
    dt = _DTYPES[cfg.dtype]
    q, k, v = (x.to(device=device, dtype=dt).requires_grad_(True) for x in (q, k, v))
    return q, k, v, do.to(device=device, dtype=dt)


# ---------------------------------------------------------------------------------------------- candidates


def _adasplash_fn() -> Callable | None:
    try:
        from adasplash import adasplash
    except ImportError:
        return None
    return adasplash


def adasplash_variant(causal: bool) -> str:
    """What ``adasplash.adasplash(q, k, v, alpha=1.5, is_causal=causal)`` runs at its defaults (AdaSplash 0.2)."""
    return "AdaSplash-2, niter=1" if causal else "AdaSplash v1, niter=10"


def _reference(q, k, v, alpha, causal: bool):
    """Materialised (B, H, L, L) scores, then adasparse.entmax and @ v."""
    from adasparse import entmax

    z = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, L, L)
    if causal:
        L = q.shape[2]
        keep = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        z = z.masked_fill(~keep, float("-inf"))
    return entmax(z, alpha.view(1, -1, 1, 1), dim=-1) @ v


def learned_alpha(theta: torch.Tensor) -> torch.Tensor:
    return 1.01 + 0.99 * torch.sigmoid(theta)  # (H,), LearnableAlpha's default map


def _candidates(cfg: BenchConfig, theta: torch.Tensor) -> dict[str, Callable]:
    """Each candidate maps (q, k, v) → out; gradients flow to q, k, v (and θ for learned α)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from adasparse.kernels.triton_entmax_attention import triton_entmax_attention

    def sdpa(q, k, v):
        if q.is_cuda:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=cfg.causal)
        return F.scaled_dot_product_attention(q, k, v, is_causal=cfg.causal)  # CPU dry run: whatever backend

    c: dict[str, Callable] = {
        "sdpa-flash": sdpa,
        "triton learned α": lambda q, k, v: triton_entmax_attention(
            q, k, v, learned_alpha(theta), is_causal=cfg.causal
        ),
        "triton α=1.5": lambda q, k, v: triton_entmax_attention(q, k, v, 1.5, is_causal=cfg.causal),
        "reference learned α": lambda q, k, v: _reference(q, k, v, learned_alpha(theta), cfg.causal),
    }
    ada = _adasplash_fn() if cfg.adasplash else None
    if ada is not None:
        c["adasplash α=1.5"] = lambda q, k, v: ada(q, k, v, alpha=1.5, is_causal=cfg.causal)  # its own defaults
    return {name: c[name] for name in cfg.candidates if name in c}


# ---------------------------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _zero_grads(q, k, v, theta) -> None:
    for x in (q, k, v, theta):
        x.grad = None


def _step(fn, q, k, v, do, theta) -> None:
    _zero_grads(q, k, v, theta)
    fn(q, k, v).backward(do)


def _peak_mib(fn, q, k, v, do, theta) -> float:
    """Peak memory of one step beyond what lives before it; the previous step's gradients are freed first."""
    _zero_grads(q, k, v, theta)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn(q, k, v).backward(do)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    _zero_grads(q, k, v, theta)
    return peak / 2**20


def _timed(fn, q, k, v, do, theta, reps: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Forward and forward+backward times (ms) of ``reps`` steps; on CUDA one synchronisation at the end."""
    if device.type != "cuda":  # dry run: wall clock, synchronous anyway
        fwd, tot = [], []
        for _ in range(reps):
            _zero_grads(q, k, v, theta)
            t0 = time.perf_counter()
            out = fn(q, k, v)
            t1 = time.perf_counter()
            out.backward(do)
            t2 = time.perf_counter()
            fwd.append(1e3 * (t1 - t0))
            tot.append(1e3 * (t2 - t0))
        return fwd, tot
    events = [[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(reps)]
    for e0, e1, e2 in events:
        _zero_grads(q, k, v, theta)  # frees last step's gradients (no sync: the allocator is stream-ordered)
        e0.record()
        out = fn(q, k, v)
        e1.record()
        out.backward(do)
        e2.record()
    torch.cuda.synchronize()
    return [e0.elapsed_time(e1) for e0, e1, _ in events], [e0.elapsed_time(e2) for e0, _, e2 in events]


def _kernel_stats(cfg: BenchConfig, q, k, v, alpha, learned: bool) -> tuple[float, float]:
    """(empty-block fraction, passes) from one untimed forward of the kernel, same specialisation as timed."""
    from adasparse.kernels.triton_entmax_attention import triton_entmax_attention_forward

    with torch.no_grad():
        fwd = triton_entmax_attention_forward(
            q.detach(), k.detach(), v.detach(), alpha, is_causal=cfg.causal, need_grad=True, alpha_grad=learned
        )
    B, H = q.shape[:2]
    return fwd.empty_block_fraction, fwd.block_visits.sum().item() / (B * H * fwd.reachable_blocks)


def measure_row(cfg: BenchConfig, L: int, name: str, fn: Callable, tensors, theta, base_ms: float | None) -> dict:
    """One (length, candidate) row; never raises (the error goes into ``status``)."""
    q, k, v, do = tensors
    device = q.device
    row = dict(L=L, causal=cfg.causal, inputs=_inputs_label(cfg), candidate=_label(cfg, name), fwd_ms=math.nan)
    row.update(ms=math.nan, ratio=math.nan, peak_mib=math.nan, empty=None, passes=None, status="ok")
    try:
        t0 = time.perf_counter()
        _step(fn, q, k, v, do, theta)  # compiles (Triton), autotunes (AdaSplash-2)
        _sync(device)
        t1 = time.perf_counter()
        n_warm = cfg.warmup - 1
        for _ in range(n_warm):
            _step(fn, q, k, v, do, theta)
        _sync(device)
        one = max((time.perf_counter() - t1) / n_warm if n_warm else t1 - t0, 1e-6)  # seconds per step
        if device.type == "cuda":
            row["peak_mib"] = _peak_mib(fn, q, k, v, do, theta)
        left = cfg.row_budget_s - (time.perf_counter() - t0)
        reps = max(min(cfg.reps, 3), min(cfg.reps, int(max(left, 0.0) / one)))
        fwd, tot = _timed(fn, q, k, v, do, theta, reps, device)
        row["fwd_ms"], row["ms"] = statistics.median(fwd), statistics.median(tot)
        row["ratio"] = row["ms"] / base_ms if base_ms else (1.0 if name == "sdpa-flash" else math.nan)
        if name.startswith("triton"):
            learned = name == "triton learned α"
            alpha = learned_alpha(theta.detach()) if learned else 1.5
            row["empty"], row["passes"] = _kernel_stats(cfg, q, k, v, alpha, learned)
        if reps < cfg.reps:
            row["status"] = f"ok ({reps} reps)"
    except torch.cuda.OutOfMemoryError:
        row["status"] = "OOM"
    except Exception as e:  # noqa: BLE001 - one row fails, the benchmark goes on
        row["status"] = f"error: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:100]}"
    finally:
        _zero_grads(q, k, v, theta)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _label(cfg: BenchConfig, name: str) -> str:
    return f"{name} ({adasplash_variant(cfg.causal)})" if name == "adasplash α=1.5" else name


def _inputs_label(cfg: BenchConfig) -> str:
    if cfg.inputs == "local":
        return f"local ℓ={cfg.length_scale:g} q×{cfg.q_scale:g}"
    return f"gaussian q×{cfg.q_scale:g}"


def format_row(r: dict) -> str:
    """One markdown table row (the header is :func:`table_header`)."""
    head = f"| {r['L']} | {'yes' if r['causal'] else 'no'} | {r['inputs']} | {r['candidate']} |"
    if not r["status"].startswith("ok"):
        return head + " – | – | – | – | – | – | " + r["status"] + " |"
    empty = "–" if r["empty"] is None else f"{100 * r['empty']:.1f}%"
    passes = "–" if r["passes"] is None else f"{r['passes']:.2f}"
    peak = "–" if math.isnan(r["peak_mib"]) else f"{r['peak_mib']:.0f}"
    return (
        head + f" {r['fwd_ms']:.3f} | {r['ms']:.3f} | {r['ratio']:.2f} | {peak} | {empty} | {passes} | {r['status']} |"
    )


def table_header() -> str:
    return "| " + " | ".join(_COLUMNS) + " |\n|" + "---:|" * 2 + "---|" * 2 + "---:|" * 6 + "---|"


def _accuracy(cfg: BenchConfig, theta: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Relative errors of the kernel vs the float32 reference on a short sequence (sanity check on the device)."""
    from adasparse.kernels.triton_entmax_attention import triton_entmax_attention

    L = min(512, min(cfg.seq_lens))
    q, k, v, do = _inputs(cfg, L, device)
    th = theta.detach().clone().requires_grad_(True)
    out = triton_entmax_attention(q, k, v, learned_alpha(th), is_causal=cfg.causal)
    got = (out, *torch.autograd.grad(out, (q, k, v, th), do))
    qf, kf, vf = (x.detach().float().requires_grad_(True) for x in (q, k, v))
    th2 = theta.detach().clone().requires_grad_(True)
    ref = _reference(qf, kf, vf, learned_alpha(th2), cfg.causal)
    want = (ref, *torch.autograd.grad(ref, (qf, kf, vf, th2), do.float()))
    names = ("out", "dq", "dk", "dv", "dθ")
    return {
        n: ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()
        for n, a, b in zip(names, got, want)
    }


def run(cfg: BenchConfig, emit: Callable[[dict], None] | None = None) -> list[dict]:
    """Measure every candidate at every length; ``emit(row)`` is called as soon as each row is measured."""
    device = torch.device(cfg.device)
    g = torch.Generator().manual_seed(cfg.seed)
    theta = torch.randn(cfg.heads, generator=g).to(device).requires_grad_(True)  # learned-α logits
    cands = _candidates(cfg, theta)
    rows: list[dict] = []
    for L in cfg.seq_lens:
        try:
            tensors = _inputs(cfg, L, device)
        except torch.cuda.OutOfMemoryError:
            tensors = None
        base = None
        for name, fn in cands.items():
            if tensors is None:
                row = dict(L=L, causal=cfg.causal, inputs=_inputs_label(cfg), candidate=_label(cfg, name))
                row.update(status="OOM (inputs)")
            elif name == "reference learned α" and L > cfg.reference_max_len:
                continue
            else:
                row = measure_row(cfg, L, name, fn, tensors, theta, base)
                if name == "sdpa-flash" and row["status"].startswith("ok"):
                    base = row["ms"]
            rows.append(row)
            if emit is not None:
                emit(row)
        del tensors
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def _versions(device: torch.device) -> str:
    import triton

    parts = [
        f"GPU {torch.cuda.get_device_name()}" if device.type == "cuda" else "CPU dry run (Triton interpreter)",
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
    if cfg.device == "cuda" and not torch.cuda.is_available():
        print(
            "adasparse bench attention: no CUDA GPU available (torch.cuda.is_available() is False); this "
            "benchmark times the Triton kernel on a GPU and cannot run on CPU. Correctness on CPU: "
            "pytest -m triton tests/kernels (Triton interpreter); a dry run of this script: "
            "TRITON_INTERPRET=1 ... --device cpu at tiny sizes.",
            file=sys.stderr,
        )
        return 2
    if cfg.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("adasparse bench attention: --device cpu needs TRITON_INTERPRET=1 (a dry run)", file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print("adasparse bench attention: the triton package is not installed (pip install triton)", file=sys.stderr)
        return 2
    device = torch.device(cfg.device)
    print(f"# adasparse bench attention — {_versions(device)}", flush=True)
    print(
        f"# B={cfg.batch} H={cfg.heads} D={cfg.head_dim} {cfg.dtype} causal={cfg.causal} inputs={_inputs_label(cfg)} "
        f"reps≤{cfg.reps} warmup={cfg.warmup} row budget {cfg.row_budget_s:g} s "
        + (
            "(medians of CUDA-event times, no host sync while timing)"
            if device.type == "cuda"
            else "(dry run: wall-clock times of the interpreter, meaningless)"
        ),
        flush=True,
    )
    if cfg.check and "triton learned α" in cfg.candidates:
        try:
            theta = torch.randn(cfg.heads, generator=torch.Generator().manual_seed(cfg.seed))
            errs = _accuracy(cfg, theta.to(device), device)
            print("# accuracy vs float32 reference (relative): " + ", ".join(f"{n} {e:.1e}" for n, e in errs.items()))
        except Exception as e:  # noqa: BLE001 - report and go on to the timings
            print(f"# accuracy check failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        sys.stdout.flush()
    if cfg.header:
        print(table_header(), flush=True)
    run(cfg, emit=lambda row: print(format_row(row), flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
