"""scripts/collect_results.py: like-with-like paper comparison and the Table-2 layout."""

from __future__ import annotations

import importlib.util
import json

import yaml
from conftest import REPO

spec = importlib.util.spec_from_file_location("collect_results", REPO / "scripts" / "collect_results.py")
collect_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_results)


def _block(mean, std=0.5):
    return {"mean": mean, "std": std, "accs": [mean - std, mean + std]}


def _run(root, name, algo, dataset, ipc, archs):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
        {"ipc": ipc, "synset": {"name": "pixels"}, "algorithm": {"name": algo}, "dataset": {"name": dataset}}))
    tables = {a: {"final": _block(f), "best_val": _block(f + 1), "best_test": _block(f + 2), "num_models": 5,
                  "model": a} for a, f in archs.items()}
    first = next(iter(tables.values()))
    (d / "eval.json").write_text(json.dumps({"mean": first["final"]["mean"], "std": 0.5, "num_models": 5,
                                             "dataset": dataset, "architectures": tables}))


def test_paper_figure_sits_beside_the_column_with_its_selection_rule(tmp_path):
    _run(tmp_path, "t", "tesla", "cifar10", 1, {"convnet": 36.0})
    _run(tmp_path, "r", "random", "cifar10", 1, {"convnet": 16.0})
    rows = collect_results.collect(tmp_path)
    table = collect_results.markdown(rows)
    tesla = next(line for line in table.splitlines() if line.startswith("| tesla"))
    assert "**38.00 ± 0.50**" in tesla and "48.5 ± 0.8" in tesla and "test-selected" in tesla
    random = next(line for line in table.splitlines() if line.startswith("| random"))
    assert "**16.00 ± 0.50**" in random and "→ final" in random


def test_table2_layout_from_per_architecture_results(tmp_path):
    _run(tmp_path, "x", "tesla", "cifar10", 10, {"convnet": 60.0, "resnet18_ap": 40.0, "vit": 30.0})
    text = collect_results.table2(collect_results.collect(tmp_path))
    row = next(line for line in text.splitlines() if line.startswith("| CIFAR-10 | tesla"))
    assert "60.00 ± 0.50 / 61.00 ± 0.50 | 66.4" in row and "40.00 ± 0.50 / 41.00 ± 0.50 | 48.9" in row
    assert "30.00 ± 0.50 / 31.00 ± 0.50 | 34.8" in row
    assert "| CIFAR-100 | random | – | –" in text
