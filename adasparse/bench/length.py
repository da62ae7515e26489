"""Length generalisation: tiny decoder-only models trained on synthetic tasks at ≤ 64 tokens, tested up to 4096.

For every task (multi-query associative recall, copy, flip-flop; see :mod:`adasparse.data.synthetic`), every
position scheme (RoPE, NoPE) and every attention variant

==================  ===========  ==============================================
variant             normalizer   length scaling of the scores
==================  ===========  ==============================================
softmax             softmax      none
softmax+ssmax       softmax      σ·log n, σ learned per head (Scalable-Softmax)
entmax15            1.5-entmax   none
entmax15+scaling    1.5-entmax   δ + β·log n, learned per head (ASEntmax's form)
learned             learned α    none
learned+scaling     learned α    δ + β·log n, learned per head
==================  ===========  ==============================================

one model is trained with the same seed, initial weights (α and scaling parameters apart), batches, steps
and optimizer, then evaluated (exact match, see ``task.unit``) at each test length on the same held-out
sequences.  A row is printed as soon as a model is measured; a JSON of all numbers and a figure (accuracy vs
length, log-2 axis) are written to ``--out``.

Run: ``adasparse bench length [--threads N] [--jobs N]`` (``--help`` for options; ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from .._io import atomic_write_text
from ..data.synthetic import IGNORE, SyntheticTask, make_task
from ..models import DecoderOnlyConfig, DecoderOnlyTransformer

#: variant name → (normalizer, length scaling)
VARIANTS: dict[str, tuple[str, str]] = {
    "softmax": ("softmax", "none"),
    "softmax+ssmax": ("softmax", "ssmax"),
    "entmax15": ("entmax15", "none"),
    "entmax15+scaling": ("entmax15", "learned"),
    "learned": ("learned", "none"),
    "learned+scaling": ("learned", "learned"),
}
TASK_NAMES = ("mqar", "copy", "flipflop")
POSITION_NAMES = ("rope", "none", "sinusoidal")
DEFAULT_EVAL = (64, 128, 256, 512, 1024, 2048, 4096)
#: training steps per task: about twice what the softmax + RoPE model needs to fit its training lengths
#: (flip-flop ~100-200 steps, copy ~400, associative recall ~700; with 1000 steps, 1.5-entmax and learned α
#: without scaling had not yet fitted associative recall: 25% and 30% at 64 tokens)
TASK_STEPS = {"mqar": 2000, "copy": 1000, "flipflop": 400}


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on (stored in the JSON)."""

    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    steps: dict[str, int] = field(default_factory=lambda: dict(TASK_STEPS))  # per task, the same for every variant
    batch: int = 64
    lr: float = 3e-3
    warmup: float = 0.1  # fraction of the steps
    train_min: int = 32
    train_max: int = 64
    eval_lengths: tuple[int, ...] = DEFAULT_EVAL
    eval_tokens: int = 8192  # per test length: max(min_eval_seqs, eval_tokens // L) sequences
    min_eval_seqs: int = 2
    eval_elements: int = 2**25  # bound on B·H·L² attention scores per evaluation batch (memory)
    seed: int = 0
    alpha_init: float = 1.5
    alpha_parametrization: str = "sigmoid"
    mqar_kv_ratio: int = 16
    copy_symbols: int = 32
    flipflop_p_ignore: float = 0.8


QUICK = Settings(
    d_model=16,
    n_heads=2,
    n_layers=1,
    d_ff=32,
    steps={t: 4 for t in TASK_NAMES},
    batch=8,
    train_min=16,
    train_max=32,
    eval_lengths=(32, 64, 128),
    eval_tokens=256,
    min_eval_seqs=2,
)


