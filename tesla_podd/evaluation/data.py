"""Test and validation images in a synthetic set's model space, preprocessed once per run.

A synthetic set lives in its own model space (its ZCA / normalisation), so the real images are passed
through `syn.preprocess` before testing. Distillation's quick evaluations hand in a new SynsetFile every
time but the same preprocessor object, so the preprocessed sets are cached in the run context by it."""

from __future__ import annotations

import torch

from ..seeding import generator

MeasureSets = dict[str, tuple[torch.Tensor, torch.Tensor] | None]


def train_sample(real, count) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`eval.train_measure` real train images (uint8) and labels: a seeded random sample, every image when
    `count` is "all" or at least the train size, None when 0. PoDD selects its reported number by the
    evaluation networks' accuracy on the real train set; this is that measurement."""
    n = int(real.train_y.numel())
    if count in (0, None):
        return None
    if count == "all" or int(count) >= n:
        return real.train_x, real.train_y
    keep = torch.sort(torch.randperm(n, generator=generator(0, "train_measure", real.name))[: int(count)]).values
    return real.train_x[keep], real.train_y[keep]


def measure_sets(syn, ctx, with_val: bool = True, train_count=0) -> MeasureSets:
    """{"test": (x, y), "val": (x, y) or None[, "train": (x, y)]}: model-space images of the run's real data
    ("train" only when `train_count` asks for it)."""
    key = id(syn.preprocess)
    cached = ctx.eval_sets.get(key)
    if cached is None or cached[0] is not syn.preprocess:  # the object is kept alive, so its id is not reused
        cached = (syn.preprocess, {})
        ctx.eval_sets[key] = cached
    sets = cached[1]
    real = ctx.real
    if "test" not in sets:
        sets["test"] = (syn.preprocess(real.test_x), real.test_y)
    if with_val and "val" not in sets:
        sets["val"] = None if real.val_x is None else (syn.preprocess(real.val_x), real.val_y)
    out = {"test": sets["test"], **({"val": sets["val"]} if with_val else {})}
    if train_count not in (0, None):
        key = ("train", str(train_count))
        if key not in sets:
            x, y = train_sample(real, train_count)
            sets[key] = (syn.preprocess(x), y)
        out["train"] = sets[key]
    return out
