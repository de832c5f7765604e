"""TESLA's image gradient as the TESLA code computes it: half the loss's gradient (`algorithm.synset_grad_scale`).

The reference writes the image gradient of L = |theta_N - theta*|^2 / D as `2 * torch.autograd.grad(...)`, and
2 * (a tuple) repeats the tuple: the tensor it then uses is d(v . g_i / D)/dX without the factor 2, i.e. half of
dL/dX, while the learned lr gets the full dL/dalpha (its own autograd call on L). Here one iteration of our
TrajectoryMatching is checked against that procedure written out by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import compose_cfg

from tesla_podd.algorithms.trajectory import TrajectoryMatching
from tesla_podd.data.augment import NoAugment
from tesla_podd.models import ConvNet, FlatModel
from tesla_podd.synset.pixels import PixelSet

N_CLASSES, SIZE, STEPS, ALPHA = 3, 8, 3, 0.02


def _setup(scale: float | None, *extra: str):
    torch.manual_seed(0)
    make = lambda: ConvNet(3, N_CLASSES, SIZE, width=4, depth=1)  # noqa: E731
    theta0 = FlatModel(make()).flatten()
    target = theta0 + 0.05 * torch.randn_like(theta0)
    images = torch.randn(N_CLASSES, 3, SIZE, SIZE)
    synset = PixelSet(images, torch.arange(N_CLASSES), N_CLASSES)
    overrides = ["debug=smoke", "method=tesla", f"algorithm.syn_steps={STEPS}", "algorithm.expert_epochs=1",
                 "algorithm.max_start_epoch=1", f"algorithm.lr_teacher={ALPHA}", "algorithm.lanes=1"]
    if scale is not None:
        overrides.append(f"algorithm.synset_grad_scale={scale}")
    acfg = compose_cfg(*overrides, *extra).algorithm
    res = SimpleNamespace(device=torch.device("cpu"), seed=0, augment=NoAugment(), label_mode="hard",
                          load_experts=lambda n: [torch.stack([theta0, target])],
                          real=SimpleNamespace(image_shape=(3, SIZE, SIZE)), make_model=make, model_name="convnet")
    return TrajectoryMatching(acfg, synset, res), synset, theta0, target


def _tesla_code_by_hand(images, theta0, target):
    """The TESLA code's procedure: pass 1 without graph; pass 2 d(v . g_i / D)/dX with v = a(t* - t0) + a^2 G
    (no factor 2, as its tuple repetition leaves it); lr grad of |t0 - a G - t*|^2 / D by autograd."""
    flat = FlatModel(ConvNet(3, N_CLASSES, SIZE, width=4, depth=1))
    y = torch.arange(N_CLASSES)

    def grad_at(theta, x, graph):
        th = theta.detach().requires_grad_(True)
        ce = torch.nn.functional.cross_entropy(flat(th, x), y)
        return torch.autograd.grad(ce, th, create_graph=graph)[0]

    thetas, gsum = [theta0], torch.zeros_like(theta0)
    for _ in range(STEPS):
        g = grad_at(thetas[-1], images, False)
        gsum += g
        thetas.append(thetas[-1] - ALPHA * g)
    dist = ((theta0 - target) ** 2).sum()
    v = ALPHA * (target - theta0) + ALPHA**2 * gsum
    x = images.detach().requires_grad_(True)
    image_grad = torch.zeros_like(images)
    for i in range(STEPS):
        image_grad += torch.autograd.grad((v * grad_at(thetas[i], x, True)).sum() / dist, x)[0]
    a = torch.tensor(ALPHA, requires_grad=True)
    lr_grad = torch.autograd.grad(((theta0 - a * gsum - target) ** 2).sum() / dist, a)[0]
    return image_grad, lr_grad


@pytest.mark.parametrize("scale, factor", [(None, 1.0), (1.0, 2.0)], ids=["tesla-default", "loss-gradient"])
def test_tesla_image_gradient_is_the_tesla_codes(scale, factor):
    algo, synset, theta0, target = _setup(scale)
    want_images, want_lr = _tesla_code_by_hand(synset.images.detach(), theta0, target)
    algo.meta_step(0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(synset.images.grad, factor * want_images, rtol=1e-4, atol=1e-7)
    got_lr = (algo.lr.log.grad / algo.lr.value).detach()  # dL/d(log a) -> dL/da
    torch.testing.assert_close(got_lr, want_lr, rtol=1e-4, atol=1e-7)  # the lr's gradient is never scaled


@pytest.mark.parametrize("it, share", [(0, 0.25), (2, 0.75), (3, 1.0), (50, 1.0)])
def test_synset_grad_warmup_ramps_the_image_step(it, share):
    """synset_grad_warmup=4: the images take 1/4, 2/4, 3/4 of the (halved) gradient at iterations 0-2, all of it
    from 3 on; the learned lr's gradient is never ramped. The logged image norm is the set's before its step."""
    algo, synset, theta0, target = _setup(None, "algorithm.synset_grad_warmup=4")
    want_images, want_lr = _tesla_code_by_hand(synset.images.detach(), theta0, target)
    logs = algo.meta_step(it, torch.Generator().manual_seed(0))
    torch.testing.assert_close(synset.images.grad, share * want_images, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close((algo.lr.log.grad / algo.lr.value).detach(), want_lr, rtol=1e-4, atol=1e-7)
    per_image = [float(img.norm()) for img in synset.images.detach()]
    assert logs["image_norm"] == pytest.approx(sum(per_image) / len(per_image), rel=1e-5)


def test_mtt_keeps_the_loss_gradient():
    assert compose_cfg("method=mtt").algorithm.synset_grad_scale == 1.0
    assert compose_cfg("method=tesla").algorithm.synset_grad_scale == 0.5
    assert compose_cfg("experiment=tesla_cifar10_ipc1_cpu").algorithm.synset_grad_scale == 0.5
    assert compose_cfg("method=tesla").algorithm.synset_grad_warmup == 0  # the TESLA code has no ramp
    assert compose_cfg("experiment=tesla_cifar10_ipc1_cpu").algorithm.synset_grad_warmup == 0  # the preset follows it


def test_expert_order_cycle_visits_every_expert_once_per_pass():
    """algorithm.expert_order=cycle: each pass of E iterations uses every expert once, in a fresh order per pass that
    is a function of (seed, pass) alone (so a resumed run walks the same order); uniform draws from the iteration's
    generator."""
    algo, *_ = _setup(None)
    algo.experts = [torch.zeros(2, 1)] * 4
    algo.expert_order = "cycle"
    walk = [algo._expert_index(it, torch.Generator().manual_seed(it)) for it in range(12)]
    passes = [walk[i : i + 4] for i in range(0, 12, 4)]
    assert all(sorted(p) == [0, 1, 2, 3] for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled between passes
    assert walk == [algo._expert_index(it, torch.Generator().manual_seed(99)) for it in range(12)]
    algo.expert_order = "uniform"
    draws = [algo._expert_index(it, torch.Generator().manual_seed(it)) for it in range(12)]
    assert draws == [int(torch.randint(4, (1,), generator=torch.Generator().manual_seed(it))) for it in range(12)]
