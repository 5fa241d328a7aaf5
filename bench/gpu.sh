#!/usr/bin/env bash
# Every speed figure of a GPU machine in one command (under 8 minutes):
#   bench/gpu.sh OUTDIR          on the GPU machine: installs wheels/gpu/*.whl (make gpu-wheels) into a
#                                temporary folder without network, then runs bench/gpu.py with the inputs
#                                of bench/media (make gpu-media)
#   bench/gpu.sh --dry OUTDIR    the same plan on CPU with tiny models, one configuration per bench
# PYTHON picks the interpreter (default python3). Writes OUTDIR/gpu-report.md and OUTDIR/gpu-report.json.
set -euo pipefail
DRY=()
if [ "${1:-}" = "--dry" ]; then DRY=(--dry); shift; fi
OUT="${1:?usage: bench/gpu.sh [--dry] OUTDIR}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
if [ ${#DRY[@]} -eq 0 ]; then
  shopt -s nullglob
  WHEELS=("$ROOT"/wheels/gpu/*.whl)
  if [ ${#WHEELS[@]} -eq 0 ]; then
    echo "bench/gpu.sh: no wheels in $ROOT/wheels/gpu: run \`make gpu-wheels\` on a machine with network and carry wheels/" >&2
    exit 2
  fi
  TARGET="$(mktemp -d)"
  trap 'rm -rf "$TARGET"' EXIT
  echo "[gpu] installing ${#WHEELS[@]} wheels into $TARGET"
  "$PY" -m pip install -q --no-index --no-deps --target "$TARGET" "${WHEELS[@]}"
  export PYTHONPATH="$ROOT:$TARGET${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" "$ROOT/bench/gpu.py" "${DRY[@]}" "$OUT"
