"""Divergence checks of the distill loop, and messages that name the key to change.

Before the optimisers step, the loss and every gradient must be finite; after they stepped, every learnable
tensor must be finite, the learned lr finite and positive, and the images bounded (|x| at most
`IMAGE_BOUND_FACTOR` x the largest |x| of real images in model space). A checkpoint is only written after
these passed, so the checkpoint a message names is always a good state."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import UserError

IMAGE_BOUND_FACTOR = 100.0
KEY_OF_ROLE = {"images": "algorithm.lr_img", "labels": "algorithm.lr_label", "lr": "algorithm.lr_lr"}


class DistillDiverged(UserError):
    pass


def tensor_roles(synset, opts) -> dict[str, list[torch.Tensor]]:
    """Learnable tensors by role: the synthetic set's images/labels, everything else the algorithm's lr."""
    roles = {k: list(v) for k, v in synset.param_groups().items()}
    known = {id(t) for ts in roles.values() for t in ts}
    rest = [p for o in opts for g in o.param_groups for p in g["params"] if id(p) not in known]
    if rest:
        roles["lr"] = rest
    return roles


def real_bound(real, preprocess, n: int = 1024) -> float:
    """IMAGE_BOUND_FACTOR x the largest |x| of (up to n) real train images in model space."""
    x = preprocess(real.train_x[:n])
    return IMAGE_BOUND_FACTOR * float(x.abs().max())


def _resume_note(ckpt: Path, run_dir: Path, key: str) -> str:
    if ckpt.is_file():
        it = int(torch.load(ckpt, map_location="cpu", weights_only=False)["iteration"])
        return (f"The last good checkpoint is {ckpt} (iteration {it}); lower `{key}` and continue from it with "
                f"`resume=true resume_dir={run_dir}`.")
    return (f"No checkpoint was saved before it (`distill.checkpoint_every`); lower `{key}` and start again.")


def check_gradients(loss: float, roles: dict, it: int, ckpt: Path, run_dir: Path) -> None:
    bad = [r for r, ts in roles.items() if any(t.grad is not None and not torch.isfinite(t.grad).all() for t in ts)]
    if not bad and math.isfinite(loss):
        return
    key = KEY_OF_ROLE[bad[0]] if bad else "algorithm.lr_img"
    what = f"the gradient of the {', '.join(bad)} is NaN/Inf" if bad else f"the loss is {loss}"
    raise DistillDiverged(f"Distillation diverged at iteration {it}: {what}, so that step was not taken. "
                          + _resume_note(ckpt, run_dir, key))


def check_values(roles: dict, lr: float | None, bound: float, it: int, ckpt: Path, run_dir: Path) -> None:
    """After the step: nothing non-finite, the lr alive, the images bounded; else stop before saving."""
    for role, ts in roles.items():
        if any(not torch.isfinite(t).all() for t in ts):
            raise DistillDiverged(f"Distillation diverged at iteration {it}: the {role} became NaN/Inf after the "
                                  f"optimiser step (`{KEY_OF_ROLE[role]}` too large). "
                                  + _resume_note(ckpt, run_dir, KEY_OF_ROLE[role]))
    if lr is not None and not math.isfinite(lr):
        raise DistillDiverged(f"Distillation diverged at iteration {it}: the learned student lr blew up ({lr}). "
                              + _resume_note(ckpt, run_dir, "algorithm.lr_lr"))
    if lr is not None and lr <= 1e-12:
        raise DistillDiverged(f"The learned student lr vanished ({lr}) at iteration {it}. "
                              + _resume_note(ckpt, run_dir, "algorithm.lr_lr"))
    top = max((float(t.detach().abs().max()) for t in roles.get("images", [])), default=0.0)
    if top > bound:
        raise DistillDiverged(f"Distillation diverged at iteration {it}: the synthetic images grew to |x| = {top:.3g}, "
                              f"over {IMAGE_BOUND_FACTOR:g}x the real images' range ({bound:.3g}), so they were not "
                              "saved. " + _resume_note(ckpt, run_dir, "algorithm.lr_img"))
