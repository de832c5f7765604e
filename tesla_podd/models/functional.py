"""A model as a pure function of one flat parameter vector: forward(theta, x).

Trajectory matching needs this: expert checkpoints are flat vectors, and the student steps
theta_{i+1} = theta_i - lr * g_i are plain tensor arithmetic that autograd can see through."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


class FlatModel:
    def __init__(self, module: nn.Module):
        # Buffers (e.g. BatchNorm statistics) are not learnable; ConvNet with instance norm has none.
        self.module = module
        self.names = [n for n, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.numels = [p.numel() for _, p in module.named_parameters()]
        self.num_params = sum(self.numels)

    def flatten(self, module: nn.Module | None = None) -> torch.Tensor:
        """The module's current parameters as one detached flat vector."""
        m = module or self.module
        return torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(theta, self.numels), self.shapes)}

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if theta.numel() != self.num_params:
            raise ValueError(f"flat parameter vector has {theta.numel()} entries, model needs {self.num_params}")
        return functional_call(self.module, self.unflatten(theta), (x,))

    def load_(self, theta: torch.Tensor, module: nn.Module | None = None) -> None:
        """Copy a flat vector into a module's parameters (for ordinary, non-functional use)."""
        m = module or self.module
        with torch.no_grad():
            for p, t in zip(m.parameters(), torch.split(theta, self.numels)):
                p.copy_(t.view_as(p))
