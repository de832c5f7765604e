"""DSA augmentation: replayable parameters, ranges from TARGETS.md, and exact op semantics."""

from __future__ import annotations

import math

import pytest
import torch

from tesla_podd.data.augment import DSA, AugParams, NoAugment, build_augment
from tesla_podd.errors import ConfigError

ALL = "color_crop_cutout_flip_scale_rotate"


def gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def images(n=4, c=3, h=8, w=8, dtype=torch.float64, seed=1):
    return torch.rand(n, c, h, w, generator=gen(seed), dtype=dtype)


# ---------------------------------------------------------------- replay and randomness
@pytest.mark.parametrize("op", DSA.OPS)
def test_apply_replays_bit_identically(op):
    aug = DSA(strategy=op)
    x = images(dtype=torch.float32)
    p = aug.sample(4, (8, 8), gen(3))
    assert p.ops == [op]
    assert torch.equal(aug.apply(x, p), aug.apply(x, p))


def test_same_seed_same_params_and_no_global_rng():
    aug = DSA(mode="all")
    state = torch.get_rng_state()
    a, b = aug.sample(16, (32, 32), gen(7)), aug.sample(16, (32, 32), gen(7))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was never touched
    assert a.ops == b.ops == list(DSA.OPS)
    for (na, pa), (nb, pb) in zip(a.steps, b.steps):
        assert na == nb and pa.keys() == pb.keys()
        assert all(torch.equal(pa[k], pb[k]) and pa[k].device.type == "cpu" for k in pa)
    c = aug.sample(16, (32, 32), gen(8))
    assert not torch.equal(a.steps[-1][1]["degrees"], c.steps[-1][1]["degrees"])


def test_call_equals_sample_then_apply():
    aug = DSA()
    x = images(n=6, dtype=torch.float32)
    p = aug.sample(6, (8, 8), gen(5))
    assert torch.equal(aug(x, gen(5)), aug.apply(x, p))


def test_op_choice_is_uniform_in_mode_one():
    aug = DSA(mode="one")
    g = gen(11)
    draws = 6000
    counts = {op: 0 for op in DSA.OPS}
    for _ in range(draws):
        counts[aug.sample(1, (8, 8), g).ops[0]] += 1
    sigma = math.sqrt(draws * (1 / 6) * (5 / 6))  # ~29
    for op, k in counts.items():
        assert abs(k - draws / 6) < 5 * sigma, (op, counts)


def test_mode_all_applies_every_op_in_order():
    aug = DSA(mode="all")
    x = images(dtype=torch.float64)
    p = aug.sample(4, (8, 8), gen(2))
    assert p.ops == list(DSA.OPS)
    expected = x
    for step in p.steps:  # composing single-step applies gives the same result
        expected = aug.apply(expected, AugParams([step]))
    assert torch.equal(aug.apply(x, p), expected)
    assert DSA(strategy="flip_rotate", mode="all").sample(2, (8, 8), gen(0)).ops == ["flip", "rotate"]


# ---------------------------------------------------------------- parameter ranges (TARGETS.md)
def test_parameter_ranges():
    n, h = 20000, 32
    p = dict(DSA(mode="all").sample(n, (h, h), gen(0)).steps)
    lo, hi = 1 / 1.2, 1.2
    for k in ("sx", "sy"):
        v = p["scale"][k]
        assert v.min() >= lo and v.max() <= hi
        assert v.min() < lo + 0.002 and v.max() > hi - 0.002
    assert not torch.equal(p["scale"]["sx"], p["scale"]["sy"])  # drawn separately
    deg = p["rotate"]["degrees"]
    assert deg.min() >= -15 and deg.max() <= 15 and deg.min() < -14.9 and deg.max() > 14.9
    s = int(h * 0.125 + 0.5)  # 4 pixels
    for k in ("dy", "dx"):
        v = p["crop"][k]
        assert v.dtype == torch.long and set(v.unique().tolist()) == set(range(-s, s + 1))
    size = int(h * 0.5 + 0.5)  # 16: even, so centres in [0, H]
    cut = p["cutout"]
    assert torch.all(cut["h"] == size) and torch.all(cut["w"] == size)
    centres = cut["y0"] + size // 2
    assert set(centres.unique().tolist()) == set(range(0, h + 1))
    col = p["color"]
    for k, (a, b) in {"brightness": (-0.5, 0.5), "saturation": (0.0, 2.0), "contrast": (0.5, 1.5)}.items():
        v = col[k]
        assert v.min() >= a and v.max() <= b and v.min() < a + 0.002 and v.max() > b - 0.002, k
        assert abs(v.mean().item() - (a + b) / 2) < 0.02 * (b - a), k
    frac = p["flip"]["flip"].float().mean().item()
    assert abs(frac - 0.5) < 0.02


