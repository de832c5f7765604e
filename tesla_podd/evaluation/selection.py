"""From accuracy curves to the reported numbers (issue 7 section 2; FIDELITY.md F6).

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
