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


# ---- the reference code's layout (synset.label_layout=reference, FIDELITY.md F5) ----
from tesla_podd.synset.poster import PosterSet  # noqa: E402
from tesla_podd.synset.poster_labels import (  # noqa: E402
    reference_label_init,
    reference_label_shape,
    reference_label_windows,
    reference_labels,
)

# (poster H x W, classes, class grid, patch grid, image side) of the PoDD README runs at 0.9 IPC.
README_RUNS = {
    "cifar100": ((303, 303), 100, (10, 10), (20, 20), 32),
    "cub200": ((302, 610), 200, (10, 20), (30, 60), 32),
    "tinyimagenet": ((608, 1211), 200, (10, 20), (20, 40), 64),
}


def test_reference_label_array_shapes_are_the_reference_codes():
    """init_label_array (src/PoDDL.py): budget n·comp_ipc, exact fit excluded -> 10x9, 9x21, 10x19."""
    expected = {"cifar100": (10, 9), "cub200": (9, 21), "tinyimagenet": (10, 19)}
    for name, (poster_hw, n, _, _, _) in README_RUNS.items():
        assert reference_label_shape(poster_hw, n) == expected[name], name
    assert reference_label_shape((60, 153), 10) == (1, 6)  # CIFAR-10 (unused there: fixed labels)


def test_reference_label_init_leaves_a_class_column_or_row_without_a_cell():
    """Rounded linspace splits of 9 columns into 10 (or 9 rows into 10) give one zero-width block."""
    for name, (poster_hw, n, grid, _, _) in README_RUNS.items():
        shape = reference_label_shape(poster_hw, n)
        Y = reference_label_init(shape, grid, list(range(n)), n)
        assert Y.shape == (*shape, n) and torch.equal(Y.sum(2), torch.ones(shape))  # one-hot everywhere
        missing = int((Y.sum((0, 1)) == 0).sum())
        assert missing == {"cifar100": 10, "cub200": 20, "tinyimagenet": 10}[name]
    # CIFAR-100, 10x9: x splits round(linspace(0, 9, 11)) = 0,1,2,3,4,4,5,6,7,8,9 -> grid column 4 is empty:
    # classes 4, 14, ..., 94 get no cell, their right neighbours take label column 4.
    Y = reference_label_init((10, 9), (10, 10), list(range(100)), 100)
    assert Y[0, 4].argmax() == 5 and Y[:, :, 4].sum() == 0 and Y[:, :, 5].sum() == 1
    assert [int(Y[r, 4].argmax()) for r in range(10)] == list(range(5, 100, 10))


def test_reference_label_window_is_one_cell_and_rows_are_normalised():
    for name, (poster_hw, n, grid, patches, img) in README_RUNS.items():
        shape = reference_label_shape(poster_hw, n)
        window, corners = reference_label_windows(poster_hw, shape, (img, img), patches)
        assert window == (1, 1), name
        assert corners.shape == (patches[0] * patches[1], 2)
        assert int(corners[:, 0].max()) == shape[0] - 1 and int(corners[:, 1].max()) == shape[1] - 1
        Y = reference_label_init(shape, grid, list(range(n)), n)
        labels = reference_labels(Y, corners, window)
        assert torch.allclose(labels.sum(1), torch.ones(len(labels)))
        assert torch.equal(labels, Y[corners[:, 0], corners[:, 1]])  # 1x1: the cell itself, no pooling


def test_reference_labels_pool_a_larger_window_and_carry_gradients():
    Y = torch.rand(4, 5, 3, requires_grad=True)
    labels = reference_labels(Y, torch.tensor([[0, 0], [2, 3]]), (2, 2))
    want = Y[0:2, 0:2].sum((0, 1))
    assert torch.allclose(labels[0], want / want.sum())
    labels[:, 0].sum().backward()
    assert Y.grad[0:2, 0:2].abs().sum() > 0 and Y.grad[0:2, 0:2].abs().sum() > 0 and Y.grad[3, 0].abs().sum() == 0


def test_poster_set_with_the_reference_layout():
    poster = torch.randn(3, 303, 303)
    order = list(range(100))
    ps = PosterSet(poster, (32, 32), (10, 10), (20, 20), order, 100, labels="poddl_learned", label_layout="reference")
    assert ps.Y.shape == (10, 9, 100) and ps.num_items == 400
    b = ps.sample(torch.arange(0, 400, 37))
    assert b.y.shape == (11, 100) and torch.allclose(b.y.sum(1), torch.ones(11))
    b.y[:, 3].sum().backward()
    assert ps.Y.grad is not None and ps.Y.grad.abs().sum() > 0
    assert ps.file_extra()["label_layout"] == "reference"
    pooled = PosterSet(poster, (32, 32), (10, 10), (20, 20), order, 100, labels="poddl_learned")
    assert pooled.Y.shape == (10, 10, 100)
