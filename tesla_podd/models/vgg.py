"""VGG-11 as MTT's networks.py defines it (`VGG('VGG11')`): eight conv3x3 -> norm -> ReLU layers with five
2x2 max-pools, then one linear layer (no fully-connected stack).

Norm: `instancenorm` (GroupNorm, one group per channel; MTT `VGG11`) or `batchnorm` (MTT `VGG11BN`).
The reference's trailing 1x1 average pool is the identity and is omitted (it has no parameters).

Resolution: the reference's linear layer takes 512 features (the 1x1 map of a 32 px input). We size it from
the final map (512 x (size/32)^2), so 32 px equals the reference and 64 px works; sides must be multiples of 32."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, check_choice
from .resnet import RESNET_NORMS, norm2d

VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")  # "M": 2x2 max-pool


class VGG11(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int, norm: str = "instancenorm"):
        super().__init__()
        check_choice("model.norm", norm, RESNET_NORMS)
        if image_size % 32:
            raise ConfigError(f"Model `vgg11` needs images whose side is a multiple of 32 (five 2x2 max-pools); "
                              f"the dataset's image_size is {image_size}. Use a 32 or 64 px dataset.")
        layers, c = [], channels
        for item in VGG11_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, item, 3, padding=1), norm2d(norm, item), nn.ReLU(inplace=True)]
                c = item
        self.features = nn.Sequential(*layers)
        side = image_size // 32
        self.classifier = nn.Linear(512 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
