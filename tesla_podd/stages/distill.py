"""Distill stage: the outer loop shared by every algorithm.

zero_grad -> algorithm.meta_step (fills .grad) -> divergence check -> optimiser steps -> projections,
with logging, periodic quick evaluation, pictures and atomic checkpoints. `resume=true` continues
from checkpoints/last.pt; each iteration's randomness is seeded by (seed, iteration), so a resumed
run gives the same result as an uninterrupted one."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from .. import atomic
from ..algorithms import build_algorithm
from ..errors import ConfigError, UserError
from ..pictures import grid_columns, save_image_grid
from ..seeding import generator
from ..synset import build_synset
from ..synset.file import SynsetFile
from .evaluate import evaluate_synset

log = logging.getLogger(__name__)


class DistillDiverged(UserError):
    pass


def save_picture(synset, preprocess, class_names, path: Path) -> Path:
    if hasattr(synset, "save_picture"):  # posters draw their class grid
        return synset.save_picture(path, preprocess, class_names)
    x = synset.preview()
    return save_image_grid(x, preprocess, path, per_row=grid_columns(x.shape[0], len(class_names)))


def snapshot(synset, algo, ctx, cfg, it: int) -> SynsetFile:
    batch = synset.materialize()
    labels = algo.final_labels()
    extra = synset.file_extra() if hasattr(synset, "file_extra") else {}
    meta = {"algorithm": cfg.algorithm.name, "synset": cfg.synset.name, "ipc": cfg.ipc, "seed": cfg.seed,
            "iterations": it, **({"effective_ipc": extra["effective_ipc"]} if "effective_ipc" in extra else {})}
    return SynsetFile(images=batch.x, labels=batch.y if labels is None else labels.detach(), lr=algo.eval_lr(),
                      preprocess=ctx.preprocess, class_names=ctx.real.class_names, dataset=cfg.dataset.name,
                      meta=meta, extra=extra)


def _check_finite(metrics: dict, tensors: list[torch.Tensor], it: int, ckpt: Path) -> None:
    loss = metrics.get("loss", 0.0)
    bad = not math.isfinite(loss) or any(t.grad is not None and not torch.isfinite(t.grad).all() for t in tensors)
    if bad:
        raise DistillDiverged(
            f"Distillation diverged at iteration {it}: loss {loss} or a gradient is NaN/Inf. The last good "
            f"checkpoint is kept at {ckpt} (resume with `resume=true resume_dir=...`); lower `algorithm.lr_img` "
            "or `algorithm.lr_lr`."
        )


def run_distill(cfg, ctx) -> dict:
    dcfg = cfg.distill
    synset = build_synset(cfg, ctx)
    algo = build_algorithm(cfg, ctx, synset)
    opts = algo.optimizers()
    params = [p for o in opts for g in o.param_groups for p in g["params"]]
    ckpt_path = ctx.run_dir / "checkpoints" / "last.pt"
    start = 0
    if cfg.resume:
        src = Path(cfg.resume_dir or ctx.run_dir) / "checkpoints" / "last.pt"
        if not src.exists():
            raise ConfigError(f"`resume=true` but there is no checkpoint at {src}; set `resume_dir` to the run dir "
                              "of the run to continue.")
        state = torch.load(src, map_location=ctx.device, weights_only=False)
        synset.load_state_dict(state["synset"])
        algo.load_state_dict(state["algorithm"])
        for o, s in zip(opts, state["optimizers"]):
            o.load_state_dict(s)
        start = int(state["iteration"])
        log.info("resumed from %s at iteration %d", src, start)

    total = int(algo.iterations)
    bar = tqdm(range(start, total), desc=f"distill {cfg.algorithm.name}", initial=start, total=total,
               mininterval=2.0, disable=total == 0)
    for it in bar:
        for o in opts:
            o.zero_grad(set_to_none=True)
        metrics = algo.meta_step(it, generator(cfg.seed, "distill", it))
        _check_finite(metrics, params, it, ckpt_path)
        for o in opts:
            o.step()
        algo.after_step()
        synset.project_()
        lr = algo.eval_lr()
        if lr is not None and not (lr > 1e-12 and math.isfinite(lr)):
            raise DistillDiverged(f"The learned student lr vanished ({lr}) at iteration {it}; the last good "
                                  f"checkpoint is kept at {ckpt_path}. Lower `algorithm.lr_lr`.")
        done = it + 1
        if done % dcfg.log_every == 0 or done == total:
            ctx.tracker.log({f"distill/{k}": v for k, v in metrics.items()}, step=done)
            bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "syn_lr")}, refresh=False)
        if dcfg.checkpoint_every and (done % dcfg.checkpoint_every == 0 or done == total):
            atomic.save_torch({"iteration": done, "synset": synset.state_dict(), "algorithm": algo.state_dict(),
                               "optimizers": [o.state_dict() for o in opts],
                               "config": OmegaConf.to_container(cfg, resolve=False)}, ckpt_path)
        if dcfg.image_every and done % dcfg.image_every == 0:
            png = save_picture(synset, ctx.preprocess, ctx.real.class_names, ctx.run_dir / "progress.png")
            ctx.tracker.log_image("distill/images", png, caption=f"iteration {done}", step=done)
        if dcfg.eval_every and done % dcfg.eval_every == 0 and done < total:
            accs = evaluate_synset(snapshot(synset, algo, ctx, cfg, done), cfg, ctx, int(dcfg.eval_models),
                                   int(dcfg.eval_epochs), stream=f"quick-eval-{done}", progress=False)
            ctx.tracker.log({"distill/quick_acc": sum(accs) / len(accs)}, step=done)
            log.info("iteration %d: quick eval %.2f%%", done, sum(accs) / len(accs))
    bar.close()

    out = snapshot(synset, algo, ctx, cfg, total)
    path = out.save(ctx.run_dir / "synset.pt")
    png = save_picture(synset, ctx.preprocess, ctx.real.class_names, ctx.run_dir / "synset.png")
    ctx.tracker.log_image("distill/synset", png, caption=cfg.run_name)
    log.info("saved %d synthetic images to %s (picture: %s)", out.images.shape[0], path, png.name)
    result = {"distill/num_images": int(out.images.shape[0])}
    if out.lr is not None:
        result["distill/syn_lr"] = out.lr
    if "effective_ipc" in out.extra:
        result["distill/effective_ipc"] = out.extra["effective_ipc"]
    return result
