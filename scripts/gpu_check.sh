#!/usr/bin/env bash
# The GPU check as a lent one-GPU machine runs it (docs/gpu.md):
#   bash scripts/gpu_check.sh [OUT] [gpu_check.py options, e.g. --dry-run]
# OUT: the report folder (default docs/bench/gpu). GPU_CHECK_DEADLINE: seconds for the whole check (default 480);
# GPU_CHECK_STEPS=a,b: rerun those steps into the existing report. PYTHON: the interpreter (default: .venv's, else
# python3). The project's non-torch packages are installed from .gpu-wheels/ (make gpu-wheels) when they cannot be
# imported; nothing is fetched.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/bench/gpu}
[ $# -gt 0 ] && shift
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled PYTHONUNBUFFERED=1
need='import hydra, omegaconf, kornia, pytest, torch'
if ! "$PY" -c "$need" 2>/dev/null; then
  if ! ls .gpu-wheels/*.whl >/dev/null 2>&1; then
    echo "Error: $PY cannot import the project's packages ($need) and .gpu-wheels/ holds no wheels. Run" \
         "'make gpu-wheels' on a machine with internet and carry .gpu-wheels with the working tree, or install the" \
         "project there (make install)." >&2
    exit 2
  fi
  SITE=${TMPDIR:-/tmp}/gpu-check-site
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    .gpu-wheels/*.whl; then
    echo "Error: pip could not install .gpu-wheels/ for $("$PY" -V 2>&1) (above): rebuild them for this Python" \
         "with GPU_PYTHON=<its major.minor> make gpu-wheels." >&2
    exit 2
  fi
  export PYTHONPATH="$PYTHONPATH:$SITE"
  if ! "$PY" -c "$need"; then
    echo "Error: the wheels in .gpu-wheels/ installed into $SITE, yet '$need' still fails (above): rebuild them" \
         "for this Python ($("$PY" -V 2>&1)) with GPU_PYTHON=<its version> make gpu-wheels." >&2
    exit 2
  fi
fi
DEADLINE=${GPU_CHECK_DEADLINE:-480}
mkdir -p "$OUT"
# gpu_check.py keeps its own deadline; this outer limit only catches a hang it cannot interrupt (a stuck kernel).
timeout --kill-after=15 $((DEADLINE + 60)) "$PY" scripts/gpu_check.py --out "$OUT" --deadline "$DEADLINE" "$@" 2>&1 \
  | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
