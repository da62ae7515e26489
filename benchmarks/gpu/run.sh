#!/usr/bin/env bash
# The device checks that need a CUDA GPU, prepared to run in short leases (see benchmarks/gpu/README.md).
#
#   bash benchmarks/gpu/run.sh kernels bench   # ONE run of ≤ 8 min: kernel tests (no fp64), then the benchmark
#   bash benchmarks/gpu/run.sh m30k            # a separate run (another lease): Multi30k, ~7 min
#   bash benchmarks/gpu/run.sh tiles           # a third run (or what a lease has left): time the tile candidates
#
# Uses the machine's python3 (PyTorch, Triton, sentencepiece, sacrebleu, ... preinstalled) with this checkout
# on PYTHONPATH: nothing is installed. Results go to $OUT (or out/gpu), at most six files (the device tool
# returns eight): summary.md, which collects the tables, each part's log, the Multi30k report and an archive
# of the Multi30k logs and outputs. Each part and each benchmark invocation runs under its own timeout, cut to
# what is left of BUDGET_S (kernels + bench), and the script goes on when one fails, so that one lease returns
# everything that worked; benchmark rows are printed (and land in the log) as soon as each is measured.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
M30K=${M30K_DATA:-.m30k}           # Multi30k files, carried to the device (../shared does not travel)
M30K_MINUTES=${M30K_MINUTES:-4}     # training budget per model (all train at once)
M30K_STEPS=${M30K_STEPS:-6000}      # and the most updates (≈ 36 epochs of 4096-token batches)
M30K_SET=${M30K_SET:-}              # more `--set key=value` overrides, space-separated (e.g. for a dry run)
M30K_MODELS=${M30K_MODELS:-softmax entmax15 learned learned_a1.1 learned_lr10}  # which models (names as below)
SUMMARY="$OUT/summary.md"
BUDGET_S=${BUDGET_S:-450}           # kernels + bench, compiles included (the run's limit is 480 s)
KERNELS_S=${KERNELS_S:-150}         # of which the kernel tests
KERNELS_DEVICE=${KERNELS_DEVICE:-cuda}  # cpu: the same tests under the Triton interpreter (a dry run)
BENCH_ARGS=${BENCH_ARGS:-}          # appended to every bench invocation (later options win), e.g. for a CPU dry run
T0=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
# wheels carried in .whl (e.g. adasplash, for the bench's comparison): installed aside, never over the image's
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

log() { echo ">> [$(date -u +%H:%M:%S)] $*" | tee -a "$SUMMARY"; }

env_info() {
  log "machine"
  {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -2
    "$PY" -c 'import torch, triton, sys; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| triton", triton.__version__, "| cuda", torch.version.cuda, "|", torch.cuda.get_device_name())' 2>&1
  } | sed 's/^/    /' | tee -a "$SUMMARY"
}

part_kernels() {
  log "kernels: tests/kernels compiled on CUDA (ADASPARSE_TEST_DEVICE=cuda, no float64), ${KERNELS_S} s at most"
  # -v: one line per test as it finishes, so a timeout still leaves every result before it in the log
  ADASPARSE_TEST_DEVICE=$KERNELS_DEVICE timeout "$KERNELS_S" "$PY" -m pytest -v -p no:cacheprovider tests/kernels \
    -m "not fp64" -k "not compile_for_h100 and not every_candidate_tile" 2>&1 | tee "$OUT/kernels.log" | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" \
    | sed 's/^/    /' | tee -a "$SUMMARY"
}

bench() {  # bench SECONDS ARGS...: one invocation, cut to what is left of the budget, rows appended to the log
  local want=$1 t
  shift
  t=$(left)
  [ "$t" -gt "$want" ] && t=$want
  if [ "$t" -lt 20 ]; then
    log "bench: skipped ($*): budget spent"
    return
  fi
  # shellcheck disable=SC2086
  timeout "$t" "$PY" -m adasparse bench attention "$@" $BENCH_ARGS 2>&1 | tee -a "$OUT/bench_attention.log" \
    | grep -E '^\||^#|rror' | tee -a "$SUMMARY"
}

