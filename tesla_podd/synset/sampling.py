"""How a batch of a synthetic set is drawn: `uniform` (any `batch` items, without replacement) or `per_class`
(the same number of items of every class, as the RaT-BPTT reference's `subsample` in distill_higher.py draws
`batch_per_class` images of each class, sorted within the class, class-major). Used by RaT-BPTT's inner loop
(`algorithm.batch_sampling`) and the step-unit evaluation (`eval.batch_sampling`)."""

from __future__ import annotations

import torch

BATCH_SAMPLINGS = ("uniform", "per_class")


def class_members(y: torch.Tensor) -> list[torch.Tensor]:
    """Item indices of every class present (soft labels: by their largest entry), in class order."""
    cls = (y.argmax(dim=1) if y.is_floating_point() else y).detach().cpu()
    return [torch.nonzero(cls == c).flatten() for c in torch.unique(cls)]


def per_class_batch(members: list[torch.Tensor], batch: int, gen: torch.Generator) -> torch.Tensor:
    """`batch // classes` (at least 1, at most a class's size) random items of every class, sorted within
    the class, class-major. A batch smaller than the number of classes takes one item of each of `batch`
    random classes (the reference's `task_sampler_nc` classes x `batch_per_class` 1)."""
    batch = int(batch)
    if batch < len(members):
        chosen = torch.randperm(len(members), generator=gen)[:batch].sort().values
        members = [members[int(c)] for c in chosen]
    per = max(1, batch // len(members))
    return torch.cat([m[torch.randperm(len(m), generator=gen)[:per].sort().values] for m in members])
