"""PoDDL labels: fixed (window majority, ties uniform) and learned (pooled, L1-normalised label grid)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tesla_podd.synset.poster_labels import fixed_labels, learned_label_init, learned_labels
from tesla_podd.synset.poster_layout import class_grid_map, extract_patches, patch_corners


def _row(*corners_x):
    return torch.tensor([[0, x] for x in corners_x])


def test_fixed_labels_hand_example_with_ties():
    # Grid 1x2, order [1, 0], poster 4x6: columns 0-2 are class 1, columns 3-5 class 0 (class 2 absent).
    cmap = class_grid_map((4, 6), (1, 2), [1, 0])
    assert cmap[0].tolist() == [1, 1, 1, 0, 0, 0]
    # 2x2 windows at x = 0 (cols 0,1: 1,1), x = 2 (cols 2,3: 1,0 -> tie), x = 3 (cols 3,4: 0,0)
    y = fixed_labels(cmap, _row(0, 2, 3), (2, 2), 3)
    assert y.tolist() == [[0, 1, 0], [0.5, 0.5, 0], [1, 0, 0]]
    # 2x3 window at x = 2: cols 2,3,4 -> 1,0,0 -> majority class 0 (4 px vs 2 px)
    assert fixed_labels(cmap, _row(2), (2, 3), 3).tolist() == [[1, 0, 0]]


def test_fixed_labels_three_way_tie_and_rows_sum_to_one():
    # 1x3 grid over a 1x3 poster, order [2, 0, 1]: one pixel per class, the full window ties three ways.
    cmap = class_grid_map((1, 3), (1, 3), [2, 0, 1])
    y = fixed_labels(cmap, _row(0), (1, 3), 4)
    assert torch.allclose(y, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0]]))
    # CIFAR-100 reference layout: every row is a distribution
    order = torch.randperm(100).tolist()
    c = patch_corners((303, 303), (32, 32), (20, 20))
    yy = fixed_labels(class_grid_map((303, 303), (10, 10), order), c, (32, 32), 100)
    assert yy.shape == (400, 100)
    assert torch.allclose(yy.sum(1), torch.ones(400))
    assert yy[0].argmax().item() == order[0]  # top-left window sits in cell (0, 0)


def test_learned_label_init_is_one_hot_of_grid():
    Y = learned_label_init((2, 2), [2, 0, 3, 1], 4)
    assert Y.shape == (2, 2, 4)
    assert Y.argmax(-1).tolist() == [[2, 0], [3, 1]]
    assert torch.equal(Y.sum(-1), torch.ones(2, 2))


def test_learned_labels_hand_example():
    # Grid 1x2 on a 4x6 poster: columns 0-2 take Y[0,0], columns 3-5 take Y[0,1]; windows 2x4.
    Y = learned_label_init((1, 2), [1, 0], 3)  # Y[0,0] = e1, Y[0,1] = e0
    c = _row(0, 1, 2)
    # x=0: cols 0-3 -> 3 px class 1, 1 px class 0; x=1: 2 and 2; x=2: 1 and 3
    expected = torch.tensor([[0.25, 0.75, 0], [0.5, 0.5, 0], [0.75, 0.25, 0]])
    assert torch.allclose(learned_labels(Y, (4, 6), c, (2, 4)), expected)
    # Non-one-hot Y: Y[0,0] = [2,0,2], Y[0,1] = [0,4,0]
    # x=0: 0.75*[2,0,2] + 0.25*[0,4,0] = [1.5,1,1.5] -> /4; x=1: 0.5/0.5 -> [1,2,1] -> /4
    Y2 = torch.tensor([[[2.0, 0, 2], [0, 4, 0]]])
    out = learned_labels(Y2, (4, 6), c[:2], (2, 4))
    assert torch.allclose(out, torch.tensor([[0.375, 0.25, 0.375], [0.25, 0.5, 0.25]]))


def _brute_force(Y, poster_hw, corners, hw):
    """Spec written literally: upsample Y nearest to the poster, crop each window, mean, L1-normalise."""
    up = F.interpolate(Y.permute(2, 0, 1)[None], size=poster_hw, mode="nearest")[0]  # [n, Hp, Wp]
    pooled = extract_patches(up, corners, hw).mean(dim=(2, 3))
    return pooled / pooled.sum(1, keepdim=True)


def test_learned_labels_match_brute_force_and_are_differentiable():
    g = torch.Generator().manual_seed(1)
    # CUB-like geometry at small scale: non-integer cell sizes (610/20 = 30.5 px) and odd strides
    Y = torch.rand(3, 5, 15, generator=g, dtype=torch.float64)
    poster_hw, hw = (47, 83), (16, 16)
    c = patch_corners(poster_hw, hw, (6, 11))
    out = learned_labels(Y, poster_hw, c, hw)
    assert torch.allclose(out, _brute_force(Y, poster_hw, c, hw))
    assert torch.allclose(out.sum(1), torch.ones(66, dtype=torch.float64))
    Yg = Y.clone().requires_grad_(True)
    w = torch.rand(66, 15, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: (learned_labels(t, poster_hw, c[:9], hw) * w[:9]).sum(), (Yg,))
    # on the real CUB layout too (30.5-px cells, F.interpolate's float32 cell borders)
    Yc = torch.rand(10, 20, 8, generator=g)
    cc = patch_corners((302, 610), (32, 32), (30, 60))[::37]
    assert torch.allclose(
        learned_labels(Yc, (302, 610), cc, (32, 32)), _brute_force(Yc, (302, 610), cc, (32, 32))
    )


def test_learned_labels_from_init_match_pixel_fractions():
    # One-hot Y gives each window the fraction of its pixels per class (fixed labels keep the argmax).
    order = torch.randperm(10).tolist()
    c = patch_corners((60, 153), (32, 32), (6, 16))
    soft = learned_labels(learned_label_init((2, 5), order, 10), (60, 153), c, (32, 32))
    hard = fixed_labels(class_grid_map((60, 153), (2, 5), order), c, (32, 32), 10)
    assert torch.allclose(soft.sum(1), torch.ones(96))
    top = soft == soft.max(1, keepdim=True).values
    assert torch.equal(top, hard > 0)