part_bench() {
  log "bench: adasparse bench attention (bf16, B=1, H=16, D=64), $(left) s left"
  # 1. dense-ish scores (q, k ~ N(0, 1)): 4k and 32k, the reference path at 4k only, AdaSplash v1 (non-causal)
  bench 150 --seq-lens 4096 32768 --reps 10 --row-budget-s 15
  # 2. the sparsity point: local inputs (most tiles empty at α ≥ 1.25), 4k, non-causal
  bench 60 --seq-lens 4096 --inputs local --q-scale 1 --length-scale 64 --no-reference --no-check --no-header \
    --reps 10 --row-budget-s 10
  # 3. causal at 4k; AdaSplash-2 last: its autotuner compiles ~60 configs on first use (1–3 min), so with
  #    less than 200 s left it gets AdaSplash's own one-config switch (said in the summary)
  bench 60 --seq-lens 4096 --causal --no-check --no-header --reps 10 --row-budget-s 10 \
    --candidates sdpa-flash "triton learned α" "triton α=1.5" "reference learned α"
  if [ "$(left)" -lt 200 ]; then
    log "bench: AdaSplash-2 with ADASPLASH_TEST_FAST_AUTOTUNE=1 (one config: $(left) s left)"
    export ADASPLASH_TEST_FAST_AUTOTUNE=1
  fi
  bench 240 --seq-lens 4096 --causal --no-check --no-header --reps 10 --row-budget-s 10 \
    --candidates sdpa-flash "adasplash α=1.5"
  log "bench: done, $(left) s of the budget left"
}

part_tiles() {
  # every tile candidate of adasparse.kernels.tiles, forward and backward timed on the bench's shape (bf16, B=1,
  # H=16, D=64, 4k; learned α with its gradient, then α = 1.5), one line per candidate as it is measured, the
  # winners last: what to write into tiles.TABLE
  # every candidate tile pair against the reference first (compiled; run 1 leaves this test out for time)
  log "tiles: tests/kernels/test_tiles.py compiled on CUDA, 120 s at most"
  ADASPARSE_TEST_DEVICE=$KERNELS_DEVICE timeout 120 "$PY" -m pytest -v -p no:cacheprovider tests/kernels/test_tiles.py \
    2>&1 | tee "$OUT/tiles_tests.log" | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" | sed 's/^/    /' \
    | tee -a "$SUMMARY"
  log "tiles: tune_tiles on bf16 B=1 H=16 D=64 L=${TILES_LEN:-4096} (learned α, then α = 1.5), ${TILES_S:-300} s at most"
  timeout "${TILES_S:-300}" "$PY" - <<'EOF' 2>&1 | tee "$OUT/tiles.log" | sed 's/^/    /' | tee -a "$SUMMARY"
import os

import torch
from adasparse.kernels.tiles import candidates, tune_tiles

# a dry run on CPU: TRITON_INTERPRET=1 TILES_LEN=64 TILES_N=2 (times mean nothing there)
dev = "cuda" if torch.cuda.is_available() else "cpu"
L, n = int(os.environ.get("TILES_LEN", 4096)), int(os.environ.get("TILES_N", 0))
configs = candidates(64)[:n] if n else None
torch.manual_seed(0)
for name, alpha in (("learned", torch.full((16,), 1.3, device=dev, requires_grad=True)), ("1.5", 1.5)):
    q, k, v = (torch.randn(1, 16, L, 64, device=dev, dtype=torch.bfloat16) for _ in range(3))
    rows = []
    best = tune_tiles(q, k, v, alpha, configs=configs, reps=5, timings=rows)
    for cfg, tf, tb in rows:
        print(f"alpha {name}  {cfg}  fwd {tf * 1e3:8.3f} ms  bwd {tb * 1e3:8.3f} ms", flush=True)
    print(f"alpha {name}  BEST {best}", flush=True)
EOF
}

