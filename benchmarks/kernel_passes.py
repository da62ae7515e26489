"""Solver passes and block visits of the fused kernel's forward, counted on CPU, and a cost model against FA2.

``python -m benchmarks.kernel_passes [--length 4096] [--topk 8] [--json out.json]``

``--topk 0`` replays the solver started at the bracket's end t = 0 (the kernel before the top-k start).

The counts come from :func:`adasparse.kernels.solver_model.simulate_solver`, which replays the kernel's control
flow on materialised scores and is tested to reproduce the kernel's own counters (``newton_iters``,
``block_visits``, the block mask) exactly under the Triton interpreter (``tests/kernels/test_solver_model.py``).
Scores: ``scale · q kᵀ`` of bf16-rounded inputs accumulated in float32 (what the kernel computes), 64×64 tiles
(the kernel's defaults for D ≤ 64), D = 64; inputs from :func:`adasparse.bench.attention.make_inputs`.

The cost model (:func:`modelled_times`) prices each visited tile by its per-element work on an H100 SXM
(tensor-core flops, ALU slots, MUFU ops: constants below), for our forward and backward and for
FlashAttention-2's, with no overlap between tensor-core and other work and the same efficiency for both
sides — so the ratio it gives is what the *design* costs, not what a given implementation achieves.  Implemented
and priced: pass 1 with the top-k extraction rounds the model counts, the solver passes (closed forms at α = 1.5
and 2), the output pass, and both backwards (the default single FA2-shaped kernel, the deterministic pair).
Not implemented, not priced: fast log2/exp2 (``tl.log`` is libdevice ``logf``, ``LOGF_ALU`` below).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from adasparse.bench.attention import learned_alpha, make_inputs
from adasparse.kernels.solver_model import TOPK, eps_f_for, simulate_solver

# ---- H100 SXM5 (dense): per second
TC_FLOPS = 989e12  # bf16 tensor-core flop/s
ALU_SLOTS = 132 * 128 * 1.98e9  # FP32/INT lanes × clock: one FMA/add/compare/select per slot
MUFU_PER_ALU = 8  # one MUFU op (ex2, rcp, ...) occupies its pipe for 8 ALU slots (16 vs 128 lanes per SM)
ETA_FWD, ETA_BWD = 0.8, 0.6  # achieved fraction of the model, forward / backward kernels (FA2-like), both sides

# ---- per (query, key) element of a visited tile, D = head dim: (tensor flops, ALU ops, MUFU ops)
LOGF_ALU = 18  # libdevice logf (what tl.log compiles to): a polynomial, no MUFU


def element_costs(D: int, topk: int = TOPK, bn: int = 64) -> dict[str, tuple[float, float, float]]:
    return {
        # FlashAttention-2: forward QKᵀ and PV, one exp2; backward QKᵀ, dP, dV, dK, dQ, one exp2
        "fa2_fwd": (4 * D, 4, 1),
        "fa2_bwd": (10 * D, 6, 1),
        # ours, forward: pass 1 (max, count), one top-k extraction round over a tile (compare, select, the next
        # row max; per row the insertion: min, argmin, select over k), a solver pass (general α / 1.5 / 2), the
        # output pass
        "pass1": (2 * D, 7, 0),
        "topk_round": (0, 3 + 3 * topk / bn, 0),
        "solve": (2 * D, 23 + LOGF_ALU + 4, 3),  # log1p (Goldberg + logf), exp, 1/w; p, p/w, p/w²; liveness
        "solve_15": (2 * D, 18, 0),
        "solve_2": (2 * D, 17, 0),
        "out_learned": (10 * D, 60 + LOGF_ALU, 4),  # QKᵀ, PV + three α-gradient dots; log1p, exp, series, exp
        "out_fixed": (6 * D, 40 + LOGF_ALU, 3),  # QKᵀ, PV + Σ s v; log1p, exp, p^{2−α}
        # ours, backward: deterministic=True (two kernels, each recomputing QKᵀ, p and dP) and the default, one
        # kernel of FA2's shape (five matmuls, p once, dQ added atomically as FA2 does)
        "bwd_two": (14 * D, 2 * (35 + LOGF_ALU), 6),
        "bwd_one": (10 * D, 35 + LOGF_ALU, 3),
    }


def _seconds(elements: float, cost: tuple[float, float, float], eta: float) -> float:
    flops, alu, mufu = cost
    tensor = elements * flops / TC_FLOPS
    other = elements * max(alu + mufu, MUFU_PER_ALU * mufu) / ALU_SLOTS
    return (tensor + other) / eta


def modelled_times(rec: dict, D: int = 64, bm: int = 64, bn: int = 64) -> dict[str, float]:
    """Seconds per (batch·head) for FA2 and for our kernel (two backward designs) from one record's counts."""
    c = element_costs(D, rec.get("topk", TOPK), bn)
    tile = bm * bn
    reach = rec["reachable_tiles"]  # tiles a program may visit (causal: the lower triangle)
    fa2 = _seconds(reach * tile, c["fa2_fwd"], ETA_FWD) + _seconds(reach * tile, c["fa2_bwd"], ETA_BWD)
    solve = {"2": "solve_2", "1.5": "solve_15"}.get(rec["alpha_kind"], "solve")
    learned = rec["alpha"] == "learned"
    fwd = _seconds(reach * tile, c["pass1"], ETA_FWD)
    fwd += _seconds(rec.get("topk_round_tiles", 0) * tile, c["topk_round"], ETA_FWD)
    fwd += _seconds(rec["solver_tiles"] * tile, c[solve], ETA_FWD)
    fwd += _seconds(rec["output_tiles"] * tile, c["out_learned" if learned else "out_fixed"], ETA_FWD)
    nonempty = rec["nonempty_tiles"]
    return dict(
        fa2=fa2,
        ours_two_bwd=fwd + _seconds(nonempty * tile, c["bwd_two"], ETA_BWD),
        ours_one_bwd=fwd + _seconds(nonempty * tile, c["bwd_one"], ETA_BWD),
        ours_fwd=fwd,
    )


