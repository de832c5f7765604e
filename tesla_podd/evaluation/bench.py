"""Timing hook for scripts/bench_speed.py: seconds to train K evaluation networks on a random synthetic set."""

from __future__ import annotations

import time

import torch
from omegaconf import OmegaConf

from ..data.augment import DSA
from ..lanes import side_by_side_threads
from ..models import build_model
from ..seeding import generator, seeded_init
from .protocol import resolve_protocol
from .runner import workers_for
from .trainer import SingleLearner, StackedLearner, train_networks


def evaluation_seconds(num_models: int, ipc: int = 1, *, epochs: int = 20, batched: bool = True,
                       num_classes: int = 10, image_size: int = 32, model: str = "convnet",
                       device: str = "cpu", seed: int = 0, lanes: int = 1, workers: int | None = None) -> float:
    """Wall seconds to train `num_models` networks (MTT SGD protocol with DSA, batch 256, `epochs` epochs; no
    accuracy measurement) on a random set of `ipc` images per class; stacked when `batched`, else one by one,
    `lanes` at a time side by side (eval.lanes; `workers` threads, by default as the eval stage chooses)."""
    dev = torch.device(device)
    x = torch.randn(ipc * num_classes, 3, image_size, image_size, generator=generator(seed, "bench-x")).to(dev)
    y = torch.arange(num_classes).repeat_interleave(ipc).to(dev)
    ecfg = OmegaConf.create(dict(length_unit="epoch", epochs=epochs, steps=1, eval_at=[], schedule="constant",
                                 batch_size=256, optimizer="sgd", lr=0.01, fallback_lr=0.01, momentum=0.9,
                                 weight_decay=5e-4, augment=True))
    proto = resolve_protocol(ecfg, None, x.shape[0], "dsa")
    nets = []
    for i in range(num_models):
        with seeded_init(seed, "bench", i):
            nets.append(build_model(model, 3, num_classes, image_size).to(dev))
    gens = [generator(seed, "bench-data", i) for i in range(num_models)]
    groups = [(StackedLearner(nets), gens)] if batched and num_models > 1 else \
        [(SingleLearner(n), [g]) for n, g in zip(nets, gens)]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()

    def train(group):
        train_networks(group[0], x, y, proto, DSA(), group[1], {}, dev)

    if lanes > 1 and len(groups) > 1:
        side_by_side_threads(train, groups, workers or workers_for(len(groups), lanes))
    else:
        for group in groups:
            train(group)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
