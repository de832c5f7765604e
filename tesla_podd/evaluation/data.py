"""Test and validation images in a synthetic set's model space, preprocessed once per run.

A synthetic set lives in its own model space (its ZCA / normalisation), so the real images are passed
through `syn.preprocess` before testing. Distillation's quick evaluations hand in a new SynsetFile every
time but the same preprocessor object, so the preprocessed sets are cached in the run context by it."""

from __future__ import annotations

import torch

MeasureSets = dict[str, tuple[torch.Tensor, torch.Tensor] | None]


def measure_sets(syn, ctx, with_val: bool = True) -> MeasureSets:
    """{"test": (x, y), "val": (x, y) or None}: model-space images of the run's real data."""
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
    return {"test": sets["test"], **({"val": sets["val"]} if with_val else {})}
