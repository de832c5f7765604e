"""Poster geometry: sizes vs the PoDD reference, budget invariant, corners, differentiable crops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tesla_podd.errors import ConfigError
from tesla_podd.synset.poster_layout import (
    class_grid_map,
    coverage,
    default_class_grid,
    default_patch_grid,
    effective_ipc,
    extract_patches,
    patch_corners,
    pixel_budget,
    poster_size,
)

# name: (num_classes, image_hw, class_grid (o_y, o_x), README poster (H, W), README patches (p_y, p_x)).
# The README writes them x × y: CIFAR-10 grid 5×2, poster 153×60, patches 16×6.
REFERENCE = {
    "cifar10": (10, (32, 32), (2, 5), (60, 153), (6, 16)),
    "cifar100": (100, (32, 32), (10, 10), (303, 303), (20, 20)),
    "cub200": (200, (32, 32), (10, 20), (302, 610), (30, 60)),
    "tiny": (200, (64, 64), (10, 20), (608, 1211), (20, 40)),
}
IPCS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_sizes_at_0_9(name):
    n, hw, grid, poster, patches = REFERENCE[name]
    assert poster_size(0.9, n, hw, grid) == poster
    assert default_class_grid(n) == grid
    assert default_patch_grid(poster, hw, grid) == patches


def test_rule_alone_matches_cifar10_and_gives_documented_sizes():
    # H = floor(sqrt(0.9)·o_y·h), W = floor(budget / H); only CIFAR-10's reference follows it exactly.
    assert poster_size(0.9, 10, (32, 32), (2, 5), use_reference=False) == (60, 153)  # 60.7 -> 60; 9216/60
    assert poster_size(0.9, 100, (32, 32), (10, 10), use_reference=False) == (303, 304)  # 92160/303=304.2
    assert poster_size(0.9, 200, (32, 32), (10, 20), use_reference=False) == (303, 608)
    assert poster_size(0.9, 200, (64, 64), (10, 20), use_reference=False) == (607, 1214)
    assert poster_size(1.0, 10, (32, 32), (2, 5)) == (64, 160)  # IPC 1: exactly 10 images' pixels


@pytest.mark.parametrize("use_reference", [True, False])
@pytest.mark.parametrize("name", list(REFERENCE))
def test_area_within_budget_for_all_ipcs(name, use_reference):
    n, hw, grid, _, _ = REFERENCE[name]
    for ipc in IPCS:
        ph, pw = poster_size(ipc, n, hw, grid, use_reference=use_reference)
        budget = pixel_budget(ipc, n, hw)
        assert ph * pw <= budget + 1e-6, (ipc, ph, pw)
        assert ph >= hw[0] and pw >= hw[1]
        assert effective_ipc((ph, pw), n, hw) <= ipc + 1e-9
        # each side within a few pixels of sqrt(IPC) x classes x image side, and the budget nearly spent
        assert abs(ph - ipc**0.5 * grid[0] * hw[0]) < 2 and abs(pw - ipc**0.5 * grid[1] * hw[1]) < 4
        assert effective_ipc((ph, pw), n, hw) > ipc - 0.005


def test_bad_grid_and_tiny_poster_raise():
    with pytest.raises(ConfigError):
        poster_size(0.9, 10, (32, 32), (3, 3))
    with pytest.raises(ConfigError):
        poster_size(0.05, 10, (32, 32), (2, 5))  # 14 px tall: smaller than one image


def test_default_class_grid_near_square():
    assert default_class_grid(12) == (3, 4)
    assert default_class_grid(7) == (1, 7)
    assert default_class_grid(43) == (1, 43)


def test_default_patch_grid_generic():
    # 2 windows per class cell, at least ceil(side / img) to cover the poster: y max(4, 4), x max(6, 7)
    assert default_patch_grid((100, 200), (32, 32), (2, 3)) == (4, 7)
    # CIFAR-10 at IPC 0.3 is 35 px tall: only 4 distinct window rows, so the reference 6x16 is capped
    assert poster_size(0.3, 10, (32, 32), (2, 5)) == (35, 87)
    assert default_patch_grid((35, 87), (32, 32), (2, 5)) == (4, 16)


def test_patch_corners_cifar10_reference():
    c = patch_corners((60, 153), (32, 32), (6, 16))
    assert c.dtype == torch.long and c.shape == (96, 2)
    # linspace(0, 28, 6) = 0, 5.6, 11.2, 16.8, 22.4, 28 -> rounded
    assert torch.unique(c[:, 0]).tolist() == [0, 6, 11, 17, 22, 28]
    # linspace(0, 121, 16): step 8.0667 -> 0, 8, 16, 24, 32, 40, 48, 56, 64.53->65, ...
    assert c[:16, 1].tolist() == [0, 8, 16, 24, 32, 40, 48, 56, 65, 73, 81, 89, 97, 105, 113, 121]
    assert c[1].tolist() == [0, 8] and c[16].tolist() == [6, 0]  # row-major: x varies fastest


@pytest.mark.parametrize("name", list(REFERENCE))
def test_corners_in_bounds_and_regular(name):
    n, hw, grid, poster, patches = REFERENCE[name]
    c = patch_corners(poster, hw, patches)
    assert c.shape == (patches[0] * patches[1], 2)
    assert c.min() == 0
    assert (c[:, 0] + hw[0]).max() == poster[0] and (c[:, 1] + hw[1]).max() == poster[1]
    for axis in range(2):
        vals = torch.unique(c[:, axis]).double()
        exact = torch.linspace(0, poster[axis] - hw[axis], patches[axis], dtype=torch.float64)
        assert (vals - exact).abs().max() <= 0.5
        steps = vals.diff()
        assert steps.max() - steps.min() <= 1  # regular stride up to rounding


def test_extract_patches_values_and_subset():
    g = torch.Generator().manual_seed(0)
    poster = torch.randn(3, 60, 153, generator=g)
    c = patch_corners((60, 153), (32, 32), (6, 16))
    p = extract_patches(poster, c, (32, 32))
    assert p.shape == (96, 3, 32, 32)
    for k in (0, 17, 95):
        y, x = c[k].tolist()
        assert torch.equal(p[k], poster[:, y : y + 32, x : x + 32])
    idx = torch.tensor([95, 3, 40])
    assert torch.equal(extract_patches(poster, c[idx], (32, 32)), p[idx])


@pytest.mark.parametrize("name", ["cifar10", "cub200"])
def test_gradient_equals_coverage(name):
    n, hw, grid, poster, patches = REFERENCE[name]
    c = patch_corners(poster, hw, patches)
    x = torch.randn(3, *poster, requires_grad=True)
    extract_patches(x, c, hw).sum().backward()
    cov = coverage(poster, c, hw)
    assert torch.equal(x.grad, cov.expand(3, -1, -1))
    assert cov.min() >= 1  # the reference layouts train every pixel
    assert cov.sum() == c.shape[0] * hw[0] * hw[1]
    # a subset: only its windows get gradient
    x.grad = None
    sub = c[::7]
    extract_patches(x, sub, hw).sum().backward()
    assert torch.equal(x.grad[0], coverage(poster, sub, hw))


def test_coverage_hand_example():
    # 3x4 poster, 2x2 windows at (0,0), (0,2), (1,1)
    cov = coverage((3, 4), torch.tensor([[0, 0], [0, 2], [1, 1]]), (2, 2))
    assert cov.tolist() == [[1, 1, 1, 1], [1, 2, 2, 1], [0, 1, 1, 0]]


def test_class_grid_map_hand_example_and_matches_interpolate():
    # grid 2x3 with order [3,1,4,0,5,2] on a 5x7 poster: rows -> cells 0,0,0,1,1; cols -> 0,0,0,1,1,2,2
    m = class_grid_map((5, 7), (2, 3), [3, 1, 4, 0, 5, 2])
    assert m.tolist() == [
        [3, 3, 3, 1, 1, 4, 4],
        [3, 3, 3, 1, 1, 4, 4],
        [3, 3, 3, 1, 1, 4, 4],
        [0, 0, 0, 5, 5, 2, 2],
        [0, 0, 0, 5, 5, 2, 2],
    ]
    for n, _hw, grid, poster, _ in REFERENCE.values():
        order = torch.randperm(n).tolist()
        ref = F.interpolate(torch.tensor(order, dtype=torch.float32).reshape(1, 1, *grid), size=poster)
        assert torch.equal(class_grid_map(poster, grid, order), ref[0, 0].long())