part_m30k() {
  if [ ! -f "$M30K/train.de.gz" ]; then
    log "m30k: skipped, no $M30K/train.de.gz (copy ../shared/data/multi30k/* there and carry it)"
    return
  fi
  log "m30k: small models ($M30K_MODELS) trained at once, ${M30K_MINUTES} min each (max $M30K_STEPS updates), then test BLEU"
  local runs=runs/gpu-m30k pids=() a extra=() kv
  mkdir -p "$runs"
  for kv in $M30K_SET; do extra+=(--set "$kv"); done
  # the paper's three, learned α started near softmax (α = 1.1 in every head instead of θ ~ N(0, 1)), and
  # learned α whose θ learn 10× faster (alpha_lr_scale=10; Adam moves θ by ≈ lr per update, so at 1× α barely
  # leaves its start in a short run): is the sparse models' slower start (CPU, 1,500 updates) the α's?
  for a in $M30K_MODELS; do
    local att=$a init=()
    [ "$a" = learned_a1.1 ] && att=learned init=(--set model.alpha_init=1.1)
    [ "$a" = learned_lr10 ] && att=learned init=(--set alpha_lr_scale=10)
    timeout $((M30K_MINUTES * 60 + 240)) "$PY" -m adasparse train --config benchmarks/configs/multi30k.yaml \
      --attention "$att" --out "$runs/$a" --overwrite --quiet "${init[@]}" \
      --set data_dir="$M30K" --set max_steps="$M30K_STEPS" --set valid_every=1000 --set max_minutes="$M30K_MINUTES" \
      --set num_threads=3 "${extra[@]}" >"$runs/$a.out" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  for a in $M30K_MODELS; do
    {
      echo "### $a"
      "$PY" - "$runs/$a/log.jsonl" <<'EOF'
import json, statistics, sys
recs = [json.loads(line) for line in open(sys.argv[1])]
train = [r for r in recs if r.get("kind") == "train"]
valid = [r for r in recs if r.get("kind") == "valid"]
tps = statistics.median(r["tokens_per_s"] for r in train[1:]) if len(train) > 1 else float("nan")
last = train[-1] if train else {}
print(f"updates {last.get('step')}  epoch {last.get('epoch')}  wall {last.get('time')} s  median tokens/s {tps:.0f}")
for r in valid:
    print("valid", {k: v for k, v in r.items() if k not in ("kind", "alpha")})
EOF
      timeout 240 "$PY" -m adasparse evaluate --checkpoint "$runs/$a" --beam 5 \
        --src "$M30K/test_2016_flickr.de.gz" --ref "$M30K/test_2016_flickr.en.gz" --output "$runs/$a/test.hyp"
    } 2>&1 | tee -a "$OUT/m30k.log" | sed 's/^/    /' | tee -a "$SUMMARY"
  done
  log "m30k: analysis report (300 validation sentences)"
  # shellcheck disable=SC2086
  timeout 300 "$PY" -m adasparse analyze $(printf "$runs/%s " $M30K_MODELS) --names $M30K_MODELS \
    --data "$M30K/val.de.gz" "$M30K/val.en.gz" --max-sentences 300 --out "$runs/report" 2>&1 \
    | tee -a "$OUT/m30k.log" | tail -25 | sed 's/^/    /' | tee -a "$SUMMARY"
  cp "$runs/report/report.html" "$OUT/m30k_report.html" 2>/dev/null
  # logs (α trajectories), metrics and hypotheses in one small archive; checkpoints stay behind
  tar -czf "$OUT/m30k_runs.tar.gz" "$runs"/*.out "$runs"/*/log.jsonl "$runs"/*/test.hyp "$runs/report/metrics.json" \
    2>/dev/null
}

[ $# -gt 0 ] || set -- kernels bench  # run 1; m30k is run 2, in another lease
env_info
for part in "$@"; do
  case "$part" in
    kernels | bench | m30k | tiles) "part_$part" ;;
    *) log "unknown part '$part' (kernels, bench, m30k, tiles)"; exit 2 ;;
  esac
done
log "done"
