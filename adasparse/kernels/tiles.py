r"""Tile configurations of the fused entmax attention kernels: the candidates, a table keyed on head dim, dtype
and length bucket, and a tuner that times the candidates on the GPU it runs on.

A :class:`TileConfig` sets the tiles (BLOCK_M query rows × BLOCK_N keys, shared by the forward and the backward,
since the backward reads the forward's block mask at that granularity) and, for each of the two, the number of
warps and of software-pipelining stages.  Which one is fastest depends on the GPU, the head dim, the dtype and
the length, and — unlike FlashAttention — on the data (the solver's passes and the empty tiles), so it cannot be
measured here, on CPU, under the Triton interpreter.  Hence:

* :data:`TABLE` gives, per (head-dim bucket, dtype kind, length bucket), the configuration the kernels use by
  default on a GPU.  Every entry is, for now, the one configuration compiled offline for sm_90 and checked
  for register spills (64×64 tiles, 32×64 above D = 64; 8 warps; Triton's default 3 stages) — **not a timed
  choice**: no GPU has run these kernels yet.  A GPU run should time :func:`candidates` with :func:`tune_tiles`
  and write the winners here;
* :func:`tune_tiles` is the autotuner: on given inputs it times the forward of every candidate and the backward
  of every candidate (each with its own warps/stages), keeps the fastest tiles for forward + backward, and
  caches the result for the inputs' key for the rest of the process (:func:`tile_config` then returns it);
* under the Triton interpreter :func:`tile_config` returns one fixed configuration (:data:`INTERPRETER`), so
  tests are deterministic and fast; the interpreter ignores warps and stages, so the tests pin each candidate's
  tiles (``tests/kernels/test_tiles.py``).

What can be checked without a GPU: that a configuration compiles for sm_90 without spilling registers
(``compile_kernels(config=...)`` and ``cuobjdump --dump-resource-usage``; ``STACK`` > 0 = local memory).
Measured for bf16, D = 64, 3 stages, all four kernels (forward; single backward; the deterministic pair):
with 8 warps, 32×32, 32×64, 64×32 and 64×64 are spill-free (but 32×32's ``backward_q``: 8 bytes); with 4 warps
only 32×32's forward and single backward are; every tile with a side of 128 spills in the forward (8 warps: 16–2600
bytes; 4 warps: 184–6592).  So the tuner will likely pick among the 8-warp tiles up to 64×64; the rest stay in
the space because a spill-light 128×32 can still win where the solver makes few passes.  These figures predate two changes and
are to be re-measured: ``compile_kernels`` now compiles with the launcher's 16-byte alignment of pointers and
strides (before, every load was a 2-byte scalar load and nothing could pipeline), and the kernels walk their live
blocks in a branch-free loop (64×64, 8 warps: forward 216 → 229 registers, single backward 213 → 211, all
spill-free; see the module docstring of :mod:`adasparse.kernels.triton_entmax_attention`).

Why a table and not ``triton.autotune``: autotune would re-run the forward, whose outputs (the block mask, the
per-block counters, the grid itself) are shaped by the tile, and the backward, which adds dQ atomically into a
buffer (each timing run would add again); it keys on argument values, not on buckets; and its timing runs would
happen inside a training step.  An explicit tuner called once, outside the step, avoids all three.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

__all__ = [
    "TileConfig",
    "TABLE",
    "INTERPRETER",
    "TILES",
    "WARPS",
    "STAGES",
    "candidates",
    "config_key",
    "tile_config",
    "tune_tiles",
    "clear_tuned",
]

TILES = (32, 64, 128)  # BLOCK_M and BLOCK_N candidates
WARPS = (4, 8)
STAGES = (1, 2, 3)
LENGTH_BUCKETS = (1024, 8192, math.inf)  # a length goes to the first bucket that holds it


@dataclass(frozen=True)
class TileConfig:
    """Tiles (shared by forward and backward) and per-kernel warps / pipelining stages."""

    block_m: int
    block_n: int
    num_warps: int = 8  # forward
    num_stages: int = 3  # forward
    bwd_num_warps: int = 8
    bwd_num_stages: int = 3

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            b = getattr(self, name)
            if not isinstance(b, int) or b < 16 or b & (b - 1):
                raise ValueError(f"TileConfig.{name} must be a power of two >= 16, got {b!r}")
        for name in ("num_warps", "bwd_num_warps"):
            w = getattr(self, name)
            if not isinstance(w, int) or w < 1 or w & (w - 1):
                raise ValueError(f"TileConfig.{name} must be a power of two >= 1, got {w!r}")
        for name in ("num_stages", "bwd_num_stages"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TileConfig.{name} must be an int >= 1, got {getattr(self, name)!r}")


def _dtype_kind(dtype: torch.dtype) -> str:
    return {torch.float16: "half", torch.bfloat16: "half", torch.float32: "fp32", torch.float64: "fp64"}[dtype]


def config_key(head_dim: int, dtype: torch.dtype, length: int) -> tuple[int, str, float]:
    """(head-dim bucket 64 / 128, dtype kind "half" / "fp32" / "fp64", length bucket) of an input."""
    return (64 if head_dim <= 64 else 128), _dtype_kind(dtype), next(b for b in LENGTH_BUCKETS if length <= b)


def _default(head_dim_bucket: int) -> TileConfig:
    # compiled for sm_90 without spills (bf16; tests/kernels/test_triton_attention.py); above D = 64, 32-row tiles
    return TileConfig(64 if head_dim_bucket <= 64 else 32, 64)


TABLE: dict[tuple[int, str, float], TileConfig] = {
    (d, kind, length): _default(d) for d in (64, 128) for kind in ("half", "fp32", "fp64") for length in LENGTH_BUCKETS
}
INTERPRETER = {64: TileConfig(64, 64), 128: TileConfig(32, 64)}  # by head-dim bucket; warps/stages unused there

_TUNED: dict[tuple[int, str, float], TileConfig] = {}


def candidates(head_dim: int) -> list[TileConfig]:
    """The tuning space: BLOCK_M, BLOCK_N ∈ {32, 64, 128}, warps ∈ {4, 8}, stages ∈ {1, 2, 3}, the same for forward
    and backward (:func:`tune_tiles` picks the backward's separately); 128 × 128 tiles only up to D = 64 (above,
    the forward's q tile, top-k and accumulators leave too few registers)."""
    out = []
    for bm, bn, w, s in itertools.product(TILES, TILES, WARPS, STAGES):
        if head_dim > 64 and bm * bn > 64 * 128:
            continue
        out.append(TileConfig(bm, bn, w, s, w, s))
    return out


def tile_config(head_dim: int, dtype: torch.dtype, length: int, *, interpreted: bool = False) -> TileConfig:
    """The configuration the kernels use for this input: one :func:`tune_tiles` found for its key in this
    process, else :data:`INTERPRETER` under the Triton interpreter, else the :data:`TABLE` entry."""
    key = config_key(head_dim, dtype, length)
    if key in _TUNED:
        return _TUNED[key]
    return INTERPRETER[key[0]] if interpreted else TABLE[key]


def clear_tuned() -> None:
    """Forget what :func:`tune_tiles` found (the table and the interpreter's configuration apply again)."""
    _TUNED.clear()


def _time(fn, reps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up (compiles), CUDA events on a GPU."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:  # the interpreter: the mechanism runs, the times mean nothing
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def tune_tiles(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor | float,
    *,
    key_padding_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    configs: Sequence[TileConfig] | None = None,
    reps: int = 5,
    backward: bool = True,
    timings: list | None = None,
) -> TileConfig:
    """Time the kernels on these inputs for every configuration, cache the fastest for their key, return it.

    For each tile pair of ``configs`` (default :func:`candidates`), the forward is timed with each of its
    (warps, stages) and the backward (default, single kernel; all of q, k, v and α needing gradients as
    ``alpha`` does) with each of its own; the tile pair with the least forward + backward time wins, with its
    fastest forward and backward settings.  A configuration that fails to launch (e.g. Triton's
    ``OutOfResources``: too much shared memory) is skipped.  Meant to run once per input shape on a GPU,
    outside any training step; under the interpreter it runs (the tests use it) but its times mean nothing.
    ``timings``, if given, receives one ``(config, forward seconds, backward seconds or None)`` per configuration
    that ran, for the record of a tuning run.
    """
    from .triton_entmax_attention import check_inputs, triton_entmax_attention, triton_entmax_attention_forward

    check_inputs(q, k, v, alpha, key_padding_mask)  # the caller's errors are raised, not taken for launch failures
    configs = list(configs) if configs is not None else candidates(q.shape[-1])
    if not configs:
        raise ValueError("tune_tiles: configs is empty")
    need_alpha = isinstance(alpha, torch.Tensor) and alpha.requires_grad
    kw = dict(key_padding_mask=key_padding_mask, is_causal=is_causal)
    do = torch.randn_like(q)
    leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]
    a = alpha.detach().requires_grad_(need_alpha) if isinstance(alpha, torch.Tensor) else alpha
    fwd_best: dict[tuple[int, int], tuple[float, TileConfig]] = {}
    bwd_best: dict[tuple[int, int], tuple[float, TileConfig]] = {}
    errors = []
    for cfg in configs:
        tiles = (cfg.block_m, cfg.block_n)
        try:
            fwd = partial(triton_entmax_attention_forward, q, k, v, alpha, need_grad=backward, config=cfg, **kw)
            t = _time(fwd, reps, q.device)
            if t < fwd_best.get(tiles, (math.inf,))[0]:
                fwd_best[tiles] = (t, cfg)
            tb = None
            if backward:
                out = triton_entmax_attention(*leaves, a, config=cfg, **kw)
                inputs = [*leaves, a] if need_alpha else leaves
                tb = _time(partial(torch.autograd.grad, out, inputs, do, retain_graph=True), reps, q.device)
                if tb < bwd_best.get(tiles, (math.inf,))[0]:
                    bwd_best[tiles] = (tb, cfg)
            if timings is not None:
                timings.append((cfg, t, tb))
        except Exception as e:  # noqa: BLE001  (any launch failure removes the candidate, not the tuning)
            errors.append(f"{cfg}: {type(e).__name__}: {e}")
    scored = []
    for tiles, (tf, cf) in fwd_best.items():
        if backward and tiles not in bwd_best:
            continue
        tb, cb = bwd_best[tiles] if backward else (0.0, cf)
        best = TileConfig(*tiles, cf.num_warps, cf.num_stages, cb.bwd_num_warps, cb.bwd_num_stages)
        scored.append((tf + tb, best))
    if not scored:
        raise RuntimeError("tune_tiles: no configuration ran:\n" + "\n".join(errors))
    best = min(scored, key=lambda s: s[0])[1]
    _TUNED[config_key(q.shape[-1], q.dtype, max(q.shape[2], k.shape[2]))] = best
    return best
