"""Eval stage (ALGORITHMS.md section 8): train `eval.num_models` fresh networks of every architecture in
`eval.models` on a synthetic set and write eval.json (format: evaluation/report.py).

Work is split into units (architecture x network index, evaluation/units.py) whose results are stored under
`<eval.output_dir or run dir>/eval_units/`: `eval.units=[start,stop)` runs a slice (parallel jobs), a unit
already on disk for the same plan is not redone, and eval.json is written once every unit is present
(`eval.merge=true`: merge only)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .. import atomic
from ..errors import DataError
from ..evaluation.data import measure_sets
from ..evaluation.ddranking import run_ddranking
from ..evaluation.protocol import learned_or_fixed_lr, lr_overrides, protocols_by_arch, resolve_protocol
from ..evaluation.report import build_report, network_rows, table_rows
from ..evaluation.runner import architectures, check_architectures, run_units
from ..evaluation.units import UNITS_DIR, missing_units, plan_units, require_all, select_units, write_unit
from ..lanes import resolve_lanes
from ..models import canonical_name
from ..pictures import grid_columns, save_image_grid
from ..synset.file import SynsetFile
from ..synset.interop import synset_for_eval
from .selection import add_checkpoint_rules, checkpoint_record, finished_checkpoints, prune_sets

log = logging.getLogger(__name__)

__all__ = ["run_eval", "evaluate_synset", "eval_lr"]


def eval_lr(ecfg, syn: SynsetFile) -> float:
    return learned_or_fixed_lr(ecfg, syn.lr)


def _check_classes(syn: SynsetFile, real) -> None:
    if len(syn.class_names) != real.num_classes:
        raise DataError(f"synthetic set has {len(syn.class_names)} classes but dataset `{real.name}` has "
                        f"{real.num_classes}: evaluate it with the dataset it was distilled from.")


def _check_image_shape(syn: SynsetFile, real, source) -> None:
    """Networks are sized for the dataset's images: a set of another size would fail deep inside a layer."""
    got, want = tuple(syn.images.shape[1:]), tuple(real.image_shape)
    if got != want:
        raise DataError(f"Synthetic set {source} holds images of shape {got} (channels, height, width), but dataset "
                        f"`{real.name}` gives {want}: evaluate it with the dataset and image size it was distilled "
                        f"with (e.g. `dataset.image_size={got[-1]}`), or distill a set at this size.")


def _augment_name(cfg) -> str:
    """e.g. `dsa:flip_rotate/one` (recorded in the protocol: which augmentation trained the networks)."""
    a = cfg.augment
    if "strategy" not in a:
        return str(a.name)
    return f"{a.name}:{a.strategy}" + (f"/{a.mode}" if "mode" in a else "")


def evaluate_synset(syn: SynsetFile, cfg, ctx, num_models: int, epochs: int, stream: str = "eval",
                    progress: bool = True) -> list[float]:
    """Final test accuracies (%) of `num_models` networks of the distillation's architecture trained on `syn`
    for `epochs` units of the configured protocol (distillation's quick evaluations). The model-space test
    set is cached in the run context, so repeated calls do not preprocess it again."""
    _check_classes(syn, ctx.real)
    proto = resolve_protocol(cfg.eval, syn.lr, int(syn.images.shape[0]), _augment_name(cfg), epochs=epochs,
                             eval_at=[])
    arch = canonical_name(cfg.model.name)  # the distillation's own architecture, whatever eval.models lists
    units = plan_units([arch], num_models)
    proto = protocols_by_arch(proto, [arch], cfg.eval)[arch]  # eval.lr_by_model
    results = run_units(units, {arch: cfg.model}, syn, proto, _augment(cfg, ctx), measure_sets(syn, ctx, False),
                        int(cfg.seed), stream, ctx.device, _batched(cfg, ctx), ctx.real.num_classes, progress,
                        lanes=_lanes(cfg, ctx))
    return [results[u]["final"] for u in units]


def _batched(cfg, ctx) -> bool:
    """`eval.batched`: auto stacks networks on CUDA only (on CPU vmap's grouped convolutions run slower than
    the networks one at a time; `eval.lanes` uses the cores instead)."""
    value = cfg.eval.batched
    return ctx.device.type == "cuda" if str(value) == "auto" else bool(value)


