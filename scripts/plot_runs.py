#!/usr/bin/env python
"""Overlay the curves of several runs: one PNG per distillation metric (a line per run) and one per evaluated
architecture (each run's test accuracy against training length), from each run's metrics.csv and eval.json.

    python scripts/plot_runs.py outputs/multirun/<time>                 # every run of a multirun
    python scripts/plot_runs.py outputs/runs/a/<time> outputs/runs/b/<time> --out my_plots
    make plots RUNS="outputs/multirun/<time>"

A folder holding metrics.csv or eval.json is a run; any other folder is searched for runs. Each line is named
by the overrides that differ between the runs (from each run's .hydra/overrides.yaml: the swept keys of a
multirun), else by its folder. Output: `--out`, default `plots_overlay/` in the folder the runs share."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from tesla_podd import curves
from tesla_podd.metrics_file import FILENAME as METRICS

RUN_FILES = (METRICS, "eval.json")


def find_runs(paths: list[str]) -> list[Path]:
    runs: list[Path] = []
    for p in map(Path, paths):
        if any((p / f).is_file() for f in RUN_FILES):
            runs.append(p)
        elif p.is_dir():
            found = {f.parent for name in RUN_FILES for f in p.rglob(name)}
            runs += sorted(r for r in found if "eval_units" not in r.parts)
    return list(dict.fromkeys(runs))


def _overrides(run: Path) -> dict[str, str]:
    f = run / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return {}
    items = yaml.safe_load(f.read_text()) or []
    return dict(item.split("=", 1) for item in items if isinstance(item, str) and "=" in item)


def labels(runs: list[Path]) -> dict[str, Path]:
    """{label: run}: the overrides that differ between runs, else the folder relative to the shared parent."""
    overrides = [_overrides(r) for r in runs]
    keys = sorted({k for o in overrides for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    common = Path(os.path.commonpath([r.resolve() for r in runs])) if runs else Path(".")
    out: dict[str, Path] = {}
    for run, o in zip(runs, overrides):
        label = " ".join(f"{k}={o[k]}" for k in varying if k in o)
        if not label or label in out:
            label = str(run.resolve().relative_to(common)) if run.resolve() != common else run.name
        out[label] = run
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders, or folders to search for runs (e.g. a multirun)")
    ap.add_argument("--out", default=None, help="output folder (default: plots_overlay/ beside the runs)")
    args = ap.parse_args(argv)
    runs = find_runs(args.runs)
    if not runs:
        print(f"Error: no run found in {' '.join(args.runs)}: a run folder holds {METRICS} or eval.json.",
              file=sys.stderr)
        return 2
    if curves._figure_class() is None:
        print("Error: plot_runs.py needs matplotlib: pip install matplotlib (or the dev extra).", file=sys.stderr)
        return 2
    named = labels(runs)
    common = Path(os.path.commonpath([r.resolve() for r in runs]))
    out = Path(args.out) if args.out else common / "plots_overlay"
    written = curves.overlay(named, out)
    for label, run in named.items():
        print(f"  {label}: {run}")
    print(f"{len(written)} PNG files in {out} from {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
