"""ConvNet of the dataset-distillation literature: [conv3x3 -> norm -> ReLU -> avgpool2] x depth -> linear.

Width 128, instance norm (GroupNorm with one group per channel, affine), depth 3 for 32x32,
4 for 64x64, 5 for 128x128 (so the final feature map is 4x4)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_choice

NORMS = ("instancenorm", "batchnorm", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128, depth: int = 3,
                 norm: str = "instancenorm"):
        super().__init__()
        check_choice("model.norm", norm, NORMS)
        layers, c, s = [], channels, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), _norm(norm, width), nn.ReLU(inplace=True),
                       nn.AvgPool2d(2, 2)]
            c, s = width, s // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * s * s, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def depth_for(image_size: int) -> int:
    """The literature's depth by resolution: 32 -> 3, 64 -> 4, 128 -> 5 (16 -> 2 for test data)."""
    return max(1, int(round(torch.log2(torch.tensor(image_size / 4.0)).item())))