def test_odd_cutout_size_centre_range():
    p = dict(DSA(strategy="cutout").sample(5000, (10, 10), gen(1)).steps)["cutout"]
    assert torch.all(p["h"] == 5)  # int(10 * 0.5 + 0.5)
    centres = p["y0"] + 2
    assert set(centres.unique().tolist()) == set(range(0, 10))  # odd size: [0, H)


# ---------------------------------------------------------------- op semantics
def test_flip_flips_exactly_the_chosen_samples():
    aug = DSA(strategy="flip")
    x = images(n=2)
    p = AugParams([("flip", {"flip": torch.tensor([True, False])})])
    y = aug.apply(x, p)
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])
    assert not torch.equal(y[0], x[0])


def hand_crop(x, dy, dx):
    out = torch.zeros_like(x)
    n, _, h, w = x.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                si, sj = i + int(dy[b]), j + int(dx[b])
                if 0 <= si < h and 0 <= sj < w:
                    out[b, :, i, j] = x[b, :, si, sj]
    return out


def test_crop_equals_hand_shift_with_zero_fill():
    x = images(n=3, h=6, w=7) + 1.0  # strictly positive, so zero fill is visible
    dy, dx = torch.tensor([2, -3, 0]), torch.tensor([-1, 4, 0])
    y = DSA(strategy="crop").apply(x, AugParams([("crop", {"dy": dy, "dx": dx})]))
    assert torch.equal(y, hand_crop(x, dy, dx))
    assert torch.equal(y[2], x[2])  # zero shift is the identity
    assert torch.all(y[0, :, -2:] == 0) and torch.all(y[0, :, :, 0] == 0)  # shifted-in borders are 0


def test_cutout_zeros_exactly_one_square():
    aug = DSA(strategy="cutout")
    h = w = 12
    x = images(n=500, h=h, w=w, dtype=torch.float32) + 0.5  # no zeros of its own
    p = aug.sample(500, (h, w), gen(4))
    y = aug.apply(x, p)
    cut = dict(p.steps)["cutout"]
    size = int(h * 0.5 + 0.5)
    full = 0
    for b in range(500):
        y0, x0 = int(cut["y0"][b]), int(cut["x0"][b])
        r0, r1, c0, c1 = max(y0, 0), min(y0 + size, h), max(x0, 0), min(x0 + size, w)
        hole = torch.zeros(h, w, dtype=torch.bool)
        hole[r0:r1, c0:c1] = True
        assert torch.equal(y[b] == 0, hole.expand(3, h, w))
        assert torch.equal(y[b][:, ~hole], x[b][:, ~hole])
        full += int(hole.sum() == size * size)
    assert full > 100  # plenty of squares lie fully inside


def test_scale_and_rotate_geometry():
    aug = DSA()
    h = w = 9
    ramp = torch.arange(w, dtype=torch.float64).expand(1, 1, h, w).clone()
    one = torch.ones(1)
    # Identity parameters give back the image (align_corners=True maps pixel centres exactly).
    ident = aug.apply(ramp, AugParams([("scale", {"sx": one, "sy": one}), ("rotate", {"degrees": 0 * one})]))
    assert torch.allclose(ident, ramp, atol=1e-12)
    # sx = 0.5 samples the input at half the distance from the centre: a half-slope ramp.
    y = aug.apply(ramp, AugParams([("scale", {"sx": 0.5 * one, "sy": one})]))
    centre = (w - 1) / 2
    assert torch.allclose(y, centre + (ramp - centre) * 0.5, atol=1e-12)
    # +90 degrees of a square image is an exact rot90 (out[i, j] = x[j, W-1-i]: counter-clockwise as
    # displayed), since theta maps output (u, v) to input (cos u - sin v, sin u + cos v) = (-v, u).
    x = images(n=1, h=h, w=w)
    r = aug.apply(x, AugParams([("rotate", {"degrees": 90 * one})]))
    assert torch.allclose(r, torch.rot90(x, k=1, dims=(2, 3)), atol=1e-12)
    assert torch.allclose(r[0, 0, 0, 0], x[0, 0, 0, w - 1])


