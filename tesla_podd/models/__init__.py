"""Model registry: `build_model(model_cfg, channels, num_classes, image_size)`."""

from __future__ import annotations

from torch import nn

from ..errors import check_choice
from .convnet import ConvNet, depth_for
from .functional import FlatModel

MODELS = {"convnet": ConvNet}


def build_model(model_cfg, channels: int, num_classes: int, image_size: int) -> nn.Module:
    check_choice("model.name", model_cfg.name, MODELS)
    depth = model_cfg.get("depth") or depth_for(image_size)
    return ConvNet(channels, num_classes, image_size, width=int(model_cfg.width), depth=int(depth),
                   norm=str(model_cfg.norm))


def model_tag(model_cfg, image_size: int) -> str:
    """Short name of everything that fixes the parameter layout, for buffer keys and file names."""
    depth = model_cfg.get("depth") or depth_for(image_size)
    return f"{model_cfg.name}-d{depth}-w{model_cfg.width}-{model_cfg.norm}"


__all__ = ["MODELS", "build_model", "model_tag", "FlatModel", "ConvNet", "depth_for"]
