"""Each gradient mode against an independent autograd reference, in float64 (ALGORITHMS.md 2-4).

- tesla  == autograd through the unrolled loop with every theta_i detached inside g_i
- exact  == unrolled == autograd through the full unrolled loop (MTT)
- unrolled != tesla: the Hessian terms TESLA drops are real.
DSA is on and batch_syn is smaller than the set, so replaying mini-batches and augmentations matters."""

from __future__ import annotations

import pytest
import torch

from tesla_podd.algorithms.base import PositiveScalar
from tesla_podd.algorithms.matching import MATCHERS, StepPlan, Student
from tesla_podd.data.augment import DSA
from tesla_podd.models import ConvNet, FlatModel
from tesla_podd.synset.base import soft_cross_entropy
from tesla_podd.synset.pixels import PixelSet
from tesla_podd.synset.poster import PosterSet

DT = torch.float64
N_CLASSES, IPC, SIZE, STEPS, BATCH = 3, 2, 8, 4, 4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def setup(soft: bool, learn_labels: bool = False, seed: int = 0, poster: bool = False):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    flat = FlatModel(ConvNet(3, N_CLASSES, SIZE, width=4, depth=1).to(DT))
    theta0 = flat.flatten().to(DT)
    target = theta0 + 0.05 * torch.randn(theta0.shape, generator=g, dtype=DT)
    images = torch.randn(N_CLASSES * IPC, 3, SIZE, SIZE, generator=g, dtype=DT)
    labels = torch.arange(N_CLASSES).repeat_interleave(IPC)
    if learn_labels:
        labels = torch.nn.functional.one_hot(labels, N_CLASSES).to(DT) + 0.1
    synset = PixelSet(images, labels, N_CLASSES, learn_labels=learn_labels)
    if poster:  # a 3-class poster 10 x 21 (class grid 1 x 3), 2 x 5 overlapping 8 x 8 patches
        poster_t = torch.randn(3, 10, 21, generator=g, dtype=DT)
        synset = PosterSet(poster_t, (SIZE, SIZE), (1, 3), (2, 5), [0, 1, 2], N_CLASSES,
                           labels="poddl_learned" if learn_labels else "poddl_fixed")
    aug = DSA()
    plans = []
    for _ in range(STEPS):
        idx = torch.randperm(synset.num_items, generator=g)[:BATCH]
        y = torch.softmax(torch.randn(BATCH, N_CLASSES, generator=g, dtype=DT), 1) if soft else None
        plans.append(StepPlan(idx, aug.sample(BATCH, (SIZE, SIZE), g), y))
    return flat, synset, aug, plans, theta0, target