def test_color_matches_formulas():
    x = images(n=2)
    b, s, c = torch.tensor([0.3, -0.2]), torch.tensor([1.5, 0.0]), torch.tensor([0.7, 1.2])
    p = AugParams([("color", {"brightness": b, "saturation": s, "contrast": c})])
    y = DSA(strategy="color").apply(x, p)
    e = x + b.double().view(-1, 1, 1, 1)
    m = e.mean(1, keepdim=True)
    e = m + (e - m) * s.double().view(-1, 1, 1, 1)
    m = e.mean((1, 2, 3), keepdim=True)
    e = m + (e - m) * c.double().view(-1, 1, 1, 1)
    assert torch.allclose(y, e, atol=1e-12)
    assert torch.allclose(y[1], y[1].mean(0, keepdim=True).expand(3, -1, -1))  # saturation 0 -> grey


# ---------------------------------------------------------------- gradients, dtypes, devices
def test_gradients_of_flip_and_crop_match_hand_computation():
    aug = DSA()
    x = images(n=3, h=6, w=6).requires_grad_()
    wts = images(n=3, h=6, w=6, seed=9)
    flip = torch.tensor([True, False, True])
    (aug.apply(x, AugParams([("flip", {"flip": flip})])) * wts).sum().backward()
    assert torch.equal(x.grad, torch.where(flip.view(-1, 1, 1, 1), wts.flip(3), wts))
    x.grad = None
    dy, dx = torch.tensor([1, -2, 0]), torch.tensor([3, 0, -1])
    (aug.apply(x, AugParams([("crop", {"dy": dy, "dx": dx})])) * wts).sum().backward()
    # d out[i, j] / d x[i + dy, j + dx] = 1 where the source is inside: the weights shifted back.
    assert torch.equal(x.grad, hand_crop(wts, -dy, -dx))


@pytest.mark.parametrize("op", ["color", "scale", "rotate", "cutout"])
def test_gradcheck(op):
    aug = DSA(strategy=op)
    x = images(n=2, h=5, w=5).requires_grad_()
    p = aug.sample(2, (5, 5), gen(6))
    assert torch.autograd.gradcheck(lambda t: aug.apply(t, p), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved(dtype):
    aug = DSA(mode="all")
    x = images(dtype=dtype)
    y = aug(x, gen(0))
    assert y.dtype == dtype and y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    aug = DSA(mode="all")
    x = images(dtype=torch.float64)
    p = aug.sample(4, (8, 8), gen(0))
    assert torch.allclose(aug.apply(x.cuda(), p).cpu(), aug.apply(x, p), atol=1e-10)


# ---------------------------------------------------------------- construction and errors
def test_bad_names_raise_config_errors():
    with pytest.raises(ConfigError, match="augment.strategy") as e:
        DSA(strategy="color_blur")
    assert "'blur'" in str(e.value)
    with pytest.raises(ConfigError, match="augment.strategy"):
        DSA(strategy="")
    with pytest.raises(ConfigError, match="augment.mode"):
        DSA(mode="some")
    with pytest.raises(ConfigError, match="augment.name") as e:
        build_augment("mixup")
    assert "'dsa'" in str(e.value) and "'none'" in str(e.value)
    with pytest.raises(ConfigError, match="augment.strenght"):
        build_augment("dsa", strenght=1.0)


def test_build_augment_and_identity():
    aug = build_augment("dsa", strategy="flip_rotate", mode="all", rotate=10.0)
    assert isinstance(aug, DSA) and aug.ops == ["flip", "rotate"] and aug.rotate == 10.0
    none = build_augment("none", strategy=ALL, mode="one")
    assert isinstance(none, NoAugment)
    x = images()
    assert none.sample(4, (8, 8), gen(0)).steps == []
    assert none(x, gen(0)) is x and none.apply(x, AugParams([])) is x
