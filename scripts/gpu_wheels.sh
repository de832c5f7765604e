#!/usr/bin/env bash
# Wheels of the project's non-torch packages for a GPU machine that has torch but no internet, into a git-ignored
# folder (default .gpu-wheels/) that travels with the working tree; scripts/gpu_check.sh installs them there.
#   bash scripts/gpu_wheels.sh [DIR]          (make gpu-wheels)
# Versions: those of this checkout's .venv (what the tests ran with). Target: CPython $GPU_PYTHON (default 3.12)
# on x86-64 Linux. wandb and open_clip are left out: the check never imports them (W&B off, no CLIP in smoke runs).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu-wheels}
PY=${PYTHON:-.venv/bin/python}
TARGET=${GPU_PYTHON:-3.12}
[ -x "$PY" ] || PY=python3
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p "$DIR"
rm -f "$DIR"/*.whl
pins=()
for pkg in hydra-core omegaconf kornia kornia_rs; do pins+=("$pkg==$(version "$pkg")"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$DIR" "${pins[@]}"
# antlr4-python3-runtime (omegaconf's parser) is published as a source archive only: build its pure-Python wheel.
"$PY" -m pip wheel -q --no-deps -w "$DIR" "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
ls -la "$DIR"
du -sh "$DIR"
