"""Train and test a classifier: shared by the buffer stage (experts on real data) and the eval stage
(fresh networks on a synthetic set).

Data comes through a `fetch(idx) -> (x, y)` callable so that real data can be preprocessed batch
by batch (ImageNet-1K never needs to sit in memory as floats) and synthetic data indexed directly."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from .compiling import CompiledOrEager
from .synset.base import soft_cross_entropy

Fetch = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def autocast(amp: str, device: torch.device):
    """bf16 autocast changes numerics, so it is opt-in. Its speed depends on the hardware: ~1.7x on CPUs
    with AVX-512 BF16, but ~7x SLOWER on AVX2-only CPUs (no bf16 units); on CUDA, tensor cores."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fast_forward(model: nn.Module, *, channels_last: bool = False, compile: bool = False) -> Callable:
    """The callable the training loop runs `model` through; parameters stay the module's own.

    channels_last converts the module in place (convs use NHWC kernels; same values up to rounding).
    compile wraps it in torch.compile with inductor (CUDA, and CPU with a C++ compiler: `compiling.py`).
    The first call compiles (about a minute on CPU, cached on disk for later runs; eager with a warning if
    compiling fails); a last, smaller batch compiles once more."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        device = next(model.parameters()).device
        return CompiledOrEager(model, device, "the training network")
    return model


def train_classifier(
    model: nn.Module,
    fetch: Fetch,
    num_items: int,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    augment,
    gen: torch.Generator,
    lr_decay_at_half: bool = False,
    amp: str = "none",
    on_epoch_end: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
    start_epoch: int = 0,
    optimizer_state: dict | None = None,
    progress=None,
    optimizer: str = "sgd",
    channels_last: bool = False,
    compile: bool = False,
) -> torch.optim.Optimizer:
    """SGD (default) or Adam training, one random permutation per epoch from `gen`. Returns the optimiser.

    Adam (RaT-BPTT/PoDD evaluation) uses torch's betas/eps and L2 `weight_decay`; `momentum` is SGD's only.
    `amp`, `channels_last`, `compile`: speed options (see `autocast`, `fast_forward`)."""
    device = next(model.parameters()).device
    forward = fast_forward(model, channels_last=channels_last, compile=compile)  # before the optimiser sees params
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r} (sgd | adam)")
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    model.train()
    for epoch in range(start_epoch, epochs):
        if lr_decay_at_half and epoch == epochs // 2:
            for group in opt.param_groups:
                group["lr"] = lr * 0.1
        perm = torch.randperm(num_items, generator=gen)
        for start in range(0, num_items, batch_size):
            x, y = fetch(perm[start : start + batch_size])
            x = augment(x, gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(amp, device):
                loss = soft_cross_entropy(forward(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, opt)
        if progress is not None:
            progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # before update, which renders it
            progress.update(1)
    return opt


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy (%) on model-space images x (already preprocessed)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        logits = model(x[i : i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[i : i + batch_size].cpu()).sum().item()
    model.train(was_training)
    return 100.0 * correct / max(1, x.shape[0])