def leaves(synset) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(image tensor, learnable label tensor or None) of a pixel set or a poster."""
    groups = synset.param_groups()
    return groups["images"][0], (groups["labels"][0] if "labels" in groups else None)


def ours(mode: str, soft=False, learn_labels=False, poster=False, lanes=1, **kw):
    flat, synset, aug, plans, theta0, target = setup(soft, learn_labels, poster=poster)
    lr = PositiveScalar(0.05, dtype=DT)
    loss = MATCHERS[mode](Student(flat, synset, aug, lanes=lanes), plans, theta0, target, lr, **kw)
    images, labels = leaves(synset)
    grads = [images.grad.clone(), (lr.log.grad / lr.value).detach()]  # dL/dX, dL/dalpha
    if learn_labels:
        grads.append(labels.grad.clone())
    return loss, grads


def reference(detach_thetas: bool, soft=False, learn_labels=False, poster=False):
    """Plain autograd through a Python loop of N student steps (written independently of matching.py)."""
    flat, synset, aug, plans, theta0, target = setup(soft, learn_labels, poster=poster)
    X, Y = leaves(synset)
    alpha = torch.tensor(0.05, dtype=DT, requires_grad=True)
    theta = theta0.clone().requires_grad_(True)
    for p in plans:
        batch = synset.sample(p.idx)  # pixels: X[idx]; poster: crops of the one poster tensor
        x = aug.apply(batch.x, p.aug)
        y = p.y if p.y is not None else batch.y
        at = theta.detach().requires_grad_(True) if detach_thetas else theta
        logits = flat(at, x)
        if y.dtype == torch.long:
            ce = torch.nn.functional.cross_entropy(logits, y)
        else:
            ce = -(y * torch.log_softmax(logits, 1)).sum(1).mean()
        g = torch.autograd.grad(ce, at, create_graph=True)[0]
        theta = theta - alpha * g
    loss = ((theta - target) ** 2).sum() / ((theta0 - target) ** 2).sum()
    inputs = [X, alpha] + ([Y] if learn_labels else [])
    return loss.item(), list(torch.autograd.grad(loss, inputs))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_tesla_equals_detached_unrolled(soft):
    loss, grads = ours("tesla", soft)
    ref_loss, ref = reference(detach_thetas=True, soft=soft)
    assert abs(loss - ref_loss) < 1e-12
    for a, b in zip(grads, ref):
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("keep_every", [1, 2, 0])
def test_exact_equals_full_unrolled(soft, keep_every):
    _, grads = ours("exact", soft, keep_every=keep_every)
    _, ref = reference(detach_thetas=False, soft=soft)
    for a, b in zip(grads, ref):
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_unrolled_equals_full_reference_and_differs_from_tesla(soft):
    _, unrolled = ours("unrolled", soft)
    _, ref = reference(detach_thetas=False, soft=soft)
    for a, b in zip(unrolled, ref):
        assert rel_err(a, b) < 1e-10
    _, tesla = ours("tesla", soft)
    # The dropped Hessian terms are real: the two gradients differ well beyond rounding.
    assert rel_err(tesla[0], unrolled[0]) > 1e-3
    assert rel_err(tesla[1], unrolled[1]) > 1e-3


@pytest.mark.parametrize("mode,detach", [("tesla", True), ("exact", False), ("unrolled", False)])
def test_learned_labels_get_the_reference_gradient(mode, detach):
    _, grads = ours(mode, learn_labels=True)
    _, ref = reference(detach_thetas=detach, learn_labels=True)
    assert len(grads) == 3
    for a, b in zip(grads, ref):
        assert rel_err(a, b) < 1e-10


def test_positive_lr_cannot_go_negative():
    lr = PositiveScalar(0.01)
    opt = lr.sgd(lr_lr=1e-4, momentum=0.0)
    lr.accumulate_grad(torch.tensor(5000.0))  # SGD on alpha itself would make it 0.01 - 0.5 < 0
    opt.step()
    assert 0 < lr.value.item() < 0.01
    # first-order equivalence with SGD on alpha itself: d alpha ~= -lr_lr * dL/dalpha
    lr = PositiveScalar(0.01, dtype=DT)
    opt = lr.sgd(lr_lr=1e-7, momentum=0.0)
    lr.accumulate_grad(torch.tensor(3.0, dtype=DT))
    opt.step()
    assert abs((lr.value.item() - 0.01) - (-1e-7 * 3.0)) < 1e-4 * 3e-7  # equal to first order


def test_soft_cross_entropy_matches_hard():
    logits = torch.randn(5, 3, dtype=DT)
    y = torch.tensor([0, 2, 1, 1, 0])
    hard = soft_cross_entropy(logits, y)
    soft = soft_cross_entropy(logits, torch.nn.functional.one_hot(y, 3).to(DT))
    assert abs(hard.item() - soft.item()) < 1e-12


@pytest.mark.parametrize("learn_labels", [False, True], ids=["poddl_fixed", "poddl_learned"])
@pytest.mark.parametrize("mode,detach", [("tesla", True), ("exact", False), ("unrolled", False)])
def test_gradient_modes_on_a_poster(mode, detach, learn_labels):
    """Overlapping patches of one poster: gradients of shared pixels add up, in every mode."""
    _, grads = ours(mode, learn_labels=learn_labels, poster=True)
    _, ref = reference(detach_thetas=detach, learn_labels=learn_labels, poster=True)
    assert grads[0].shape == (3, 10, 21)
    for a, b in zip(grads, ref):
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("mode,learn_labels", [("tesla", True), ("exact", False)])
def test_compiled_steps_give_the_same_gradient(mode, learn_labels):
    """algorithm.compile: each step's gradient and VJP as compiled torch.func functions (inductor), float64."""
    flat, synset, aug, plans, theta0, target = setup(False, learn_labels)
    lr = PositiveScalar(0.05, dtype=DT)
    loss = MATCHERS[mode](Student(flat, synset, aug, compiled=True), plans, theta0, target, lr)
    ref_loss, ref = reference(detach_thetas=mode == "tesla", learn_labels=learn_labels)
    images, labels = leaves(synset)
    got = [images.grad, lr.log.grad / lr.value] + ([labels.grad] if learn_labels else [])
    assert abs(loss - ref_loss) < 1e-12
    for a, b in zip(got, ref):
        assert rel_err(a, b) < 1e-10


