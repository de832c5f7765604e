"""The "Random" baseline: ipc real images per class, chosen at random (seeded); nothing is optimised."""

from __future__ import annotations

from ..seeding import generator
from ..synset.pixels import PixelSet


def distill_random(cfg, ctx) -> tuple[PixelSet, float | None, dict]:
    gen = generator(cfg.seed, "synset-init")
    synset = PixelSet.build(ctx.real, ctx.preprocess, cfg.synset.ipc, "real", gen, ctx.device)
    return synset, None, {"iterations": 0}
