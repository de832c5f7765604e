"""What every synthetic set offers the algorithms: a differentiable `sample(idx) -> Batch`.

Algorithms never touch pixels directly; gradients flow through whatever produced the batch, so a
poster (overlapping patches of one tensor) works with every algorithm and gradient mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Batch:
    x: torch.Tensor  # [B, C, H, W] images in model space (normalised / whitened)
    y: torch.Tensor  # [B] int64 hard labels, or [B, num_classes] float soft labels


@runtime_checkable
class SyntheticSet(Protocol):
    num_items: int  # number of images (patches for a poster) the algorithms index into
    num_classes: int

    def param_groups(self) -> dict[str, list[torch.Tensor]]:
        """Learnable leaves by role: {"images": [...], "labels": [...]} (labels may be absent)."""

    def sample(self, idx: torch.Tensor) -> Batch:
        """Items `idx`, differentiable w.r.t. the learnable tensors."""

    def materialize(self) -> Batch:
        """All items, detached (what the eval stage trains on)."""

    def preview(self) -> torch.Tensor:
        """A picture of the learnable tensor in model space: [N,C,H,W] images or [1,C,Hp,Wp] poster."""

    def project_(self) -> None:
        """Keep constrained parameters feasible after an optimiser step (e.g. labels >= 0)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def soft_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for hard ([B] int) or soft ([B, n] float) targets."""
    if y.dtype in (torch.int64, torch.int32, torch.long):
        return torch.nn.functional.cross_entropy(logits, y)
    return -(y * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
