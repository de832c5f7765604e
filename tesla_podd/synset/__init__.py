"""Synthetic-set registry: `synset.name` -> builder(cfg, ctx) returning a SyntheticSet (see base.py)."""

from __future__ import annotations

from ..errors import check_choice
from ..seeding import generator
from .pixels import PixelSet
from .poster import PosterSet


def build_pixels(cfg, ctx):
    s = cfg.synset
    check_choice("synset.labels", s.labels, ["hard", "teacher", "teacher_last", "learned"])
    learn = s.labels == "learned"
    if s.get("init_from"):
        return PixelSet.from_file(_initial_set(cfg, ctx), ctx.real.num_classes, cfg.ipc, ctx.device, learn)
    return PixelSet.build(ctx.real, ctx.preprocess, cfg.ipc, s.init, generator(cfg.seed, "synset-init"), ctx.device,
                          learn_labels=learn)


def _initial_set(cfg, ctx):
    """`synset.init_from`: a saved set (ours or another code's, read by the eval stage's importers) to start from."""
    from .interop import import_into_run

    s = cfg.synset
    return import_into_run(s.init_from, str(s.init_from_format), ctx, space=str(s.init_from_space))


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
