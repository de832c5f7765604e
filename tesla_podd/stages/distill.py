"""Distill stage: build the synthetic set with the configured algorithm, save synset.pt + a PNG."""

from __future__ import annotations

import logging

from ..algorithms import ALGORITHMS
from ..errors import check_choice
from ..pictures import save_image_grid
from ..synset.file import SynsetFile

log = logging.getLogger(__name__)


def run_distill(cfg, ctx) -> dict:
    check_choice("algorithm.name", cfg.algorithm.name, ALGORITHMS)
    synset, lr, info = ALGORITHMS[cfg.algorithm.name](cfg, ctx)
    batch = synset.materialize()
    out = SynsetFile(
        images=batch.x,
        labels=batch.y,
        lr=lr,
        preprocess=ctx.preprocess,
        class_names=ctx.real.class_names,
        dataset=cfg.dataset.name,
        meta={"algorithm": cfg.algorithm.name, "synset": cfg.synset.name, "ipc": cfg.ipc, "seed": cfg.seed,
              **info},
    )
    path = out.save(ctx.run_dir / "synset.pt")
    png = save_image_grid(batch.x, ctx.preprocess, ctx.run_dir / "synset.png",
                          per_row=max(1, batch.x.shape[0] // ctx.real.num_classes))
    ctx.tracker.log_image("distill/synset", png, caption=f"{cfg.run_name}")
    log.info("saved %d synthetic images to %s (picture: %s)", batch.x.shape[0], path, png.name)
    return {"distill/num_images": batch.x.shape[0]}