def build_task(name: str, s: Settings) -> SyntheticTask:
    """The task with the benchmark's options; MQAR's key vocabulary fits the longest test sequence."""
    longest = max(s.eval_lengths + (s.train_max,))
    if name == "mqar":
        return make_task("mqar", num_keys=max(16, longest // s.mqar_kv_ratio), kv_ratio=s.mqar_kv_ratio)
    if name == "copy":
        return make_task("copy", num_symbols=s.copy_symbols)
    return make_task("flipflop", p_ignore=s.flipflop_p_ignore)


def model_config(task: SyntheticTask, variant: str, positions: str, s: Settings) -> DecoderOnlyConfig:
    normalizer, scaling = VARIANTS[variant]
    return DecoderOnlyConfig(
        vocab_size=task.vocab_size,
        d_model=s.d_model,
        n_heads=s.n_heads,
        n_layers=s.n_layers,
        d_ff=s.d_ff,
        dropout=0.0,
        attn_dropout=0.0,
        max_len=max(s.eval_lengths + (s.train_max,)),  # only sinusoidal positions use it
        self_attn=normalizer,
        alpha_init=s.alpha_init,
        alpha_parametrization=s.alpha_parametrization,
        positions=positions,
        length_scaling=scaling,
    )


def make_model(task: SyntheticTask, variant: str, positions: str, s: Settings) -> DecoderOnlyTransformer:
    """The variant's model with the same initial weights as every other variant (α/scaling apart)."""
    torch.manual_seed(s.seed)
    ref = DecoderOnlyTransformer(model_config(task, "softmax", positions, s))
    model = DecoderOnlyTransformer(model_config(task, variant, positions, s))
    missing, unexpected = model.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected and all("alpha_module" in k or "qk_transform" in k for k in missing), (missing, unexpected)
    return model


def _lr_factor(step: int, steps: int, warmup: float) -> float:
    warm = max(1, round(warmup * steps))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def _scored_loss(model: DecoderOnlyTransformer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    lab = y != IGNORE
    logits = model.output(model.features(x)[lab])  # (N, V): only the positions with a question
    return F.cross_entropy(logits, y[lab])


def train(model: DecoderOnlyTransformer, task: SyntheticTask, s: Settings) -> dict:
    """AdamW (β = (0.9, 0.98), no weight decay), linear warmup then cosine decay, gradient clipping at 1;
    each step a batch of one length drawn uniformly from the even lengths in [train_min, train_max]."""
    steps = s.steps[task.name]
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, steps, s.warmup))
    g = torch.Generator().manual_seed(s.seed + 1)
    lo, hi = (s.train_min + 1) // 2, s.train_max // 2
    model.train()
    losses = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        length = 2 * int(torch.randint(lo, hi + 1, (1,), generator=g))
        x, y = task.sample(s.batch, length, g)
        loss = _scored_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    tail = losses[-max(1, len(losses) // 10) :]
    every = max(1, steps // 20)
    curve = [sum(losses[i : i + every]) / len(losses[i : i + every]) for i in range(0, steps, every)]
    return {
        "steps": steps,
        "train_seconds": time.perf_counter() - t0,
        "train_cpu_seconds": time.process_time() - c0,
        "final_loss": sum(tail) / len(tail),
        "loss_curve": {"every": every, "mean_loss": curve},
    }


@torch.no_grad()
def evaluate(model: DecoderOnlyTransformer, task: SyntheticTask, s: Settings) -> dict[int, dict]:
    """Exact match per answer (or per sequence for ``unit == "sequence"``) at each test length, on sequences
    drawn from a generator seeded by the length (the same for every variant), in batches of bounded size."""
    model.eval()
    out = {}
    for length in s.eval_lengths:
        g = torch.Generator().manual_seed(10_000 * (s.seed + 1) + length)
        n = max(s.min_eval_seqs, s.eval_tokens // length)
        per_batch = max(1, min(n, s.eval_elements // (s.n_heads * length * length)))
        right = answers = seq_right = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, n, per_batch):
            x, y = task.sample(min(per_batch, n - start), length, g)
            lab = y != IGNORE
            hit = torch.zeros_like(lab)
            hit[lab] = model.output(model.features(x)[lab]).argmax(-1) == y[lab]
            right += int(hit.sum())
            answers += int(lab.sum())
            seq_right += int((hit | ~lab).all(1).sum())
        token_acc = right / max(1, answers)
        acc = seq_right / n if task.unit == "sequence" else token_acc
        out[length] = {
            "accuracy": acc,
            "answer_accuracy": token_acc,
            "sequence_accuracy": seq_right / n,
            "answers": answers,
            "sequences": n,
            "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0,
        }
    return out


@dataclass
class RunResult:
    task: str
    positions: str
    variant: str
    normalizer: str
    length_scaling: str
    unit: str
    train: dict
    eval: dict[int, dict]
    alphas: list[list[float]] = field(default_factory=list)
    length_scales: dict[str, list[list[float]]] = field(default_factory=dict)
    cpu: str = ""  # torch's CPU capability where the row ran (AVX2, AVX512...): rows of one table may come from
    # several machines with --resume, and their float rounding differs


def run_one(task_name: str, positions: str, variant: str, s: Settings, threads: int | None = None) -> dict:
    """Train and evaluate one model; returns a JSON-ready dict (also the unit of work of ``--jobs``)."""
    if threads:
        torch.set_num_threads(threads)
    task = build_task(task_name, s)
    model = make_model(task, variant, positions, s)
    tr = train(model, task, s)
    ev = evaluate(model, task, s)
    normalizer, scaling = VARIANTS[variant]
    res = RunResult(
        task=task_name,
        positions=positions,
        variant=variant,
        normalizer=normalizer,
        length_scaling=scaling,
        unit=task.unit,
        train=tr,
        eval=ev,
        alphas=model.alphas()["self"].tolist(),
        length_scales={k: v.tolist() for k, v in model.length_scales().items()},
        cpu=torch.backends.cpu.get_cpu_capability(),
    )
    return asdict(res)


# --------------------------------------------------------------------------- output


def _header(s: Settings) -> str:
    cols = "".join(f"{L:>7}" for L in s.eval_lengths)
    return f"{'task':<9}{'pos':<6}{'variant':<18}{cols}   train s  eval s  final loss"


def format_row(r: dict, s: Settings) -> str:
    accs = "".join(f"{100 * r['eval'][L]['accuracy']:7.1f}" for L in s.eval_lengths)
    ev = sum(e["seconds"] for e in r["eval"].values())
    return (
        f"{r['task']:<9}{r['positions']:<6}{r['variant']:<18}{accs}  {r['train']['train_seconds']:8.1f}"
        f"{ev:8.1f}  {r['train']['final_loss']:10.4f}"
    )


def write_json(path: Path, meta: dict, results: list[dict]) -> None:
    order = {(t, p, v): i for i, (t, p, v) in enumerate(meta["runs"])}
    results = sorted(results, key=lambda r: order[(r["task"], r["positions"], r["variant"])])
    atomic_write_text(path, json.dumps({"meta": meta, "results": results}, indent=1))  # a temp name per process


def plot(path: Path, results: list[dict], s: Settings) -> None:
    """Accuracy vs test length (log-2 axis): one panel per (positions, task), one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASK_NAMES if any(r["task"] == t for r in results)]
    poss = [p for p in POSITION_NAMES if any(r["positions"] == p for r in results)]
    colors = {"softmax": "tab:blue", "entmax15": "tab:orange", "learned": "tab:green"}
    fig, axes = plt.subplots(len(poss), len(tasks), figsize=(4.2 * len(tasks), 3.2 * len(poss)), squeeze=False)
    for i, p in enumerate(poss):
        for j, t in enumerate(tasks):
            ax = axes[i][j]
            for r in results:
                if r["task"] != t or r["positions"] != p:
                    continue
                xs = sorted(int(L) for L in r["eval"])
                ys = [100 * r["eval"][L if L in r["eval"] else str(L)]["accuracy"] for L in xs]
                style = "-" if r["length_scaling"] != "none" else "--"
                ax.plot(xs, ys, style, marker="o", ms=3, color=colors[r["normalizer"]], label=r["variant"])
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(s.eval_lengths), [str(L) for L in s.eval_lengths], fontsize=7)
            ax.minorticks_off()
            ax.axvline(s.train_max, color="grey", lw=0.8, ls=":")
            ax.set_ylim(-3, 103)
            unit = "per sequence" if t == "copy" else "per answer"
            ax.set_title(f"{t}, {'NoPE' if p == 'none' else p}", fontsize=10)
            ax.set_xlabel("test length (tokens)")
            ax.set_ylabel(f"exact match % ({unit})")
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"trained at {s.train_min}-{s.train_max} tokens (dotted line); steps {s.steps}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


def _settings(args: argparse.Namespace) -> Settings:
    s = QUICK if args.quick else Settings()
    changes = {}
    for name in ("d_model", "n_heads", "n_layers", "d_ff", "batch", "lr", "eval_tokens", "seed"):
        v = getattr(args, name)
        if v is not None:
            changes[name] = v
    if args.steps is not None:
        if args.steps <= 0:
            raise ValueError(f"--steps must be positive, got {args.steps}")
        changes["steps"] = {t: args.steps for t in TASK_NAMES}
    if args.train_lengths is not None:
        changes["train_min"], changes["train_max"] = args.train_lengths
    if args.eval_lengths is not None:
        changes["eval_lengths"] = tuple(args.eval_lengths)
    s = replace(s, **changes)
    for name in ("d_model", "n_heads", "n_layers", "d_ff", "batch", "eval_tokens"):
        if getattr(s, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(s, name)}")
    if not (0 < s.train_min <= s.train_max) or s.train_max < 4:
        raise ValueError(f"--train-lengths needs 0 < MIN <= MAX and MAX >= 4, got {s.train_min} {s.train_max}")
    if any(L < 4 for L in s.eval_lengths):
        raise ValueError(f"--eval-lengths must be >= 4, got {list(s.eval_lengths)}")
    if not s.lr > 0:
        raise ValueError(f"--lr must be positive, got {s.lr}")
    return s


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="adasparse bench length", description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", choices=TASK_NAMES, default=list(TASK_NAMES))
    ap.add_argument("--positions", nargs="+", choices=POSITION_NAMES, default=["rope", "none"])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--steps", type=int, help=f"training steps of every model (default per task: {TASK_STEPS})")
    ap.add_argument("--batch", type=int, help=f"sequences per training batch (default {Settings.batch})")
    ap.add_argument("--lr", type=float, help=f"peak learning rate (default {Settings.lr})")
    ap.add_argument("--d-model", type=int, help=f"model width (default {Settings.d_model})")
    ap.add_argument("--n-heads", type=int, help=f"heads (default {Settings.n_heads})")
    ap.add_argument("--n-layers", type=int, help=f"layers (default {Settings.n_layers})")
    ap.add_argument("--d-ff", type=int, help=f"feed-forward width (default {Settings.d_ff})")
    ap.add_argument(
        "--train-lengths", type=int, nargs=2, metavar=("MIN", "MAX"),
        help=f"training lengths, uniform over the even lengths in [MIN, MAX] (default {Settings.train_min} "
        f"{Settings.train_max})",
    )  # fmt: skip
    ap.add_argument("--eval-lengths", type=int, nargs="+", help=f"test lengths (default {list(DEFAULT_EVAL)})")
    ap.add_argument(
        "--eval-tokens", type=int,
        help=f"tokens evaluated per test length (at least {Settings.min_eval_seqs} sequences; default "
        f"{Settings.eval_tokens})",
    )  # fmt: skip
    ap.add_argument("--seed", type=int, help="seed of the initial weights and of the data (default 0)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads per process (default: torch's)")
    ap.add_argument("--jobs", type=int, default=1, help="models trained in parallel processes (default 1)")
    ap.add_argument("--out", default="bench_length", help="folder for length_generalisation.{json,png}")
    ap.add_argument("--no-figure", action="store_true", help="skip the figure (no matplotlib needed)")
    ap.add_argument(
        "--resume", action="store_true",
        help="keep the rows already in --out's JSON (written after every row; the same settings) and run the others",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="a tiny model, 4 steps, lengths 32-128 (smoke run)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = _settings(args)
    except ValueError as e:
        print(f"adasparse bench length: error: {e}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"adasparse bench length: error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    json_path = out / "length_generalisation.json"
    if json_path.is_file() and not args.resume:
        print(
            f"adasparse bench length: error: {json_path} already holds results: --resume keeps them and runs the "
            "rows still missing, or give another --out",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    runs = [(t, p, v) for t in args.tasks for p in args.positions for v in args.variants]
    meta = {
        "command": "adasparse bench length " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads_per_process": torch.get_num_threads(),
        "jobs": args.jobs,
        "settings": asdict(s),
        "tasks": {t: repr(build_task(t, s)) for t in args.tasks},
        "runs": runs,
    }
    print(
        f"# adasparse bench length: torch {torch.__version__}, {torch.get_num_threads()} threads x {args.jobs} "
        f"jobs, {meta['machine']}; d_model {s.d_model}, {s.n_layers} layers x {s.n_heads} heads, steps {s.steps} "
        f"of {s.batch} sequences at {s.train_min}-{s.train_max} tokens, lr {s.lr}; exact match % "
        "(mqar, flipflop: per answer; copy: per sequence)",
        flush=True,
    )
    for t in args.tasks:
        print(f"# {t}: {meta['tasks'][t]}", flush=True)
    print(_header(s), flush=True)
    results: list[dict] = []
    if args.resume and json_path.is_file():
        try:
            prev = json.loads(json_path.read_text(encoding="utf-8"))
            same = prev["meta"]["settings"] == json.loads(json.dumps(asdict(s)))
        except (ValueError, KeyError, TypeError) as e:
            print(f"adasparse bench length: error: --resume: {json_path} is not a results file ({e})", file=sys.stderr)
            return 2
        if not same:
            print(
                f"adasparse bench length: error: --resume: {json_path} was written with other settings; give the "
                "same options, or another --out",
                file=sys.stderr,
            )
            return 2
        # every earlier row is kept, also those outside this selection: the file gathers all the runs
        results = [{**r, "eval": {int(k): v for k, v in r["eval"].items()}} for r in prev["results"]]  # str keys
        kept = [(r["task"], r["positions"], r["variant"]) for r in results]
        earlier = [tuple(key) for key in prev["meta"].get("runs", [])]
        meta["runs"] = list(dict.fromkeys([*earlier, *kept, *runs]))  # the earlier order, then the new rows
        meta["tasks"] = {**prev["meta"].get("tasks", {}), **meta["tasks"]}
        runs_left = [key for key in runs if key not in kept]
        for r in results:
            print(format_row(r, s), flush=True)
        print(f"# --resume: {len(results)} rows kept from {json_path}, {len(runs_left)} to run", flush=True)
    else:
        runs_left = runs
    t0 = time.perf_counter()

    def done(r: dict) -> None:
        results.append(r)
        print(format_row(r, s), flush=True)
        meta["wall_seconds"] = time.perf_counter() - t0
        write_json(json_path, meta, results)

    if args.jobs == 1:
        for t, p, v in runs_left:
            done(run_one(t, p, v, s))
    else:
        from ..nn.attention import entmax_attention

        q = torch.zeros(1, 1, 2, 2)
        entmax_attention(q, q, q, alpha=1.3)  # builds the CPU kernel once, before the workers load it
        import multiprocessing as mp

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_one, t, p, v, s, args.threads) for t, p, v in runs_left]
            for f in as_completed(futures):
                done(f.result())
    meta["wall_seconds"] = time.perf_counter() - t0
    cpu = sum(r["train"].get("train_cpu_seconds", 0.0) + sum(e.get("cpu_seconds", 0.0) for e in r["eval"].values())
              for r in results)  # fmt: skip
    meta["cpu_seconds"] = cpu
    write_json(json_path, meta, results)
    print(
        f"# wrote {json_path} ({meta['wall_seconds']:.0f} s this time; CPU time of all rows {cpu:.0f} s, "
        f"≈ {cpu / 60 / 2:.0f} min on two idle cores)",
        flush=True,
    )
    if not args.no_figure:
        fig_path = out / "length_generalisation.png"
        plot(fig_path, results, s)
        print(f"# wrote {fig_path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
