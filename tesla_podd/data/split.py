"""Validation split: by default (`dataset.val_mode=held_out`) carved from the real training set before
anything else sees it, so neither the buffer experts, the distillation's real batches nor the evaluation
networks train on it; with `within_train` drawn from the train set but left in it (the references' data).
Evaluation uses it to pick a length and a checkpoint without looking at the test set (`best_val`,
`val_selected_checkpoint` in eval.json)."""

from __future__ import annotations

import dataclasses
import logging

import torch

from ..errors import ConfigError
from ..seeding import generator

log = logging.getLogger(__name__)


def class_balanced_indices(labels: torch.Tensor, num_classes: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """`size` indices, as equal per class as possible (the first `size % num_classes` classes get one more),
    drawn at random within each class; sorted."""
    base, extra = divmod(size, num_classes)
    picks = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        k = base + (1 if c < extra else 0)
        if k > idx.numel():
            raise ConfigError(f"`dataset.val_size` is {size}: class {c} has only {idx.numel()} train images but "
                              f"the split needs {k} of it; use a smaller `dataset.val_size` (0: no split).")
        picks.append(idx[torch.randperm(idx.numel(), generator=gen)[:k]])
    return torch.sort(torch.cat(picks)).values


def validation_count(val_size, num_train: int) -> int:
    """`dataset.val_size` as a count: an int is a count, a float in (0, 1) a fraction of the train set."""
    value = float(val_size)
    if 0 < value < 1:
        return max(1, int(round(value * num_train)))
    if value != int(value):
        raise ConfigError(f"`dataset.val_size` is {val_size}: use a whole number of images, a fraction in "
                          "(0, 1), or 0 for no validation split.")
    return int(value)


VAL_MODES = ("held_out", "within_train")


def split_validation(data, val_size, seed: int = 0, mode: str = "held_out"):
    """`data` (a RealData) with `val_size` class-balanced train images as `val_x`/`val_y` (seeded).

    `dataset.val_mode`: held_out moves them out of the train set (nothing trains on them: an honest
    selection); within_train copies them and leaves the train set whole, as the reference codes train
    (experts, distillation, ZCA and the real init see every train image; the validation accuracy then
    only ranks checkpoints, on images the distillation has seen, never on the test set)."""
    if mode not in VAL_MODES:
        raise ConfigError(f"`dataset.val_mode` is {mode!r}: use held_out (validation images removed from the train "
                          "set before anything trains) or within_train (the train set stays whole; validation "
                          "images are drawn from it for selection only).")
    n = data.train_y.numel()
    size = validation_count(val_size, n)
    if size < 0 or size >= n:
        raise ConfigError(f"`dataset.val_size` is {size}, but must be between 0 (no split) and {n - 1} "
                          "(the train size minus one).")
    if size == 0:
        return data
    val = class_balanced_indices(data.train_y, data.num_classes, size, generator(seed, "val_split", data.name))
    if mode == "within_train":
        log.info("%s: %d train images also serve as the validation split (dataset.val_mode=within_train)",
                 data.name, size)
        return dataclasses.replace(data, val_x=data.train_x[val], val_y=data.train_y[val])
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    train = torch.nonzero(keep).flatten()
    log.info("%s: %d train images held out as the validation split (dataset.val_size=%s)", data.name, size, val_size)
    return dataclasses.replace(data, train_x=data.train_x[train], train_y=data.train_y[train],
                               val_x=data.train_x[val], val_y=data.train_y[val])
