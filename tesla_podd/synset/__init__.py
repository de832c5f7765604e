"""Synthetic-set registry: `synset.name` -> builder(cfg, ctx) returning a SyntheticSet (see base.py)."""

from __future__ import annotations

from ..errors import check_choice
from ..seeding import generator
from .pixels import PixelSet


def build_pixels(cfg, ctx):
    s = cfg.synset
    check_choice("synset.labels", s.labels, ["hard", "teacher", "teacher_last", "learned"])
    return PixelSet.build(ctx.real, ctx.preprocess, s.ipc, s.init, generator(cfg.seed, "synset-init"), ctx.device,
                          learn_labels=s.labels == "learned")


SYNSETS = {"pixels": build_pixels}


def build_synset(cfg, ctx):
    check_choice("synset.name", cfg.synset.name, SYNSETS)
    return SYNSETS[cfg.synset.name](cfg, ctx)
