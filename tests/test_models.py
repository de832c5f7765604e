"""Model registry and architectures: shapes, parameter counts equal to the reference definitions,
trainability, seeded init, refusal of unknown names and unsupported resolutions."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF, compose_cfg

from tesla_podd.errors import ConfigError
from tesla_podd.models import MODELS, FlatModel, build_model, canonical_name, model_tag, uses_batchnorm
from tesla_podd.seeding import seeded_init

# Reference parameter counts (3 input channels, 10 classes), summed by hand from the layer lists of
# GeorgeCazenavette/mtt-distillation networks.py (MTT) and justincui03/dc_benchmark networks/vit.py +
# networks/network_utils.py (DC-BENCH ViT, the one TESLA Table 2 cites). conv(k, i, o) = k*k*i*o (+o bias);
# instance norm = GroupNorm(c, c): 2c; linear(i, o) = i*o + o.
REFERENCE_PARAMS_32 = {
    # ConvNet(width 128, depth 3, instancenorm): conv(3,3,128)+128 = 3584, 2 x [conv(3,128,128)+128 = 147584],
    # 3 x GN 256, linear(128*4*4, 10) = 20490.
    "convnet": 320010,
    "convnet_bn": 320010,  # BatchNorm2d affine: 2c, like GN (running stats are buffers, not parameters)
    "convnet_gn": 320010,  # GroupNorm(4, c): 2c
    "convnet_nn": 319242,  # no norm: 320010 - 3 x 256
    # ConvNetLN: LayerNorm([128, H, W]) before each pool: 2*128*(32^2 + 16^2 + 8^2) = 344064 instead of 768.
    "convnet_ln": 663306,
    # ConvNetNP: no pooling, the 32x32 map reaches the linear layer: linear(128*32*32, 10) = 1310730.
    "convnet_np": 1610250,
    # ConvNetW32: conv(3,3,32)+32 = 896, 2 x 9248, 3 x GN 64, linear(32*16, 10) = 5130.
    "convnet_w32": 24714,
    # ConvNetD1: one conv 3584 + GN 256, linear(128*16*16, 10) = 327690.
    "convnet_d1": 331530,
    # ConvNetKIP: width 1024, no norm: 28672 + 2 x 9438208 + linear(1024*16, 10) = 163850.
    "convnet_kip": 19068938,
    # ResNet18 (BasicBlock [2,2,2,2], bias-free convs, CIFAR stem conv3x3 64): stem 1728 + norm 128;
    # layer1 2 x (2 x 36864 + 2 x 128) = 147968; layer2 230144 + 295424 (incl. 1x1 shortcut 8192 + norm 256);
    # layer3 919040 + 1180672; layer4 3673088 + 4720640; linear(512, 10) = 5130.
    "resnet18": 11173962,
    "resnet18_bn": 11173962,
    # ResNet18_AP: same convs (shortcut 1x1 stride 1 + avg pool: same count), linear(512*4*4, 10) = 81930.
    "resnet18_ap": 11250762,
    "resnet18_bn_ap": 11250762,
    # VGG11 [64,M,128,M,256,256,M,512,512,M,512,512,M]: convs with bias + norm (2c) = 9225984, linear(512, 10).
    "vgg11": 9231114,
    "vgg11_bn": 9231114,
    # AlexNet: conv5(3,128) 9728, conv5(128,192) 614592, conv3(192,256) 442624, conv3(256,192) 442560,
    # conv3(192,192) 331968, fc(192*4*4, 10) 30730.
    "alexnet": 1872202,
    # ViT (patch 4, dim 512, depth 6, heads 8 x 64, mlp 512): patch linear(48, 512) 25088, pos (64+1)*512 33280,
    # cls 512; per block LN 1024 + qkv 512*1536 + out linear 262656 + LN 1024 + 2 x linear 262656 = 1576448;
    # head LN 1024 + linear(512, 10) 5130.
    "vit": 9523722,
}
# At 64 px only the resolution-dependent parts change (ConvNet gains a 4th block: depth by resolution).
REFERENCE_PARAMS_64 = {
    "convnet": 467850,       # + conv 147584 + GN 256; the linear still sees 4x4x128
    # resnet18 from 64 px is MTT's ResNet18ImageNet: stem conv7x7(3, 64) 9408 instead of 1728, linear(512, 10).
    "resnet18": 11181642,
    "resnet18_cifar": 11189322,  # linear(512*2*2, 10) = 20490 (the reference's 4x4 pool leaves a 2x2 map)
    "resnet18_ap": 11496522,  # linear(512*8*8, 10) = 327690
    "vgg11": 9246474,        # linear(512*2*2, 10) = 20490
    "alexnet": 1964362,      # fc(192*8*8, 10) = 122890
    "vit": 9622026,          # pos embedding (256+1)*512 = 131584
}
MAIN = ["convnet", "convnet_bn", "resnet18", "resnet18_bn", "resnet18_ap", "vgg11", "vgg11_bn", "alexnet", "vit"]


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_32))
def test_parameter_count_matches_reference_at_32px(name):
    assert num_params(build_model(name, 3, 10, 32)) == REFERENCE_PARAMS_32[name]


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_64))
def test_parameter_count_at_64px(name):
    assert num_params(build_model(name, 3, 10, 64)) == REFERENCE_PARAMS_64[name]


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", MAIN)
def test_forward_shape(name, size):
    model = build_model(name, 3, 7, size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["convnet", "resnet18_ap", "alexnet", "vit"])
def test_small_images_where_the_definition_allows(name):
    assert build_model(name, 3, 5, 16)(torch.randn(2, 3, 16, 16)).shape == (2, 5)


@pytest.mark.parametrize("name,size", [("resnet18", 16), ("resnet18_bn", 48), ("vgg11", 16), ("alexnet", 20)])
def test_unsupported_resolution_is_refused_clearly(name, size):
    with pytest.raises(ConfigError, match=f"image_size is {size}"):
        build_model(name, 3, 10, size)


# The smallest side each definition allows keeps these fast on a busy 2-core CPU.
@pytest.mark.parametrize("name,size", [("convnet", 16), ("convnet_bn", 16), ("resnet18", 32), ("resnet18_bn_ap", 16),
                                       ("vgg11", 32), ("alexnet", 16), ("vit", 16)])
def test_a_few_steps_reduce_the_loss_on_a_tiny_batch(name, size):
    with seeded_init(0, "test-train", name):
        model = build_model(name, 3, 4, size)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, size, size, generator=gen), torch.arange(4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)

    def loss_value() -> float:  # train mode (batch statistics); the same dropout draws each time
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            return torch.nn.functional.cross_entropy(model(x), y).item()

    before = loss_value()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert loss_value() < 0.95 * before


@pytest.mark.parametrize("name", ["convnet", "resnet18", "vit"])
def test_init_is_deterministic_under_seeded_init(name):
    def weights(*stream):
        with seeded_init(3, *stream):
            return torch.cat([p.detach().flatten() for p in build_model(name, 3, 10, 32).parameters()])

    state = torch.random.get_rng_state()
    a, b, c = weights("eval", 0), weights("eval", 0), weights("eval", 1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(torch.random.get_rng_state(), state), "building a model must not move the global RNG"


def test_unknown_name_is_refused_with_the_allowed_list():
    with pytest.raises(ConfigError) as err:
        build_model("resnet50", 3, 10, 32, key="eval.models")
    text = str(err.value)
    assert "`eval.models`" in text and "'resnet50'" in text
    for allowed in ("'convnet'", "'resnet18'", "'resnet18_ap'", "'vgg11'", "'alexnet'", "'vit'"):
        assert allowed in text


def test_mtt_spellings_are_accepted():
    assert canonical_name("ResNet18_AP") == "resnet18_ap"
    assert canonical_name("ResNet18BN_AP") == "resnet18_bn_ap"
    assert canonical_name("ConvNetBN") == "convnet_bn"
    assert canonical_name("ConvNetW64") == "convnet_w64"
    assert canonical_name("VGG11BN") == "vgg11_bn"
    assert canonical_name("ViT") == "vit"


def test_tags_keep_the_convnet_buffer_key_and_separate_architectures():
    cfg = compose_cfg("model=convnet")
    assert model_tag(cfg.model, 32) == "convnet-d3-w128-instancenorm"  # unchanged: existing buffers stay valid
    assert model_tag("convnet_bn", 64) == model_tag(compose_cfg("model=convnet_bn").model, 64) == \
        "convnet-d4-w128-batchnorm"
    tags = {model_tag(n, 32) for n in MAIN}
    assert len(tags) == len(MAIN)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_model_config_builds_the_named_architecture(option):
    """conf/model/<name>.yaml builds what the bare name builds; BatchNorm buffers iff uses_batchnorm."""
    node = compose_cfg(f"model={option}").model
    assert node.name == option and option in MODELS
    from_cfg, from_name = build_model(node, 3, 10, 32), build_model(option, 3, 10, 32)
    assert num_params(from_cfg) == num_params(from_name)
    assert model_tag(node, 32) == model_tag(option, 32)
    has_buffers = any(True for _ in from_cfg.buffers())
    assert has_buffers == uses_batchnorm(node) == uses_batchnorm(option)


@pytest.mark.parametrize("name", ["convnet", "resnet18_ap", "alexnet", "vit"])
def test_flat_model_runs_every_family(name):
    """Trajectory matching calls models through FlatModel (torch.func.functional_call)."""
    model = build_model(name, 3, 10, 16).eval()
    flat = FlatModel(model)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(flat(flat.flatten(), x), model(x), atol=1e-6)
