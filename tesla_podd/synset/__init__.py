"""Synthetic-set registry: `synset.name` -> builder(cfg, ctx) returning a SyntheticSet (see base.py)."""

from __future__ import annotations

from ..errors import check_choice
from ..seeding import generator
from .pixels import PixelSet
from .poster import PosterSet


def build_pixels(cfg, ctx):
    s = cfg.synset
    check_choice("synset.labels", s.labels, ["hard", "teacher", "teacher_last", "learned"])
    return PixelSet.build(ctx.real, ctx.preprocess, cfg.ipc, s.init, generator(cfg.seed, "synset-init"), ctx.device,
                          learn_labels=s.labels == "learned")


def build_poster(cfg, ctx):
    from .class_order import class_order

    s, real = cfg.synset, ctx.real

    def order_fn(grid):  # PoCO (cached under paths.cache_dir) or the dataset's own class order
        return class_order(real.class_names, grid, method=str(s.class_order), encoder=str(s.poco.encoder),
                           cache_dir=cfg.paths.cache_dir, dataset_name=cfg.dataset.name)

    return PosterSet.build(real, ctx.preprocess, s, cfg.ipc, order_fn, generator(cfg.seed, "synset-init"), ctx.device)


SYNSETS = {"pixels": build_pixels, "poster": build_poster}


def build_synset(cfg, ctx):
    check_choice("synset.name", cfg.synset.name, SYNSETS)
    return SYNSETS[cfg.synset.name](cfg, ctx)
