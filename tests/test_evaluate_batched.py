"""Stacked (vmap) training of K evaluation networks equals training each alone (issue 9 evaluation goal)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tesla_podd.data.augment import DSA
from tesla_podd.evaluation.protocol import resolve_protocol
from tesla_podd.evaluation.runner import stackable
from tesla_podd.evaluation.trainer import SingleLearner, StackedLearner, train_networks
from tesla_podd.models import build_model
from tesla_podd.seeding import generator, seeded_init


def _nets(k, name="convnet"):
    nets = []
    for i in range(k):
        with seeded_init(0, "test", "init", i):
            nets.append(build_model(OmegaConf.create({"name": name, "width": 8, "depth": 2, "norm": "instancenorm",
                                                      "act": "relu", "pooling": "avgpooling"}), 3, 4, 16))
    return nets


def _proto(optimizer, epochs=3):
    ecfg = OmegaConf.create(dict(length_unit="epoch", epochs=epochs, steps=1, eval_at=[2], schedule="mtt",
                                 batch_size=5, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 0.003,
                                 fallback_lr=0.01, momentum=0.9, weight_decay=5e-4, augment=True))
    return resolve_protocol(ecfg, None, 12, "dsa")


@pytest.mark.parametrize("optimizer,soft", [("sgd", False), ("adam", True)])
def test_stacked_training_equals_sequential_per_model(optimizer, soft):
    torch.manual_seed(1)
    x = torch.randn(12, 3, 16, 16)
    y = torch.softmax(torch.randn(12, 4), 1) if soft else torch.arange(12) % 4
    test = (torch.randn(20, 3, 16, 16), torch.arange(20) % 4)
    proto, aug, k = _proto(optimizer), DSA(), 3  # 4 passes of 3 batches, decay + new optimiser after pass 3
    alone = []
    for i, net in enumerate(_nets(k)):
        learner = SingleLearner(net)
        curve = train_networks(learner, x, y, proto, aug, [generator(0, "d", i)], {"test": test},
                               torch.device("cpu"))
        alone.append((learner.state(), curve[0]))
    stacked = StackedLearner(_nets(k))
    curves = train_networks(stacked, x, y, proto, aug, [generator(0, "d", i) for i in range(k)], {"test": test},
                            torch.device("cpu"))
    for i in range(k):
        state = stacked.state(i)
        for name, p in alone[i][0].items():
            if optimizer == "adam" and _feeds_a_norm(name):
                continue  # its gradient is exactly 0 in theory; Adam scales float noise to full steps either way
            torch.testing.assert_close(state[name], p, rtol=1e-4, atol=1e-5, msg=f"model {i} {name}")
        assert [c["test"] for c in curves[i]] == [c["test"] for c in alone[i][1]]
    # the networks really differ from one another (own init, own batches and augmentation)
    assert not torch.allclose(stacked.state(0)["classifier.weight"], stacked.state(1)["classifier.weight"])


def _feeds_a_norm(name: str) -> bool:
    """Conv biases followed by instance norm: the norm removes them, so they get no gradient."""
    return name.startswith("features.") and name.endswith(".bias") and int(name.split(".")[1]) % 4 == 0


def test_batchnorm_and_dropout_networks_train_one_by_one():
    assert stackable(_nets(1)[0])
    bn = build_model("convnet_bn", 3, 4, 16)
    assert not stackable(bn)
