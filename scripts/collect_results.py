#!/usr/bin/env python
"""Collect every eval.json under a folder into one Markdown table, beside the papers' figures.

    python scripts/collect_results.py outputs            # prints the table
    python scripts/collect_results.py outputs --md results.md --json results.json

Reads each run's eval.json and .hydra/config.yaml (never directory names)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

# Papers' figures (mean ± std, %): ../shared/reference/TARGETS.md.
PAPER = {
    ("random", "cifar10", 1): "15.4 ± 0.3", ("random", "cifar10", 10): "31.0 ± 0.5",
    ("random", "cifar10", 50): "50.6 ± 0.3", ("random", "cifar100", 1): "5.3 ± 0.2",
    ("random", "cifar100", 10): "18.6 ± 0.25", ("random", "cifar100", 50): "34.7 ± 0.4",
    ("mtt", "cifar10", 1): "46.3 ± 0.8", ("mtt", "cifar10", 10): "65.3 ± 0.7", ("mtt", "cifar10", 50): "71.6 ± 0.2",
    ("mtt", "cifar100", 1): "24.3 ± 0.3", ("mtt", "cifar100", 10): "40.6 ± 0.4", ("mtt", "cifar100", 50): "47.7 ± 0.2",
    ("tesla", "cifar10", 1): "48.5 ± 0.8", ("tesla", "cifar10", 10): "66.4 ± 0.8",
    ("tesla", "cifar10", 50): "72.6 ± 0.7", ("tesla", "cifar100", 1): "24.8 ± 0.4",
    ("tesla", "cifar100", 10): "41.7 ± 0.3", ("tesla", "cifar100", 50): "47.9 ± 0.3",
    ("tesla", "imagenet64", 1): "7.7 ± 0.2", ("tesla", "imagenet64", 2): "10.5 ± 0.3",
    ("tesla", "imagenet64", 10): "17.8 ± 1.3", ("tesla", "imagenet64", 50): "27.9 ± 1.2",
    ("rat_bptt", "cifar10", 10): "69.4 ± 0.4", ("rat_bptt", "cifar100", 10): "47.5 ± 0.2",
    ("podd", "cifar10", 1.0): "59.1 ± 0.5", ("podd", "cifar10", 0.9): "58.4 ± 0.5",
    ("podd", "cifar10", 0.8): "56.7 ± 0.7", ("podd", "cifar10", 0.7): "54.6 ± 0.5",
    ("podd", "cifar10", 0.6): "50.6 ± 0.3", ("podd", "cifar10", 0.5): "49.5 ± 0.5",
    ("podd", "cifar10", 0.4): "47.1 ± 0.4", ("podd", "cifar10", 0.3): "42.3 ± 0.3",
    ("podd", "cifar100", 0.9): "37.4 ± 0.2", ("podd", "cub200", 0.9): "15.2 ± 0.4",
    ("podd", "tinyimagenet", 0.9): "19.5 ± 0.2",
}


def method_of(cfg: dict) -> str:
    synset, algo = cfg.get("synset", {}).get("name"), cfg.get("algorithm", {}).get("name")
    if synset == "poster":
        return "podd" if algo == "rat_bptt" else f"podd+{algo}"
    return algo


def collect(root: Path) -> list[dict]:
    rows = []
    for ev in sorted(root.rglob("eval.json")):
        cfg_file = ev.parent / ".hydra" / "config.yaml"
        cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else {}
        report = json.loads(ev.read_text())
        method = method_of(cfg) if cfg else report.get("meta", {}).get("algorithm", "?")
        ipc = cfg.get("ipc", report.get("meta", {}).get("ipc"))
        dataset = report.get("dataset") or cfg.get("dataset", {}).get("name")
        ipc_key = float(ipc) if isinstance(ipc, float) else ipc
        rows.append({"run": str(ev.parent), "method": method, "dataset": dataset, "ipc": ipc,
                     "mean": report["mean"], "std": report["std"], "num_models": report["num_models"],
                     "effective_ipc": report.get("meta", {}).get("effective_ipc"),
                     "paper": PAPER.get((method, dataset, ipc_key), "–")})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| method | dataset | IPC | ours (mean ± std) | models | paper | run |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"] or "", r["method"] or "", float(r["ipc"] or 0))):
        lines.append(f"| {r['method']} | {r['dataset']} | {r['ipc']} | {r['mean']:.2f} ± {r['std']:.2f} | "
                     f"{r['num_models']} | {r['paper']} | `{r['run']}` |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, nargs="?", default=Path("outputs"))
    p.add_argument("--md", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = collect(args.root)
    table = markdown(rows)
    print(table)
    if args.md:
        args.md.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
