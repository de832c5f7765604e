"""RunContext: what every stage shares (config, run dir, device, tracker, lazily loaded data)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from .. import devices
from ..data.augment import build_augment
from ..data.preprocess import Preprocessor, build_preprocessor
from ..data.real import RealData, load_real
from ..tracking import Tracker

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """The device this job owns (tesla_podd/devices.py: CUDA_VISIBLE_DEVICES, one GPU per multirun job)."""
    return devices.resolve_device(name)


@dataclass
class RunContext:
    cfg: object
    run_dir: Path
    device: torch.device
    tracker: Tracker
    results: dict = field(default_factory=dict)
    # evaluation/data.py: model-space test/val images per preprocessor, so quick evals reuse them
    eval_sets: dict = field(default_factory=dict)

    @cached_property
    def real(self) -> RealData:
        data = load_real(self.cfg.dataset, self.cfg.paths.cache_dir)
        log.info("%s: %d train / %d test images of %s, %d classes", data.name, data.train_x.shape[0],
                 data.test_x.shape[0], tuple(data.image_shape), data.num_classes)
        return data

    @cached_property
    def preprocess(self) -> Preprocessor:
        return build_preprocessor(self.cfg.dataset, self.real, self.cfg.paths.cache_dir)

    @cached_property
    def augment(self):
        a = self.cfg.augment
        return build_augment(a.name, **{k: v for k, v in a.items() if k != "name"})

    @cached_property
    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Test images in this run's model space (computed once per run)."""
        return self.preprocess(self.real.test_x), self.real.test_y
