"""TESLA Table 2 as DC-BENCH produced it and the reference data options of RaT-BPTT/PoDD: ResNet18ImageNet at
64 px (parameter count from the layer list), `eval.lr_by_model`, per-class batches, Tiny-ImageNet class order."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf

from tesla_podd.config.validate import validate_config
from tesla_podd.data.real import RealData, order_classes
from tesla_podd.errors import ConfigError
from tesla_podd.evaluation.protocol import protocols_by_arch, resolve_protocol
from tesla_podd.evaluation.trainer import unit_batches
from tesla_podd.models import build_model, model_tag
from tesla_podd.synset.sampling import class_members, per_class_batch
from tesla_podd.train import run


def resnet18_params(classes: int, stem_kernel: int, classifier_in: int, channels: int = 3) -> int:
    """ResNet-18 with instance norm (GroupNorm(c, c): 2c parameters), bias-free convs, by its layer list:
    stem conv k x k (channels -> 64) + norm; stages (64, 128, 256, 512) of two BasicBlocks, each two 3x3 convs
    + two norms, the first block of stages 2-4 with a 1x1 shortcut conv + norm; linear(classifier_in, classes)."""
    total = stem_kernel * stem_kernel * channels * 64 + 2 * 64
    c_in = 64
    for c in (64, 128, 256, 512):
        for block in range(2):
            i = c_in if block == 0 else c
            total += 9 * i * c + 9 * c * c + 2 * (2 * c)
            if i != c:
                total += i * c + 2 * c
        c_in = c
    return total + classifier_in * classes + classes


def num_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("classes", [10, 200])
def test_resnet18_at_64px_is_resnet18imagenet_by_parameter_count(classes):
    # MTT networks.py ResNetImageNet / DC-BENCH resnet18imagenet: 7x7/2 stem, global pool, 512-d classifier
    assert num_params(build_model("resnet18", 3, classes, 64)) == resnet18_params(classes, 7, 512)
    assert num_params(build_model("resnet18_imagenet", 3, classes, 64)) == resnet18_params(classes, 7, 512)
    # the CIFAR-stem network under its own name: 3x3 stem, the 4x4 pool leaves 2x2x512 at 64 px
    assert num_params(build_model("resnet18_cifar", 3, classes, 64)) == resnet18_params(classes, 3, 2048)
    # 32 px is unchanged: MTT's ResNet18
    assert num_params(build_model("resnet18", 3, classes, 32)) == resnet18_params(classes, 3, 512)
    assert resnet18_params(10, 3, 512) == 11173962  # the published 11.17M


def test_resnet18imagenet_layers_and_tags():
    m = build_model("resnet18", 3, 10, 64)
    assert m.conv1.kernel_size == (7, 7) and m.conv1.stride == (2, 2) and m.classifier.in_features == 512
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    # the CIFAR tag is unchanged (buffers keep their key); the ImageNet stem has its own
    assert model_tag("resnet18", 32) == "resnet18-instancenorm" == model_tag("resnet18_cifar", 64)
    assert model_tag("resnet18", 64) == "resnet18imagenet-instancenorm" == model_tag("ResNet18ImageNet", 32)
    with pytest.raises(ConfigError, match="model.stem"):
        build_model({"name": "resnet18", "norm": "instancenorm", "avg_pool_downsample": False, "stem": "x"}, 3, 10, 64)


def _ecfg(**over):
    base = dict(length_unit="epoch", epochs=4, steps=4, eval_at=[], schedule="mtt", batch_size=256,
                optimizer="sgd", lr="learned", fallback_lr=0.01, momentum=0.9, weight_decay=5e-4, augment=True)
    return OmegaConf.create({**base, **over})


def test_lr_by_model_overrides_the_learned_lr_per_architecture():
    ecfg = _ecfg(lr_by_model={"ResNet18": 0.01, "vit": 0.02})  # MTT spelling accepted
    base = resolve_protocol(ecfg, 0.037, 100, "dsa")
    protos = protocols_by_arch(base, ["convnet", "resnet18", "vit"], ecfg)
    assert [protos[a].lr for a in ("convnet", "resnet18", "vit")] == [0.037, 0.01, 0.02]
    assert protos["convnet"] is base and protos["resnet18"].length == base.length
    with pytest.raises(ConfigError, match="eval.lr_by_model.resnet19"):
        protocols_by_arch(base, ["convnet"], _ecfg(lr_by_model={"resnet19": 0.01}))
    with pytest.raises(ConfigError, match="eval.lr_by_model.vit"):
        protocols_by_arch(base, ["convnet"], _ecfg(lr_by_model={"vit": -1}))


@pytest.mark.parametrize("preset", ["tesla_cifar10_ipc10_crossarch", "random_cifar100_ipc10_crossarch",
                                    "tesla_imagenet64_ipc10_crossarch"])
def test_crossarch_presets_follow_dc_bench(preset):
    cfg = compose_cfg(f"experiment={preset}")
    validate_config(cfg)
    assert dict(cfg.eval.lr_by_model) == {"resnet18": 0.01, "vit": 0.01}
    assert list(cfg.eval.models) == ["convnet", "resnet18", "vit"] and cfg.eval.schedule == "mtt"
    with pytest.raises(ConfigError, match="eval.lr_by_model.vit"):
        validate_config(compose_cfg(f"experiment={preset}", "eval.lr_by_model.vit=-0.5"))


def test_eval_json_records_each_architectures_lr(smoke_cfg, tmp_path):
    run(smoke_cfg("method=random", "stages=[distill]"), run_dir=tmp_path / "d")
    cfg = smoke_cfg("method=random", "stages=[eval]", f"eval.synset_path={tmp_path / 'd' / 'synset.pt'}",
                    "eval.epochs=2", "eval.eval_at=[]", "eval.models=[convnet,convnet_ln]",
                    "eval.lr_by_model={convnet_ln: 0.005}", "eval.fallback_lr=0.02")
    run(cfg, run_dir=tmp_path / "e")
    r = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert r["architectures"]["convnet"]["protocol"]["lr"] == 0.02
    assert r["architectures"]["convnet_ln"]["protocol"]["lr"] == 0.005
    units = json.loads((tmp_path / "e" / "eval_units" / "convnet_0.json").read_text())
    assert units["plan"]["lr_by_model"] == {"convnet_ln": 0.005}


def test_per_class_batches_take_equal_shares_of_every_class():
    y = torch.arange(4).repeat_interleave(3)  # class-major, 3 per class
    members = class_members(y)
    gen = torch.Generator().manual_seed(0)
    idx = per_class_batch(members, 8, gen)  # 8 // 4 = 2 of each class
    assert torch.bincount(y[idx], minlength=4).tolist() == [2, 2, 2, 2]
    assert all(bool((idx[2 * c : 2 * c + 2].diff() > 0).all()) for c in range(4))  # sorted within the class
    small = per_class_batch(members, 3, gen)  # fewer than the classes: 3 distinct classes, one each
    assert len(small) == 3 and len(set(y[small].tolist())) == 3
    soft = torch.nn.functional.one_hot(y, 4).float() * 0.9 + 0.025
    assert [m.tolist() for m in class_members(soft)] == [m.tolist() for m in members]


def test_eval_per_class_sampling_needs_the_step_unit_and_draws_per_class():
    with pytest.raises(ConfigError, match="eval.batch_sampling=per_class"):
        resolve_protocol(_ecfg(batch_sampling="per_class"), None, 12, "none")
    proto = resolve_protocol(_ecfg(batch_sampling="per_class", length_unit="step", batch_size=4,
                                   optimizer="adam", schedule="constant"), None, 12, "none")
    assert proto.as_dict()["batch_sampling"] == "per_class"
    assert "batch_sampling" not in resolve_protocol(_ecfg(), None, 12, "none").as_dict()  # old plans still match
    y = torch.arange(4).repeat_interleave(3)
    (idx,) = unit_batches(12, proto, torch.Generator().manual_seed(1), class_members(y))
    assert torch.bincount(y[idx], minlength=4).tolist() == [1, 1, 1, 1]


def test_rat_bptt_inner_batches_per_class():
    from test_rat_bptt import tiny_algo

    algo, synset, _ = tiny_algo("pixels", "algorithm.batch_sampling=per_class")  # 3 classes x 2, batch_syn 4
    y = synset.labels
    plan = algo.draw(torch.Generator().manual_seed(3), it=0)
    for idx in plan.syn_idx:  # 4 // 3 = 1 image of every class per inner step
        assert torch.bincount(y[idx], minlength=3).tolist() == [1, 1, 1]
    uniform, _, _ = tiny_algo("pixels")
    assert all(len(i) == 4 for i in uniform.draw(torch.Generator().manual_seed(3), it=0).syn_idx)


@pytest.mark.parametrize("preset", ["rat_bptt_cifar10_ipc10", "rat_bptt_cifar100_ipc1", "rat_bptt_tinyimagenet_ipc10"])
def test_rat_bptt_presets_sample_per_class(preset):
    cfg = compose_cfg(f"experiment={preset}")
    assert cfg.algorithm.batch_sampling == "per_class" and cfg.eval.batch_sampling == "per_class"


def test_sorted_class_order_renumbers_labels_by_identifier():
    data = RealData("tinyimagenet", torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2]),
                    torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([2, 0]), ["fish", "ant", "cat"],
                    (0.5,) * 3, (0.2,) * 3)
    ids = ["n03", "n01", "n02"]
    out = order_classes(data, ids, "sorted")
    assert out.class_names == ["ant", "cat", "fish"]
    assert out.train_y.tolist() == [2, 0, 1] and out.test_y.tolist() == [1, 2]
    assert order_classes(data, ids, "wnids") is data
    with pytest.raises(ConfigError, match="dataset.class_order"):
        order_classes(data, None, "sorted")


@pytest.mark.parametrize("preset", ["podd_tinyimagenet_ipc0.9", "rat_bptt_tinyimagenet_ipc10"])
def test_tiny_reference_presets_sort_classes(preset):
    assert compose_cfg(f"experiment={preset}").dataset.class_order == "sorted"
