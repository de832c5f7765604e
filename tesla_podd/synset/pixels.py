"""PixelSet: the classic synthetic set, IPC learnable images per class (class-major order)."""

from __future__ import annotations

import torch

from ..data.real import RealData
from ..errors import ConfigError, check_choice
from .base import Batch

INITS = ("real", "noise", "unit_noise")  # unit_noise: N(0,1) scaled to unit L2 norm per image (RaT-BPTT)


def init_from_real(real: RealData, preprocess, ipc: int, gen: torch.Generator) -> torch.Tensor:
    """`ipc` random real train images per class (seeded), in model space, class-major."""
    picks = []
    for c in range(real.num_classes):
        idx = real.indices_of_class(c)
        if len(idx) < ipc:
            raise ConfigError(
                f"`ipc={ipc}` but class {c} ({real.class_names[c]!r}) has only {len(idx)} training images; "
                "lower `ipc` or `dataset.train_subset`."
            )
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:ipc]])
    return preprocess(real.train_x[torch.cat(picks)])


class PixelSet:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, learn_labels: bool = False):
        self.images = images.detach().clone().requires_grad_(True)
        self.labels = labels.detach().clone()
        if learn_labels:
            self.labels = self.labels.to(images.dtype).requires_grad_(True)
        self.num_classes = num_classes
        self.num_items = images.shape[0]

    @classmethod
    def build(cls, real: RealData, preprocess, ipc, init: str, gen: torch.Generator, device,
              learn_labels: bool = False) -> PixelSet:
        check_choice("synset.init", init, INITS)
        if float(ipc) != int(ipc) or int(ipc) < 1:
            raise ConfigError(
                f"`ipc={ipc}`: the pixel synthetic set needs a whole number of images per class (>= 1). "
                "Fractional IPC needs a poster: `method=podd` (or `synset=poster`)."
            )
        ipc = int(ipc)
        if init == "real":
            images = init_from_real(real, preprocess, ipc, gen)
        else:
            c, h, w = real.image_shape
            images = torch.randn(real.num_classes * ipc, c, h, w, generator=gen)
            if init == "unit_noise":  # RaT-BPTT: random images on the unit sphere (norm over C*H*W)
                images = images / images.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        labels = torch.arange(real.num_classes).repeat_interleave(ipc)
        if learn_labels:
            labels = torch.nn.functional.one_hot(labels, real.num_classes)
        return cls(images.to(device), labels.to(device), real.num_classes, learn_labels)

    @classmethod
    def from_file(cls, syn, num_classes: int, ipc, device, learn_labels: bool = False) -> PixelSet:
        """Start from a saved set (`synset.init_from`): `ipc` images per class in class-major order."""
        want = torch.arange(num_classes).repeat_interleave(int(ipc))
        images, labels = syn.images.float(), syn.labels
        hard = labels.argmax(1) if labels.is_floating_point() and labels.dim() == 2 else labels
        if images.shape[0] != want.numel() or not torch.equal(hard.cpu().long(), want):
            raise ConfigError(
                f"`synset.init_from` holds {images.shape[0]} images with classes {hard.tolist()[:12]}..., but "
                f"`ipc={ipc}` needs {want.numel()} images, {int(ipc)} per class in class order (0, 0, ..., 1, 1, ...).")
        if learn_labels:
            want = torch.nn.functional.one_hot(want, num_classes)
        return cls(images.to(device), want.to(device), num_classes, learn_labels)

    def param_groups(self) -> dict[str, list[torch.Tensor]]:
        groups = {"images": [self.images]}
        if self.labels.requires_grad:
            groups["labels"] = [self.labels]
        return groups

    def sample(self, idx: torch.Tensor) -> Batch:
        return Batch(self.images[idx], self.labels[idx])

    def materialize(self) -> Batch:
        return Batch(self.images.detach().clone(), self.labels.detach().clone())

    def preview(self) -> torch.Tensor:
        return self.images.detach()

    def project_(self) -> None:
        if self.labels.requires_grad:
            with torch.no_grad():
                self.labels.clamp_(min=0)

    def state_dict(self) -> dict:
        return {"images": self.images.detach().cpu(), "labels": self.labels.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.images.copy_(state["images"])
            self.labels.copy_(state["labels"])