def record_lanes(monkeypatch) -> list[tuple[int, int]]:
    """(parts, threads) of each `side_by_side_threads` call: one per pass-1 step (the batch's parts), then pass 2
    (its chunks of steps)."""
    import tesla_podd.algorithms.matching as matching

    used, real = [], matching.side_by_side_threads
    monkeypatch.setattr(matching, "side_by_side_threads",
                        lambda f, parts, n: used.append((len(parts), n)) or real(f, parts, n))
    return used


@pytest.mark.parametrize("lanes", [2, 3, 7])  # 7 > STEPS: one chunk per step
@pytest.mark.parametrize("poster,learn_labels", [(False, False), (True, True)], ids=["pixels", "poster"])
def test_tesla_pass2_side_by_side_equals_the_reference(lanes, poster, learn_labels, monkeypatch):
    """algorithm.lanes: pass 2 in contiguous chunks of steps on threads (each from theta at its first step,
    kept by pass 1; each eager lane on its own copy of the network), and each pass-1 step's batch in parts on
    threads (7 lanes > BATCH: one image each), gives TESLA's gradient."""
    used = record_lanes(monkeypatch)
    threads = torch.get_num_threads()
    soft = not learn_labels  # soft teacher labels replace the set's own, learned ones
    loss, grads = ours("tesla", soft=soft, learn_labels=learn_labels, poster=poster, lanes=lanes)
    ref_loss, ref = reference(detach_thetas=True, soft=soft, learn_labels=learn_labels, poster=poster)
    parts = min(lanes, BATCH)
    assert used == [(parts, parts)] * STEPS + [(min(lanes, STEPS),) * 2], "pass 1's parts, pass 2's chunks side by side"
    assert torch.get_num_threads() == threads, "the caller's thread count is restored"
    assert abs(loss - ref_loss) < 1e-12
    for a, b in zip(grads, ref):
        assert rel_err(a, b) < 1e-10


def two_compiled_lane_iterations(monkeypatch) -> tuple[Student, list[tuple[int, int]]]:
    """Two TESLA iterations of a compiled Student on 2 lanes, each checked against the autograd reference; returns
    the Student and its `record_lanes` entries."""
    used = record_lanes(monkeypatch)
    flat, synset, aug, plans, theta0, target = setup(True)
    student = Student(flat, synset, aug, compiled=True, lanes=2)
    _, ref = reference(detach_thetas=True, soft=True)
    for _ in range(2):
        lr = PositiveScalar(0.05, dtype=DT)
        synset.images.grad = None
        MATCHERS["tesla"](student, plans, theta0, target, lr)
        for a, b in zip([synset.images.grad, lr.log.grad / lr.value], ref):
            assert rel_err(a, b) < 1e-10
    return student, used


def test_compiled_tesla_pass2_side_by_side(monkeypatch):
    """Compiled lanes: the first iteration compiles with its pass-1 parts and pass-2 chunks one after another
    (never two threads compiling, never eager torch.func on threads), later ones side by side; both give TESLA's
    gradient."""
    _, used = two_compiled_lane_iterations(monkeypatch)
    first, second = [(2, 1)] * STEPS + [(2, 1)], [(2, 2)] * STEPS + [(2, 2)]  # pass 1's steps, then pass 2
    assert used == first + second


def test_compiled_lanes_thread_after_a_failed_compile(no_compiler, monkeypatch):
    """A machine that cannot compile (no C++ toolchain) gets the warning, then plain autograd steps, which lanes
    run side by side from the second iteration on (eager torch.func would crash on threads)."""
    student, used = two_compiled_lane_iterations(monkeypatch)
    assert not student.compiled
    assert used[STEPS + 1:] == [(2, 2)] * (STEPS + 1), "the second iteration ran side by side"
