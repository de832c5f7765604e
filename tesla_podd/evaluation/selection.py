"""From accuracy curves to the reported numbers: per evaluated set (lengths) and over distillation checkpoints.

Per network (curve = test/val accuracy at each evaluated length):
- `final`: test accuracy at the last length (what this project always reported);
- `best_val`: test accuracy at the length with the best *validation* accuracy (held-out split of the real
  train set: an honest model selection);
- `best_test`: the highest test accuracy over the evaluated lengths (selected on the test set, as MTT/TESLA
  and RaT-BPTT report: optimistic).
Aggregated over the K networks, a selection picks ONE length on the mean curve (as the references select on
their averaged test curve) and reports mean +- population std of the networks' test accuracies there.
"""

from __future__ import annotations

import statistics

RULES = {
    "final": "test accuracy after the full training length",
    "best_val": "test accuracy at the evaluated length with the best held-out validation accuracy",
    "best_test": "highest test accuracy over the evaluated lengths (test-selected, as the papers report)",
}


def _first_argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def per_model(curve: list[dict]) -> dict:
    tests = [p["test"] for p in curve]
    out = {"final": tests[-1], "best_test": max(tests), "best_test_length": curve[_first_argmax(tests)]["length"]}
    vals = [p.get("val") for p in curve]
    if all(v is not None for v in vals):
        i = _first_argmax(vals)
        out.update(best_val=tests[i], best_val_length=curve[i]["length"])
    else:
        out.update(best_val=None, best_val_length=None)
    return out


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "accs": list(values)}


def aggregate(curves: list[list[dict]]) -> dict:
    """Mean curve and the three selections over networks that share the evaluated lengths."""
    lengths = [p["length"] for p in curves[0]]
    mean_curve = []
    for j, length in enumerate(lengths):
        point = {"length": length, "test": _stats([c[j]["test"] for c in curves])}
        vals = [c[j].get("val") for c in curves]
        point["val"] = _stats(vals) if all(v is not None for v in vals) else None
        trains = [c[j].get("train") for c in curves]  # accuracy on real train images (eval.train_measure)
        point["train"] = _stats(trains) if all(v is not None for v in trains) else None
        mean_curve.append(point)
    final = {**_stats([c[-1]["test"] for c in curves]), "length": lengths[-1], "rule": RULES["final"]}
    j = _first_argmax([p["test"]["mean"] for p in mean_curve])
    best_test = {**mean_curve[j]["test"], "length": lengths[j], "rule": RULES["best_test"]}
    if all(p["val"] is not None for p in mean_curve):
        j = _first_argmax([p["val"]["mean"] for p in mean_curve])
        best_val = {**mean_curve[j]["test"], "length": lengths[j], "val_mean": mean_curve[j]["val"]["mean"],
                    "rule": RULES["best_val"]}
    else:
        best_val = None
    return {"final": final, "best_val": best_val, "best_test": best_test, "curve": mean_curve}


# ---- over distillation checkpoints (distill.select_every) ---------------------------------------------------
# A checkpoint record: {"iteration": N, "curve": the mean curve of `aggregate` (per length: test/val/train
# {mean, std, accs} or None)}. Each rule picks ONE (checkpoint, length) point on the mean curves and reports
# the mean +- std of the networks' test accuracies there; ties go to the earliest checkpoint, then the
# shortest length (the references keep a record only when a later one is strictly better).
CHECKPOINT_RULES = {
    "max_over_checkpoints": "highest mean test accuracy at the final length over distillation checkpoints "
                            "(MTT/TESLA: test-selected)",
    "max_over_checkpoints_and_lengths": "highest mean test accuracy over checkpoints x evaluated lengths "
                                        "(RaT-BPTT: test-selected)",
    "train_selected": "test accuracy at the checkpoint and length with the highest accuracy on real train "
                      "images (PoDD)",
    "val_selected_checkpoint": "test accuracy at the checkpoint and length with the best held-out validation "
                               "accuracy (honest)",
}


def _point(records: list[dict], key: str, final_only: bool) -> tuple[int, int] | None:
    """(record index, length index) of the first maximum of the mean `key` accuracy, or None when a record
    lacks that measurement."""
    best, where = None, None
    for i, rec in enumerate(records):
        curve = rec["curve"]
        for j in ([len(curve) - 1] if final_only else range(len(curve))):
            block = curve[j].get(key)
            if block is None:
                return None
            if best is None or block["mean"] > best:
                best, where = block["mean"], (i, j)
    return where


def _report(records: list[dict], where, rule: str, key: str | None = None) -> dict | None:
    if where is None:
        return None
    i, j = where
    point = records[i]["curve"][j]
    out = {**point["test"], "iteration": records[i]["iteration"], "length": point["length"],
           "rule": CHECKPOINT_RULES[rule]}
    if key is not None:
        out[f"{key}_mean"] = point[key]["mean"]
    return out


def over_checkpoints(records: list[dict]) -> dict:
    """The papers' rules and the honest one over checkpoint records (in iteration order)."""
    if not records:
        return {name: None for name in CHECKPOINT_RULES}
    return {
        "max_over_checkpoints": _report(records, _point(records, "test", True), "max_over_checkpoints"),
        "max_over_checkpoints_and_lengths": _report(records, _point(records, "test", False),
                                                    "max_over_checkpoints_and_lengths"),
        "train_selected": _report(records, _point(records, "train", False), "train_selected", "train"),
        "val_selected_checkpoint": _report(records, _point(records, "val", False), "val_selected_checkpoint",
                                           "val"),
    }
