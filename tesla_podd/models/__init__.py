"""Model registry: `build_model(model, channels, num_classes, image_size)`.

`model` is a `model` config node (conf/model/*.yaml: `name` plus that family's keys) or a plain name such
as "resnet18" (the eval stage's `eval.models`). Names are ours in snake case; MTT's spellings are accepted
too (`ResNet18_AP`, `ConvNetBN`, `VGG11BN`: case, `_` and `-` are ignored). Each name fixes a family and
the keyword arguments MTT's `get_network` passes for it; a config node may override the family's keys.

Definitions follow MTT's networks.py (ConvNet, ResNet18[_AP], VGG11, AlexNet) and DC-BENCH's ViT, which
TESLA Table 2 uses; each module says where it departs from them (only for resolutions other than 32 px)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import check_choice
from .alexnet import AlexNet
from .convnet import ConvNet, depth_for
from .functional import FlatModel
from .resnet import ResNet18
from .vgg import VGG11
from .vit import ViT

# Keys a config node may set per family, with the values a bare name gets. ConvNet depth None: by image size.
FAMILY_DEFAULTS = {
    "convnet": {"width": 128, "depth": None, "norm": "instancenorm", "act": "relu", "pooling": "avgpooling"},
    "resnet18": {"norm": "instancenorm", "avg_pool_downsample": False, "stem": "cifar"},
    "vgg11": {"norm": "instancenorm"},
    "alexnet": {},
    "vit": {"patch_size": 4, "dim": 512, "depth": 6, "heads": 8, "dim_head": 64, "mlp_dim": 512,
            "dropout": 0.1, "emb_dropout": 0.1},
}
FAMILY_CLASSES = {"convnet": ConvNet, "resnet18": ResNet18, "vgg11": VGG11, "alexnet": AlexNet, "vit": ViT}


@dataclass(frozen=True)
class ModelSpec:
    family: str                               # key of FAMILY_DEFAULTS
    preset: dict = field(default_factory=dict)  # the family keys this name fixes
    reference: str = ""                       # where the definition comes from


_MTT = "MTT networks.py/utils.py get_network"
MODELS: dict[str, ModelSpec] = {
    # ConvNet and MTT's ablation variants (get_network names in the comments' spelling: ConvNetBN ...).
    "convnet": ModelSpec("convnet", {}, f"{_MTT} 'ConvNet' (depth by resolution: 'ConvNetD4' at 64 px)"),
    "convnet_in": ModelSpec("convnet", {"norm": "instancenorm"}, f"{_MTT} 'ConvNetIN'"),
    "convnet_bn": ModelSpec("convnet", {"norm": "batchnorm"}, f"{_MTT} 'ConvNetBN'"),
    "convnet_ln": ModelSpec("convnet", {"norm": "layernorm"}, f"{_MTT} 'ConvNetLN'"),
    "convnet_gn": ModelSpec("convnet", {"norm": "groupnorm"}, f"{_MTT} 'ConvNetGN'"),
    "convnet_nn": ModelSpec("convnet", {"norm": "none"}, f"{_MTT} 'ConvNetNN'"),
    "convnet_as": ModelSpec("convnet", {"act": "sigmoid"}, f"{_MTT} 'ConvNetAS'"),
    "convnet_ar": ModelSpec("convnet", {"act": "relu"}, f"{_MTT} 'ConvNetAR'"),
    "convnet_al": ModelSpec("convnet", {"act": "leakyrelu"}, f"{_MTT} 'ConvNetAL'"),
    "convnet_ap": ModelSpec("convnet", {"pooling": "avgpooling"}, f"{_MTT} 'ConvNetAP'"),
    "convnet_mp": ModelSpec("convnet", {"pooling": "maxpooling"}, f"{_MTT} 'ConvNetMP'"),
    "convnet_np": ModelSpec("convnet", {"pooling": "none"}, f"{_MTT} 'ConvNetNP'"),
    "convnet_w32": ModelSpec("convnet", {"width": 32}, f"{_MTT} 'ConvNetW32'"),
    "convnet_w64": ModelSpec("convnet", {"width": 64}, f"{_MTT} 'ConvNetW64'"),
    "convnet_w128": ModelSpec("convnet", {"width": 128}, f"{_MTT} 'ConvNetW128'"),
    "convnet_w256": ModelSpec("convnet", {"width": 256}, f"{_MTT} 'ConvNetW256'"),
    "convnet_w512": ModelSpec("convnet", {"width": 512}, f"{_MTT} 'ConvNetW512'"),
    "convnet_w1024": ModelSpec("convnet", {"width": 1024}, f"{_MTT} 'ConvNetW1024'"),
    "convnet_d1": ModelSpec("convnet", {"depth": 1}, f"{_MTT} 'ConvNetD1'"),
    "convnet_d2": ModelSpec("convnet", {"depth": 2}, f"{_MTT} 'ConvNetD2'"),
    "convnet_d3": ModelSpec("convnet", {"depth": 3}, f"{_MTT} 'ConvNetD3'"),
    "convnet_d4": ModelSpec("convnet", {"depth": 4}, f"{_MTT} 'ConvNetD4'"),
    "convnet_d5": ModelSpec("convnet", {"depth": 5}, f"{_MTT} 'ConvNetD5'"),
    "convnet_d6": ModelSpec("convnet", {"depth": 6}, f"{_MTT} 'ConvNetD6'"),
    "convnet_d7": ModelSpec("convnet", {"depth": 7}, f"{_MTT} 'ConvNetD7'"),
    "convnet_d8": ModelSpec("convnet", {"depth": 8}, f"{_MTT} 'ConvNetD8'"),
    "convnet_kip": ModelSpec("convnet", {"width": 1024, "norm": "none"}, f"{_MTT} 'ConvNetKIP'"),
    # ResNet-18: MTT's 'ResNet18' is instance-normed; BN and average-pool ('_AP') variants by name.
    # `resnet18` picks its stem by resolution (stem auto): the CIFAR one up to 32 px, MTT/DC-BENCH's
    # 'ResNet18ImageNet' from 64 px on, the network both references ship for that size.
    "resnet18": ModelSpec("resnet18", {"stem": "auto"}, f"{_MTT} 'ResNet18' (instancenorm; 'ResNet18ImageNet' "
                                                         "from 64 px, as DC-BENCH's 'resnet18imagenet')"),
    "resnet18_cifar": ModelSpec("resnet18", {"stem": "cifar"}, f"{_MTT} 'ResNet18' (CIFAR stem at any size)"),
    "resnet18_imagenet": ModelSpec("resnet18", {"stem": "imagenet"},
                                   f"{_MTT} 'ResNet18ImageNet' (7x7/2 stem, max-pool, global pool)"),
    "resnet18_bn": ModelSpec("resnet18", {"norm": "batchnorm"}, "MTT networks.py 'ResNet18BN'"),
    "resnet18_ap": ModelSpec("resnet18", {"avg_pool_downsample": True}, f"{_MTT} 'ResNet18_AP'"),
    "resnet18_bn_ap": ModelSpec("resnet18", {"norm": "batchnorm", "avg_pool_downsample": True},
                                f"{_MTT} 'ResNet18BN_AP'"),
    "vgg11": ModelSpec("vgg11", {}, f"{_MTT} 'VGG11' (instancenorm)"),
    "vgg11_bn": ModelSpec("vgg11", {"norm": "batchnorm"}, f"{_MTT} 'VGG11BN'"),
    "alexnet": ModelSpec("alexnet", {}, f"{_MTT} 'AlexNet'"),
    "vit": ModelSpec("vit", {}, "DC-BENCH networks/network_utils.py 'vit' (networks/vit.py), TESLA Table 2"),
}


def _squash(name: str) -> str:
    return str(name).lower().replace("_", "").replace("-", "")


_BY_SQUASHED = {_squash(n): n for n in MODELS}


def canonical_name(name: str, key: str = "model.name") -> str:
    """Our registry name for `name` (ours or MTT's spelling); ConfigError listing the names otherwise."""
    found = _BY_SQUASHED.get(_squash(name))
    if found is None:
        check_choice(key, name, MODELS)  # raises, naming the key and every allowed name
    return found


def model_kwargs(model, image_size: int, key: str = "model.name") -> tuple[str, str, dict]:
    """(canonical name, family, constructor kwargs) for a config node or a name."""
    is_name = isinstance(model, str)
    name = canonical_name(model if is_name else model["name"], key)
    spec = MODELS[name]
    kwargs = {**FAMILY_DEFAULTS[spec.family], **spec.preset}
    if not is_name:  # a config node's family keys win over the name's preset
        kwargs.update({k: model[k] for k in FAMILY_DEFAULTS[spec.family] if k in model})
    if spec.family == "convnet":
        kwargs["depth"] = int(kwargs["depth"] or depth_for(image_size))
        kwargs["width"] = int(kwargs["width"])
    if spec.family == "resnet18" and kwargs["stem"] == "auto":
        kwargs["stem"] = resnet_stem_for(image_size)
    return name, spec.family, kwargs


def resnet_stem_for(image_size: int) -> str:
    """`stem: auto`: MTT's/DC-BENCH's choice by resolution, CIFAR stem to 32 px, ImageNet stem above."""
    return "imagenet" if int(image_size) >= 64 else "cifar"


def build_model(model, channels: int, num_classes: int, image_size: int, key: str = "model.name") -> nn.Module:
    """A freshly initialised network (draws from the global torch RNG: wrap in `seeding.seeded_init`)."""
    _, family, kwargs = model_kwargs(model, image_size, key)
    return FAMILY_CLASSES[family](channels, num_classes, image_size, **kwargs)


def model_tag(model, image_size: int) -> str:
    """Short name of everything that fixes the parameter layout, for buffer keys and file names.

    Same architecture, same tag, whichever name built it (`convnet_bn` == `convnet` with norm batchnorm)."""
    name, family, kw = model_kwargs(model, image_size)
    if family == "convnet":
        tag = f"convnet-d{kw['depth']}-w{kw['width']}-{kw['norm']}"
        tag += "" if kw["act"] == "relu" else f"-{kw['act']}"
        return tag + ("" if kw["pooling"] == "avgpooling" else f"-{kw['pooling']}")
    if family == "resnet18":  # the CIFAR-stem tag is unchanged, so buffers made before the stem option still match
        stem = "imagenet" if kw["stem"] == "imagenet" else ""
        return f"resnet18{stem}{'_ap' if kw['avg_pool_downsample'] else ''}-{kw['norm']}"
    if family == "vgg11":
        return f"vgg11-{kw['norm']}"
    if family == "vit":
        return (f"vit-p{kw['patch_size']}-dim{kw['dim']}-l{kw['depth']}-h{kw['heads']}x{kw['dim_head']}"
                f"-mlp{kw['mlp_dim']}")
    return name


def uses_batchnorm(model, image_size: int = 32) -> bool:
    """True when the network keeps BatchNorm running statistics (buffers that a functional/vmapped
    training loop does not carry: train such models one by one as ordinary modules)."""
    _, family, kw = model_kwargs(model, image_size)
    return kw.get("norm") == "batchnorm"


def model_reference(model) -> str:
    """Where the definition comes from (for eval.json's per-architecture protocol)."""
    return MODELS[canonical_name(model if isinstance(model, str) else model["name"])].reference


__all__ = ["MODELS", "FAMILY_DEFAULTS", "ModelSpec", "build_model", "model_tag", "model_kwargs", "canonical_name",
           "uses_batchnorm", "model_reference", "FlatModel", "ConvNet", "ResNet18", "VGG11", "AlexNet", "ViT",
           "depth_for"]
