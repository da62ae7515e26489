#!/usr/bin/env bash
# Carry unfinished (or just finished) runs to the next session: for each run folder, its log and its newest intact
# checkpoint, with its best one when that is older, replace benchmarks/carry/<name>/ (assembled aside, then renamed).
#   bash benchmarks/carry/carry.sh runs/g2p-entmax15 runs/m30k-paper-learned ...
#   bash benchmarks/carry/carry.sh --best-only runs/g2p-softmax     # a finished run: its best checkpoint alone
set -euo pipefail
BEST_ONLY=0
if [ "${1:-}" = "--best-only" ]; then BEST_ONLY=1; shift; fi
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
for run in "$@"; do
  name=$(basename "$run")
  dst=benchmarks/carry/$name
  mapfile -t keep < <("$PY" - "$run" "$BEST_ONLY" <<'EOF'
import sys
from adasparse.train.checkpoint import CheckpointManager
m = CheckpointManager(sys.argv[1], create=False)  # the run's own metric direction (its manifests)
latest = None if sys.argv[2] == "1" else m.latest_intact()[0]
for p in dict.fromkeys(p for p in (latest, m.best()) if p is not None):
    print(p)
EOF
  )
  [ "${#keep[@]}" -gt 0 ] || { echo "carry: $run has no intact checkpoint" >&2; exit 2; }
  rm -rf "$dst.tmp" && mkdir -p "$dst.tmp/checkpoints"
  cp "$run/log.jsonl" "$dst.tmp/"
  for c in "${keep[@]}"; do cp -r "$c" "$dst.tmp/checkpoints/"; done
  rm -rf "$dst" && mv "$dst.tmp" "$dst"
  mkdir -p benchmarks/logs && cp "$run/log.jsonl" "benchmarks/logs/$name.log.jsonl"
  echo "carried $name: $(printf '%s ' "${keep[@]##*/}")($(du -sh "$dst" | cut -f1))"
done
