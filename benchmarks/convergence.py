"""Summarise training runs for issue 14 (does learned α learn?): validation curve, α at the start and now per
attention type (mean, range, a histogram), how far the heads moved (and whether α as a whole left its initial draw:
a sign test, and the step from which it settled), whether their order changed, and which heads turned around.
Reads only the run folders' ``log.jsonl``.

    python benchmarks/convergence.py runs/g2p-softmax runs/g2p-learned-clamp runs/g2p-learned-sigmoid
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from adasparse.analysis.stats import read_alpha_log
from adasparse.train.logger import read_log

BINS = np.linspace(1.0, 2.0, 11)


def _validations(log: Path, metric: str) -> list[tuple[int, float]]:
    # read_log skips a half-written last line (of a live run) with a warning
    return [(int(r["step"]), float(r[metric])) for r in read_log(log) if r.get("kind") == "valid" and metric in r]


def _pairs_swapped(a0: np.ndarray, a1: np.ndarray) -> tuple[int, int]:
    """Pairs of heads whose α order differs between two moments (ties not counted), and all pairs."""
    x0, x1 = a0.ravel(), a1.ravel()
    pairs = list(itertools.combinations(range(x0.size), 2))
    swapped = sum((x0[i] - x0[j]) * (x1[i] - x1[j]) < 0 for i, j in pairs)
    return int(swapped), len(pairs)


def summarise(run: Path, metric: str, min_move: float) -> str:
    log = run / "log.jsonl"
    vals = _validations(log, metric)
    lines = [f"### {run.name}"]
    if vals:
        best = (
            min(vals, key=lambda v: v[1]) if metric in ("wer", "per", "valid_loss") else max(vals, key=lambda v: v[1])
        )
        curve = ", ".join(f"{s}: {v:.2f}" for s, v in vals)
        lines.append(f"- validation {metric}: {curve}; best {best[1]:.2f} at step {best[0]}")
    try:
        traj = read_alpha_log(log)
    except ValueError:
        lines.append("- no α in the log")
        return "\n".join(lines)
    lines.append(f"- logged steps 0 … {int(traj.steps[-1])}")
    for t, a in traj.alpha.items():
        a0, a1 = a[0], a[-1]
        if np.allclose(a, a0):
            lines.append(f"- {t}: α fixed at {float(a0.mean()):.3g}")
            continue
        moved = np.abs(a1 - a0)
        swapped, pairs = _pairs_swapped(a0, a1)
        hist = np.histogram(a1.ravel(), BINS)[0]
        lines.append(
            f"- {t}: α start mean {a0.mean():.3f} (range {a0.min():.2f}–{a0.max():.2f}) → now {a1.mean():.3f} "
            f"({a1.min():.2f}–{a1.max():.2f}); moved mean {moved.mean():.3f}, max {moved.max():.3f}; "
            f"order: {swapped} of {pairs} head pairs swapped; histogram now (1.0–2.0 by 0.1): {hist.tolist()}"
        )
    m = traj.moved_from_start(min_move)
    if m["down"] + m["up"]:
        lines.append(
            f"- all {m['heads']} heads: {m['down']} ended below their start, {m['up']} above (two-sided sign test "
            f"p = {m['sign_test_p']:.2g}); mean move {m['mean_move']:.3f}; every head within {min_move} of its final "
            f"α from step {m['settled_step']}"
        )
    turns = traj.turnarounds(min_move)
    if turns:
        desc = "; ".join(
            f"{d['type']} L{d['layer']}H{d['head']} {d['start']:.2f}→{d['turn']:.2f} (step {d['step']})→{d['end']:.2f}"
            for d in turns
        )
        lines.append(f"- heads that turned around (≥ {min_move} each way): {len(turns)}: {desc}")
    else:
        lines.append(f"- no head turned around (≥ {min_move} each way)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with log.jsonl)")
    ap.add_argument("--metric", default="wer", help="validation metric in the log (default wer)")
    ap.add_argument("--min-move", type=float, default=0.05, help="α change that counts as a turn (default 0.05)")
    args = ap.parse_args(argv)
    for run in args.runs:
        if not (run / "log.jsonl").is_file():
            ap.error(f"{run}/log.jsonl does not exist")
        print(summarise(run, args.metric, args.min_move), end="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