def _lanes(cfg, ctx) -> int:
    """`eval.lanes`: auto = torch's intra-op thread count on CPU (networks side by side), 1 on CUDA."""
    return resolve_lanes(cfg.eval.get("lanes", "auto"), ctx.device, "eval.lanes")


def _augment(cfg, ctx):
    return ctx.augment if cfg.eval.augment else (lambda images, gen: images)


def _synset_sha1(syn: SynsetFile) -> str:
    h = hashlib.sha1(syn.images.detach().cpu().contiguous().numpy().tobytes())
    h.update(syn.labels.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr(syn.lr).encode())
    return h.hexdigest()[:16]


def eval_plan(cfg, ctx, syn: SynsetFile, specs: dict):
    """The protocol for `syn` and everything a unit's result depends on (a stored unit made under another
    plan is never reused)."""
    proto = resolve_protocol(cfg.eval, syn.lr, int(syn.images.shape[0]), _augment_name(cfg))
    val_size = 0 if ctx.real.val_x is None else int(ctx.real.val_x.shape[0])
    plan = {"seed": int(cfg.seed), "architectures": list(specs), "num_models": int(cfg.eval.num_models),
            "protocol": proto.as_dict(), "synset_sha1": _synset_sha1(syn), "val_size": val_size,
            "dataset": ctx.real.name}
    train_count = cfg.eval.get("train_measure", 0)
    if train_count:  # only then: units stored before the option existed keep matching
        plan["train_measure"] = train_count
    over = {a: lr for a, lr in lr_overrides(cfg.eval).items() if a in specs}
    if over:  # eval.lr_by_model, likewise only when set
        plan["lr_by_model"] = over
    return proto, plan


def run_plan(cfg, ctx, syn: SynsetFile, specs: dict, folder: Path, select=None, progress: bool = True):
    """Train the units of `select` (null: all) that `folder` does not hold yet, storing each as it finishes.
    Returns (protocol, plan, every unit's stored result or None while some are missing)."""
    proto, plan = eval_plan(cfg, ctx, syn, specs)
    units = plan_units(list(specs), int(cfg.eval.num_models))
    todo = missing_units(folder, select_units(units, select), plan)
    if todo:
        log.info("eval: %d unit(s) to run of %d (%s)", len(todo), len(units), ", ".join(u.file_name for u in todo))
        # Each unit is stored the moment it is trained: a job killed mid-way reruns only what it had not finished.
        measure = measure_sets(syn, ctx, True, plan.get("train_measure"))
        run_units(todo, specs, syn, protocols_by_arch(proto, specs, cfg.eval), _augment(cfg, ctx), measure,
                  int(cfg.seed), "eval", ctx.device, _batched(cfg, ctx), ctx.real.num_classes, progress,
                  lanes=_lanes(cfg, ctx), on_done=lambda u, result: write_unit(folder, u, plan, result))
    if missing_units(folder, units, plan):
        return proto, plan, None
    return proto, plan, require_all(folder, units, plan)