def count(
    kind: str,
    L: int,
    alphas: list[float],
    *,
    q_scale: float,
    causal: bool,
    solver: str,
    eps_f,
    topk: int = TOPK,
    seed: int = 0,
) -> dict:
    H, D = len(alphas), 64
    q, k, _ = make_inputs(kind, 1, H, L, D, q_scale=q_scale, length_scale=64.0, seed=seed)
    z = (q.bfloat16().float() @ k.bfloat16().float().transpose(-1, -2))[0] * D**-0.5  # (H, L, L) float32
    ok = torch.ones(L, L, dtype=torch.bool)
    if causal:
        ok = ok.tril()
    ok = ok.expand(H, L, L)
    c = simulate_solver(z, ok, torch.tensor(alphas), is_causal=causal, solver=solver, eps_f=eps_f, topk=topk)
    reach = c.reachable.sum().item()
    return dict(
        passes_mean=c.passes.float().mean().item(), passes_max=int(c.passes.max()),
        sweeps=c.sweeps, empty=c.empty_fraction, reachable_tiles=reach / H,
        solver_tiles=c.solver_visits.sum().item() / H, output_tiles=c.output_visits.sum().item() / H,
        nonempty_tiles=c.nonempty.sum().item() / H, topk=topk, topk_round_tiles=c.topk_rounds.sum().item() / H,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernel_passes", description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--json", help="write the records here")
    p.add_argument("--quick", action="store_true", help="fewer points (CI-sized check of the script)")
    p.add_argument(
        "--topk",
        type=int,
        default=TOPK,
        help=f"scores per row kept by pass 1 for the solver's start (0: t = 0; {TOPK})",
    )
    a = p.parse_args(argv)
    L = a.length
    theta = torch.randn(16, generator=torch.Generator().manual_seed(0))  # the bench's learned-α logits
    learned = learned_alpha(theta)[:4].tolist()
    inputs = [("gaussian", 1.0), ("gaussian", 2.0), ("gaussian", 4.0), ("local", 1.0)]
    alphas = [("1.01", [1.01]), ("1.25", [1.25]), ("1.5", [1.5]), ("1.75", [1.75]), ("2", [2.0])]
    alphas.append(("learned", learned))
    points = [(kind, qs, name, al, False, "halley", "bf16") for kind, qs in inputs for name, al in alphas]
    points += [("gaussian", 1.0, "learned", learned, True, "halley", "bf16")]
    points += [("gaussian", 1.0, "learned", learned, False, "halley", "fp32")]
    points += [
        ("gaussian", 1.0, "1.5", [1.5], False, "newton", "fp32"),
        ("local", 1.0, "1.5", [1.5], False, "newton", "fp32"),
    ]
    if a.quick:
        points = points[:1] + points[-1:]
    recs = []
    print(
        f"# kernel passes at L = {L}, D = 64, 64×64 tiles, scores of bf16 inputs in float32 (solver model); "
        f"solver start: {f'top-{a.topk} bound from pass 1' if a.topk else 'the bracket end t = 0'}"
    )
    print(f"# learned α of the first 4 heads: {', '.join(f'{x:.3f}' for x in learned)}")
    print(
        "| inputs | causal | α | solver | passes mean / max | sweeps | top-k rounds per tile | empty tiles "
        "| model fwd+bwd × FA2 (deterministic two-kernel bwd / default one-kernel bwd) |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for kind, qs, name, al, causal, solver, eps in points:
        t0 = time.time()
        eps_f = eps_f_for({"bf16": torch.bfloat16, "fp32": torch.float32}[eps])
        topk = a.topk if solver == "halley" else 0  # the old Newton solver started at t = 0
        rec = count(kind, L, al, q_scale=qs, causal=causal, solver=solver, eps_f=eps_f, topk=topk)
        rec.update(inputs=f"{kind} q×{qs:g}", causal=causal, alpha=name, alpha_kind=name, solver=solver, eps=eps)
        rec.update(seconds=time.time() - t0)
        t = modelled_times(rec)
        rec.update(model={k: v for k, v in t.items()})
        recs.append(rec)
        label = f"{solver} (stop {'at abs(Σp − 1) ≤ ' + format(eps_f, 'g') if solver == 'halley' else 'on step'})"
        print(
            f"| {rec['inputs']} | {'yes' if causal else 'no'} | {name} | {label} | {rec['passes_mean']:.2f} / "
            f"{rec['passes_max']} | {rec['sweeps']:.2f} | {rec['topk_round_tiles'] / rec['reachable_tiles']:.2f} | "
            f"{100 * rec['empty']:.1f}% | "
            f"{t['ours_two_bwd'] / t['fa2']:.2f} / {t['ours_one_bwd'] / t['fa2']:.2f} |",
            flush=True,
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(recs, f, indent=1)
    return 0 if all(math.isfinite(r["sweeps"]) for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())
