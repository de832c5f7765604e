"""Distill stage: the outer loop shared by every algorithm.

zero_grad -> algorithm.meta_step (fills .grad) -> gradient check -> optimiser steps -> projections ->
value check (divergence.py), with logging, periodic quick evaluation, pictures and atomic checkpoints
(checkpoint.py). `resume=true` continues from checkpoints/last.pt, `resume=auto` when there is one; each
iteration's randomness is seeded by (seed, iteration), so a resumed run gives the same result as an
uninterrupted one."""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext

from tqdm.auto import tqdm

from .. import atomic
from ..algorithms import build_algorithm
from ..pictures import save_synset_picture
from ..seeding import generator
from ..synset import build_synset
from ..synset.file import SynsetFile
from . import checkpoint, selection
from .averaging import SetAverage
from .divergence import DistillDiverged, check_gradients, check_values, real_bound, tensor_roles
from .evaluate import evaluate_synset

log = logging.getLogger(__name__)
__all__ = ["run_distill", "snapshot", "DistillDiverged"]


def snapshot(synset, algo, ctx, cfg, it: int) -> SynsetFile:
    batch = synset.materialize()
    labels = algo.final_labels()
    extra = synset.file_extra() if hasattr(synset, "file_extra") else {}
    meta = {"algorithm": cfg.algorithm.name, "synset": cfg.synset.name, "ipc": cfg.ipc, "seed": cfg.seed,
            "iterations": it, **({"effective_ipc": extra["effective_ipc"]} if "effective_ipc" in extra else {})}
    return SynsetFile(images=batch.x, labels=batch.y if labels is None else labels.detach(), lr=algo.eval_lr(),
                      preprocess=ctx.preprocess, class_names=ctx.real.class_names, dataset=cfg.dataset.name,
                      meta=meta, extra=extra)


def lr_factor(schedule: str, it: int, total: int) -> float:
    """Multiplier of every distillation lr at iteration `it` (0-based) of `total`; a function of the iteration
    alone, so a resumed run steps exactly as an uninterrupted one."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * it / max(1, total)))
    return 1.0


def run_distill(cfg, ctx) -> dict:
    dcfg = cfg.distill
    atomic.clean_orphans(ctx.run_dir / "checkpoints")  # the run dir itself is cleaned by train.run
    synset = build_synset(cfg, ctx)
    algo = build_algorithm(cfg, ctx, synset)
    opts = algo.optimizers()
    roles = tensor_roles(synset, opts)
    bound = real_bound(ctx.real, ctx.preprocess)
    ckpt_path = checkpoint.checkpoint_path(ctx.run_dir)
    average = SetAverage(synset, dcfg.average_decay) if dcfg.average_decay else None
    start = 0
    src = checkpoint.resume_source(cfg, ctx.run_dir)
    if src is not None:
        start = checkpoint.apply(checkpoint.load(src, cfg, synset, ctx.device), synset, algo, opts, average)
        log.info("resumed from %s at iteration %d", src, start)
        selection.finish_pending(cfg, ctx, start, int(algo.iterations))  # evaluations a killed run left undone

    def kept():  # the set that is saved and evaluated: the average when there is one
        return average.applied(synset) if average is not None else nullcontext(synset)

    def quick_eval(done: int) -> None:
        with kept():
            quick = snapshot(synset, algo, ctx, cfg, done)
        accs = evaluate_synset(quick, cfg, ctx, int(dcfg.eval_models),
                               int(dcfg.eval_epochs), stream=f"quick-eval-{done}", progress=False)
        ctx.tracker.log({"distill/quick_acc": sum(accs) / len(accs)}, step=done)
        log.info("iteration %d: quick eval %.2f%%", done, sum(accs) / len(accs))

    if dcfg.eval_at_start and start == 0:  # the initial set, as the references evaluate at iteration 0
        quick_eval(0)
    total = int(algo.iterations)
    select_every = int(dcfg.get("select_every") or 0)  # full evaluations over checkpoints (stages/selection.py)
    selecting = select_every > 0
    base_lrs = [[g["lr"] for g in o.param_groups] for o in opts]  # this run's lrs (checkpoint.apply keeps them)
    bar = tqdm(range(start, total), desc=f"distill {cfg.algorithm.name}", initial=start, total=total,
               mininterval=2.0, disable=total == 0)
    for it in bar:
        for o in opts:
            o.zero_grad(set_to_none=True)
        metrics = algo.meta_step(it, generator(cfg.seed, "distill", it))
        check_gradients(metrics["loss"], roles, it, ckpt_path, ctx.run_dir)
        factor = lr_factor(dcfg.lr_schedule, it, total)
        for o, lrs in zip(opts, base_lrs):
            for g, lr in zip(o.param_groups, lrs):
                g["lr"] = lr * factor
            o.step()
        synset.project_()
        check_values(roles, algo.eval_lr(), bound, it, ckpt_path, ctx.run_dir)  # before anything is saved
        if average is not None:
            average.update(synset)
        done = it + 1
        if done % dcfg.log_every == 0 or done == total:
            ctx.tracker.log({f"distill/{k}": v for k, v in metrics.items()}, step=done)
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "syn_lr")}, refresh=False)
        select = selecting and done % select_every == 0 and done < total  # the final set: the eval stage
        if select:  # saved before the checkpoint of this iteration, so a resume can always finish its evaluation
            with kept():
                chosen = snapshot(synset, algo, ctx, cfg, done)
            selection.save_checkpoint_set(chosen, ctx, done)
        if dcfg.checkpoint_every and (done % dcfg.checkpoint_every == 0 or done == total):
            checkpoint.save(ckpt_path, done, cfg, synset, algo, opts, average)
        if select:
            selection.evaluate_checkpoint(cfg, ctx, done, chosen)
        if dcfg.image_every and done % dcfg.image_every == 0:
            with kept():
                png = save_synset_picture(synset, ctx.preprocess, ctx.real.class_names, ctx.run_dir / "progress.png")
            ctx.tracker.log_image("distill/images", png, caption=f"iteration {done}", step=done)
        if dcfg.snapshot_every and done % dcfg.snapshot_every == 0 and done < total:
            with kept():
                snapshot(synset, algo, ctx, cfg, done).save(ctx.run_dir / "snapshots" / f"synset_{done}.pt")
        if dcfg.eval_every and done % dcfg.eval_every == 0 and done < total:
            quick_eval(done)
    bar.close()

    if average is not None:  # the raw last iterate too, for comparison
        snapshot(synset, algo, ctx, cfg, total).save(ctx.run_dir / "synset_last.pt")
    with kept():
        out = snapshot(synset, algo, ctx, cfg, total)
        png = save_synset_picture(synset, ctx.preprocess, ctx.real.class_names, ctx.run_dir / "synset.png")
    path = out.save(ctx.run_dir / "synset.pt")
    ctx.tracker.log_image("distill/synset", png, caption=cfg.run_name)
    log.info("saved %d synthetic images to %s (picture: %s)", out.images.shape[0], path, png.name)
    result = {"distill/num_images": int(out.images.shape[0])}
    if out.lr is not None:
        result["distill/syn_lr"] = out.lr
    if "effective_ipc" in out.extra:
        result["distill/effective_ipc"] = out.extra["effective_ipc"]
    return result
