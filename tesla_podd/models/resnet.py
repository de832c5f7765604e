"""ResNet-18 as MTT's networks.py defines it, three variants:

- `ResNet18` (MTT `ResNet`/`BasicBlock`): stride-2 convs downsample; 4x4 average pool; linear.
- `ResNet18_AP` (MTT `ResNet_AP`/`BasicBlock_AP`): every stride-2 conv becomes a stride-1 conv followed by
  a 2x2 average pool (in the block and in its shortcut); the final map is flattened, not pooled.
- `ResNet18ImageNet` (MTT `ResNetImageNet`, stem `imagenet`): the same blocks behind an ImageNet stem,
  7x7/2 conv -> norm -> ReLU -> 3x3/2 max-pool, and a global average pool before a 512-d classifier.
  DC-BENCH ships the same network (`resnet18imagenet`) for 64 px data.

Norm: `instancenorm` (GroupNorm, one group per channel; MTT's default for `ResNet18`/`ResNet18_AP`) or
`batchnorm` (MTT `ResNet18BN`/`ResNet18BN_AP`). Convolutions have no bias, as in the reference.

Resolution: the reference hard-codes the classifier width for 32x32 input. We size it from the feature
map instead, so at 32 px every layer and count equals the reference and 64 px works (the reference fails
there). `ResNet18` needs a multiple of 32 (its 4x4 pool), `ResNet18_AP` a multiple of 8, the ImageNet stem
at least 32 px (its global pool takes any size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_choice

RESNET_NORMS = ("instancenorm", "batchnorm")
STEMS = ("cifar", "imagenet")  # 3x3/1 conv | 7x7/2 conv + 3x3/2 max-pool (+ global pool at the end)
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride) of layer1..layer4
BLOCKS_PER_STAGE = 2  # ResNet-18: [2, 2, 2, 2]


def norm2d(kind: str, channels: int) -> nn.Module:
    return nn.GroupNorm(channels, channels, affine=True) if kind == "instancenorm" else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """conv3x3 -> norm -> ReLU -> [avgpool] -> conv3x3 -> norm, + shortcut, ReLU.

    avg_pool_downsample: the AP variant (stride-1 conv, then 2x2 average pool) instead of a stride-2 conv."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str, avg_pool_downsample: bool):
        super().__init__()
        self.pool = stride != 1 and avg_pool_downsample
        conv_stride = 1 if avg_pool_downsample else stride
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = norm2d(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm2d(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if avg_pool_downsample:  # reference order: 1x1 conv, 2x2 avg pool, norm
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=1, bias=False),
                                              nn.AvgPool2d(2, 2), norm2d(norm, planes))
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                              norm2d(norm, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.pool:
            out = F.avg_pool2d(out, 2, 2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int, norm: str = "instancenorm",
                 avg_pool_downsample: bool = False, stem: str = "cifar"):
        super().__init__()
        check_choice("model.norm", norm, RESNET_NORMS)
        check_choice("model.stem", stem, STEMS)
        imagenet = stem == "imagenet"
        if imagenet and avg_pool_downsample:
            raise ConfigError("`model.stem=imagenet` has no average-pool (`_AP`) variant in the references; "
                              "use `resnet18_ap` with `stem: cifar`, or `resnet18` with `avg_pool_downsample: false`.")
        check_resnet_size(image_size, avg_pool_downsample, stem)
        self.avg_pool_downsample, self.imagenet = avg_pool_downsample, imagenet
        if imagenet:
            self.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = norm2d(norm, 64)
        in_planes, layers = 64, []
        for planes, stride in STAGES:
            blocks = []
            for s in [stride] + [1] * (BLOCKS_PER_STAGE - 1):
                blocks.append(BasicBlock(in_planes, planes, s, norm, avg_pool_downsample))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        side = image_size // 8  # three stride-2 stages
        if imagenet:
            side = 1  # global average pool
        elif not avg_pool_downsample:
            side //= 4  # the reference's 4x4 average pool after layer4
        self.classifier = nn.Linear(512 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.imagenet:
            out = F.max_pool2d(out, 3, stride=2, padding=1)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        if self.imagenet:
            out = out.mean(dim=(2, 3))  # = AdaptiveAvgPool2d(1)
        elif not self.avg_pool_downsample:
            out = F.avg_pool2d(out, 4)
        return self.classifier(out.flatten(1))


def check_resnet_size(image_size: int, avg_pool_downsample: bool, stem: str = "cifar") -> None:
    if stem == "imagenet":
        if image_size < 32:
            raise ConfigError(f"Model `resnet18_imagenet` (ImageNet stem) needs images of at least 32 px (five 2x "
                              f"downsamplings); the dataset's image_size is {image_size}. Use `resnet18_cifar`.")
        return
    multiple = 8 if avg_pool_downsample else 32
    if image_size % multiple:
        name = "resnet18_ap" if avg_pool_downsample else "resnet18"
        raise ConfigError(
            f"Model `{name}` needs images whose side is a multiple of {multiple} (three 2x downsamplings"
            + ("" if avg_pool_downsample else " then MTT's 4x4 average pool")
            + f"); the dataset's image_size is {image_size}. Use a 32 or 64 px dataset, or `resnet18_ap`/`convnet`."
        )
