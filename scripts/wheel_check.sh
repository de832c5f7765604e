#!/usr/bin/env bash
# `make wheel-check`: build the wheel, install it into a fresh venv outside the checkout and run the console
# script from a folder outside the checkout: `tesla-podd --help`, `python -m tesla_podd.train --help` and
# `tesla-podd debug=smoke`. The fresh venv reuses the packages of the project venv (torch included) through a
# .pth line, so nothing is downloaded; only the wheel itself is installed (--no-deps).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PY:-$repo/.venv/bin/python}
[[ $py = /* ]] || py=$repo/$py
work=$(mktemp -d "${TMPDIR:-/tmp}/tesla-podd-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# 1. Build from a copy of the sources, so the checkout gets no build/ folder.
mkdir -p "$work/src"
(cd "$repo" && cp -r pyproject.toml setup.py MANIFEST.in README.md LICENSE CITATION.cff conf tesla_podd "$work/src/")
isolation=()
if "$py" -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 64)" 2>/dev/null; then
  isolation=(--no-build-isolation)  # the project venv has a recent setuptools: no download
fi
"$py" -m pip wheel -q --no-deps "${isolation[@]}" -w "$work/dist" "$work/src"
wheel=$(ls "$work"/dist/tesla_podd-*.whl)
echo "built $(basename "$wheel")"
"$py" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "tesla_podd/conf/train.yaml" in names, "the wheel ships no configs"
assert not any(n.startswith("tesla_podd/conf/local/") for n in names), "machine settings leaked into the wheel"
print(f"wheel: {sum(n.startswith('tesla_podd/conf/') for n in names)} config files")
PY

# 2. A fresh venv that sees the project venv's packages (not its editable tesla_podd: a .pth line adds a
#    plain path, whose own .pth files Python does not run).
"$py" -m venv --without-pip "$work/venv"
vpy=$work/venv/bin/python
site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$py" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' > "$site/project_venv.pth"
"$vpy" -m pip install -q --no-deps --ignore-installed --no-index "$wheel"

# 3. Run it from a folder outside the checkout.
mkdir -p "$work/elsewhere" && cd "$work/elsewhere"
"$vpy" -c "import tesla_podd.conf_dir as c, sys; d = str(c.config_dir()); print('configs:', d); \
sys.exit(0 if d.startswith('$work/venv/') else 'the configs were not read from the installed wheel')"
"$work/venv/bin/tesla-podd" --help > help.txt
grep -q "hydra/launcher" help.txt && grep -q "experiment" help.txt
"$vpy" -m tesla_podd.train --help > /dev/null
WANDB_MODE=disabled OMP_NUM_THREADS=1 "$work/venv/bin/tesla-podd" debug=smoke num_threads=1 \
  paths.output_root="$work/out" > smoke.log 2>&1 || { tail -30 smoke.log; exit 1; }
ls "$work"/out/runs/*/*/results.json > /dev/null
echo "wheel check passed in $((SECONDS - start)) s (wheel built, installed outside the checkout, --help and debug=smoke ran)"