def run_eval(cfg, ctx) -> dict:
    ecfg = cfg.eval
    own = not ecfg.synset_path
    path = Path(ecfg.synset_path) if ecfg.synset_path else ctx.run_dir / "synset.pt"
    out_dir = Path(ecfg.output_dir) if ecfg.output_dir else ctx.run_dir
    syn = synset_for_eval(ecfg, ctx, path)  # ours, or another code's (eval.synset_format, docs/interop.md)
    _check_classes(syn, ctx.real)
    _check_image_shape(syn, ctx.real, path)
    specs = architectures(cfg)
    check_architectures(specs, syn, ctx.real.num_classes)
    folder = out_dir / UNITS_DIR
    units = plan_units(list(specs), int(ecfg.num_models))
    if ecfg.merge:
        proto, plan = eval_plan(cfg, ctx, syn, specs)
    else:
        proto, plan, done_units = run_plan(cfg, ctx, syn, specs, folder, ecfg.units)
        if done_units is None:
            done = len(units) - len(missing_units(folder, units, plan))
            log.info("eval: %d of %d units done in %s; eval.json is written when all are", done, len(units), folder)
            print(f"eval units: {done}/{len(units)} done in {folder}", flush=True)
            return {"eval/units_done": done}
    val_size = plan["val_size"]
    stored = require_all(folder, units, plan)
    by_arch: dict[str, list[dict]] = {a: [] for a in specs}
    for r in stored:
        by_arch[r["arch"]].append(r)
    header = {"synset_path": str(path), "num_images": int(syn.images.shape[0]),  # patches for a poster
              "dataset": syn.dataset, "meta": syn.meta, "validation": {"size": val_size},
              "labels": "soft" if syn.soft_labels else "hard", "preprocess": syn.preprocess.description}
    if "poster_hw" in syn.extra:  # PoDD: what the patches were cut from
        header["poster"] = {k: syn.extra[k] for k in ("poster_hw", "class_grid", "patch_grid", "num_patches",
                                                      "effective_ipc", "labels") if k in syn.extra}
    report = build_report(by_arch, specs, proto.as_dict(), header,
                          protocols={a: p.as_dict() for a, p in protocols_by_arch(proto, specs, ecfg).items()})
    # The set's distillation checkpoints (distill.select_every) and the rules over them; the final set is one.
    first = next(iter(specs))
    final_record = checkpoint_record(int(syn.meta.get("iterations", 0) or 0), path.name, report["architectures"][first])
    earlier = finished_checkpoints(cfg, ctx, {first: specs[first]}, syn) if own else []
    add_checkpoint_rules(report, earlier + [final_record], ctx.run_dir if own else None, path)
    if own:
        prune_sets(cfg, report, ctx.run_dir)
    extra = {}
    if (ecfg.get("ddranking") or {}).get("enabled"):  # eval=ddranking: HLR / IOR / LRS beside the accuracies
        report["ddranking"] = run_ddranking(cfg, ctx, syn, report, first, specs[first],
                                            protocols_by_arch(proto, specs, ecfg)[first], _augment(cfg, ctx),
                                            _batched(cfg, ctx), _lanes(cfg, ctx))
        extra = {f"eval/{k}_mean": report["ddranking"][k]["mean"] for k in ("hlr", "ior", "lrs")}
    atomic.write_json(report, out_dir / "eval.json")
    _publish(report, syn, ctx, out_dir)
    val_mean = (report.get("best_val") or {}).get("val_mean")  # held-out validation (dataset.val_size > 0)
    if val_mean is not None:
        extra["eval/val_mean"] = val_mean
    return {"eval/acc_mean": report["mean"], "eval/acc_std": report["std"], **extra}


def _publish(report: dict, syn: SynsetFile, ctx, out_dir: Path) -> None:
    png = save_image_grid(syn.images, syn.preprocess, out_dir / "eval_synset.png",
                          per_row=grid_columns(syn.images.shape[0], len(syn.class_names)))
    metrics = {"eval/acc_mean": report["mean"], "eval/acc_std": report["std"],
               "eval/best_test_mean": report["best_test"]["mean"]}
    if report["best_val"] is not None:
        metrics["eval/best_val_mean"] = report["best_val"]["mean"]
    ctx.tracker.log(metrics)
    ctx.tracker.log_image("eval/synset", png)
    ctx.tracker.summary({**metrics, "eval/num_models": report["num_models"]})
    rows = table_rows(report)
    ctx.tracker.log_eval_table(rows, name="eval/architectures")  # issue 7: one row per architecture
    ctx.tracker.log_eval_table(network_rows(report))  # issue 8: one row per network (the eval artifact)
    for row in rows:
        bv = "n/a" if row["best_val_mean"] is None else f"{row['best_val_mean']:.2f}"
        log.info("eval %s: final %.2f +- %.2f, best_val %s, best_test %.2f (%d models)", row["arch"],
                 row["final_mean"], row["final_std"], bv, row["best_test_mean"], row["num_models"])
    print(f"eval accuracy: {report['mean']:.2f} +- {report['std']:.2f} % over {report['num_models']} models",
          flush=True)
