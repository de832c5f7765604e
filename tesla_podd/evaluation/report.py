"""Merge unit results into eval.json: per architecture a table (final, best_val, best_test, mean curve, the
networks' own numbers, the protocol), and at the top level the first architecture's final numbers under the
keys every reader already knows (`accs`, `mean`, `std`, `num_models`, `model`, `protocol`).

eval.json (format 2):
  accs/mean/std/num_models/model/protocol   first architecture, final length (as before)
  final/best_val/best_test/curve            first architecture: {mean, std, accs, length, rule}; curve per length
  models                                    first architecture: per network {index, final, best_val, best_test, curve}
  architectures                             {arch: {model, reference, num_models, protocol, final, best_val,
                                               best_test, curve, models}} in `eval.models` order
  selection                                 the rule of each reported number
  checkpoints                               per evaluated distillation checkpoint (distill.select_every; the final
                                               set is the last): {iteration, synset, final, best_val, best_test,
                                               curve, models} of the first architecture
  max_over_checkpoints, max_over_checkpoints_and_lengths, train_selected, val_selected_checkpoint
                                            the rules over checkpoints (evaluation/selection.py): {mean, std, accs,
                                               iteration, length, rule} or null; synset_best: the set val picked
  validation                                {"size": held-out images (0: none)}
  synset_path, num_images, dataset, meta, poster (PoDD)
"""

from __future__ import annotations

from ..models import model_reference
from .selection import RULES, aggregate

FORMAT_VERSION = 2
_PER_MODEL = ("index", "final", "best_val", "best_val_length", "best_test", "best_test_length", "trained", "curve")


def architecture_table(arch: str, spec, results: list[dict], protocol: dict) -> dict:
    agg = aggregate([r["curve"] for r in results])
    return {"model": results[0]["model"], "reference": model_reference(spec), "num_models": len(results),
            "protocol": protocol, **agg, "models": [{k: r[k] for k in _PER_MODEL} for r in results]}


def build_report(results_by_arch: dict[str, list[dict]], specs: dict, protocol: dict, header: dict,
                 protocols: dict[str, dict] | None = None) -> dict:
    """`protocols`: each architecture's own protocol where they differ (`eval.lr_by_model`); else `protocol`."""
    protocols = protocols or {}
    tables = {a: architecture_table(a, specs[a], rs, protocols.get(a, protocol)) for a, rs in results_by_arch.items()}
    first = tables[next(iter(tables))]
    protocol = protocols.get(next(iter(tables)), protocol)
    return {
        "format_version": FORMAT_VERSION,
        "accs": first["final"]["accs"], "mean": first["final"]["mean"], "std": first["final"]["std"],
        "num_models": first["num_models"], "model": first["model"],
        "protocol": {**protocol, "reported": "mean/std/accs: final-length test accuracy, population std over "
                                             "models; best_val/best_test: see `selection`"},
        "final": first["final"], "best_val": first["best_val"], "best_test": first["best_test"],
        "curve": first["curve"], "models": first["models"],
        "architectures": tables, "selection": dict(RULES), **header,
    }


def table_rows(report: dict) -> list[dict]:
    """One flat row per architecture (W&B table, printing)."""
    rows = []
    for arch, t in report["architectures"].items():
        bv = t["best_val"] or {}
        rows.append({"arch": arch, "model": t["model"], "num_models": t["num_models"],
                     "final_mean": t["final"]["mean"], "final_std": t["final"]["std"],
                     "best_val_mean": bv.get("mean"), "best_val_std": bv.get("std"),
                     "best_test_mean": t["best_test"]["mean"], "best_test_std": t["best_test"]["std"],
                     "optimizer": t["protocol"]["optimizer"], "length": t["protocol"]["length"],
                     "length_unit": t["protocol"]["length_unit"]})
    return rows


def network_rows(report: dict) -> list[dict]:
    """One flat row per trained network (architecture, index, its three numbers)."""
    return [{"arch": arch, "model": t["model"], "index": m["index"], "final": m["final"], "best_val": m["best_val"],
             "best_test": m["best_test"], "trained": m["trained"]}
            for arch, t in report["architectures"].items() for m in t["models"]]
