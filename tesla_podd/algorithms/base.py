"""The contract between the distill loop and an algorithm.

An algorithm is built as `ALGORITHMS[name](acfg, synset, resources)`: its own config node (`cfg.algorithm`),
the synthetic set, and the `AlgorithmResources` the run context hands in (data, model factory, augmentation,
expert trajectories, device, seed). It reads its settings once, in the constructor. The loop owns
iteration counting, logging, checkpoints, resume and the divergence checks; the algorithm owns
its maths and its optimisers. All randomness of iteration `it` comes from the `gen` the loop
passes in (seeded by (seed, it)), so a resumed run repeats an uninterrupted one exactly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from ..models import build_model


class Distiller(Protocol):
    needs_buffer: bool  # does the buffer stage have to run first (MTT/TESLA)?
    iterations: int  # outer iterations the loop runs (0 for the random baseline)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimisers over the synthetic set's and the algorithm's own learnable tensors."""

    def meta_step(self, it: int, gen: torch.Generator) -> dict[str, float]:
        """Compute the meta-gradient into `.grad` of every learnable tensor; return metrics with "loss"."""

    def eval_lr(self) -> float | None:
        """The student lr to evaluate with (learned), or None to use eval.fallback_lr."""

    def final_labels(self) -> torch.Tensor | None:
        """Labels to save when they are not the synthetic set's own (e.g. TESLA's soft labels)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def model_factory(model_cfg, real) -> Callable[[], nn.Module]:
    """A zero-argument builder of fresh `model` networks for this dataset (CPU, from the current RNG)."""
    c, h, _ = real.image_shape
    return lambda: build_model(model_cfg, c, real.num_classes, h)


@dataclass(frozen=True)
class AlgorithmResources:
    """What an algorithm gets from the run besides its own config node."""

    real: object  # data.real.RealData: the real train/test images (uint8) and labels
    preprocess: object  # data.preprocess.Preprocessor: real images -> model space (normalise, ZCA)
    device: torch.device
    seed: int  # the run seed (per-iteration randomness comes from the loop's generator)
    make_model: Callable[[], nn.Module]  # a fresh network of the configured `model` (see model_factory)
    model_name: str = "model"  # for messages
    augment: object = None  # the run's differentiable augmentation (DSA) of student batches
    load_experts: Callable[[int], Sequence[torch.Tensor]] | None = None  # trajectories reaching epoch n
    label_mode: str = "hard"  # synset.labels: hard | teacher | teacher_last | learned | poddl_*


class PositiveScalar:
    """A learnable positive scalar (the student lr), stored as its log so it can never turn negative.

    The optimiser steps log(alpha); its lr is scaled by 1/alpha_0^2 so that the first steps move alpha
    as SGD on alpha itself would (d alpha ~= alpha^2 d log alpha) — the papers' lr_lr keeps its meaning."""

    def __init__(self, value: float, device=None, dtype=torch.float32):
        self.log = torch.tensor(float(value), device=device, dtype=dtype).log().requires_grad_(True)
        self.init = float(value)

    @property
    def value(self) -> torch.Tensor:
        return self.log.exp()

    def accumulate_grad(self, d_value: torch.Tensor) -> None:
        """Add dL/d(alpha) computed by hand (TESLA/exact modes) as dL/d(log alpha)."""
        g = (d_value * self.value).detach()
        self.log.grad = g if self.log.grad is None else self.log.grad + g

    def sgd(self, lr_lr: float, momentum: float) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.log], lr=lr_lr / self.init**2, momentum=momentum)


def learnable_tensors(synset) -> list[torch.Tensor]:
    return [t for group in synset.param_groups().values() for t in group]
