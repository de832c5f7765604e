"""ConvNet of the dataset-distillation literature: [conv3x3 -> norm -> act -> pool2] x depth -> linear.

Defaults as MTT's `get_default_convnet_setting` (networks.py `ConvNet`): width 128, instance norm
(GroupNorm with one group per channel, affine), ReLU, 2x2 average pooling. Depth is 3 for 32x32,
4 for 64x64, 5 for 128x128 (so the final feature map is 4x4). The other norms, activations and
poolings are the ones MTT's ablation names select (ConvNetBN/LN/GN/NN, ConvNetAS/AL, ConvNetMP/NP)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_choice
from .pooling import AvgPool2x2

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")
POOLINGS = ("avgpooling", "maxpooling", "none")


def _norm(kind: str, channels: int, size: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "layernorm":  # over the whole C x H x W map, as MTT's ConvNetLN
        return nn.LayerNorm([channels, size, size], elementwise_affine=True)
    if kind == "groupnorm":  # MTT's ConvNetGN: 4 groups
        return nn.GroupNorm(4, channels, affine=True)
    return nn.Identity()


def _activation(kind: str) -> nn.Module:
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    return nn.ReLU(inplace=True)


class ConvNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128, depth: int = 3,
                 norm: str = "instancenorm", act: str = "relu", pooling: str = "avgpooling"):
        super().__init__()
        check_choice("model.norm", norm, NORMS)
        check_choice("model.act", act, ACTIVATIONS)
        check_choice("model.pooling", pooling, POOLINGS)
        layers, c, s = [], channels, image_size
        for _ in range(depth):
            # Identity stands in for "no norm"/"no pooling" so parameter names do not depend on them.
            layers += [nn.Conv2d(c, width, 3, padding=1), _norm(norm, width, s), _activation(act)]
            if pooling == "maxpooling":
                layers.append(nn.MaxPool2d(2, 2))
            elif pooling == "avgpooling":
                layers.append(AvgPool2x2())  # = nn.AvgPool2d(2, 2), faster autograd
            else:
                layers.append(nn.Identity())
            c, s = width, (s // 2 if pooling != "none" else s)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * s * s, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def depth_for(image_size: int) -> int:
    """The literature's depth by resolution: 32 -> 3, 64 -> 4, 128 -> 5 (16 -> 2 for test data)."""
    return max(1, int(round(torch.log2(torch.tensor(image_size / 4.0)).item())))
