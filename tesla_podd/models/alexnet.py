"""AlexNet as MTT's networks.py defines it (a CIFAR-sized AlexNet, no norm layers, no dropout):
conv5x5(128) -> ReLU -> max-pool, conv5x5(192) -> ReLU -> max-pool, conv3x3(256) -> conv3x3(192) ->
conv3x3(192) (each + ReLU) -> max-pool, then one linear layer.

Resolution: the reference's linear layer takes 192 x 4 x 4 features (a 32 px input). We size it from the
final map (192 x (size/8)^2), so 32 px equals the reference and 64 px works; sides must be multiples of 8.
(The reference pads the first conv by 4 for 1-channel 28 px MNIST; our datasets are RGB, padding 2.)"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError


class AlexNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int):
        super().__init__()
        if image_size % 8:
            raise ConfigError(f"Model `alexnet` needs images whose side is a multiple of 8 (three 2x2 max-pools); "
                              f"the dataset's image_size is {image_size}.")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, 5, stride=1, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        )
        side = image_size // 8
        self.fc = nn.Linear(192 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))
