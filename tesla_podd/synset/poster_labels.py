"""PoDDL: soft labels for poster patches, fixed (window majority) or learned.

Learned labels come in two layouts (`synset.label_layout`):
  * pooled     the paper's formula (§4.3): a grid Y [o_y, o_x, n] (one cell per class), each patch's label
               the area-weighted mean of the cells under its h × w window, L1-normalised.
  * reference  what the reference code (AsafShul/PoDD src/PoDDL.py, used from src/base.py) runs: a label array
               Y [L_y, L_x, n] whose size comes from the budget n·comp_ipc (`reference_label_shape`, an exact
               fit excluded, so CIFAR-100 gets 10×9, CUB 9×21, Tiny 10×19), one-hot class blocks split by
               rounded linspace (one class column/row can get zero width: that class has no cell at init),
               and per patch a label window of floor(h·L_y/H_p) × floor(w·L_x/W_p) cells (at least 1: 1×1 on
               all four datasets) at linspace-rounded positions, summed and L1-normalised.
Fixed labels read the class grid upsampled to the poster with nearest neighbour (`poster_layout.cell_index`).
Windows are given by top-left corners [P, 2] (y, x) and the image size hw = (h, w)."""

from __future__ import annotations

import math

import numpy as np
import torch

from tesla_podd.synset.poster_layout import cell_index, window_index


def fixed_labels(
    class_map: torch.Tensor, corners: torch.Tensor, hw: tuple[int, int], num_classes: int
) -> torch.Tensor:
    """float32 [P, n]: one-hot of each window's majority class; ties → uniform over the tied classes.

    Counts come from a scatter-add of the window's pixel class ids ([P, h·w] ids, no [n, Hp, Wp]
    one-hot, which would be ~600 MB for Tiny-ImageNet)."""
    hp, wp = class_map.shape
    ids = class_map.reshape(-1)[window_index(wp, corners.to(class_map.device), hw)]
    ids = ids.reshape(corners.shape[0], -1)  # [P, h·w]
    counts = torch.zeros(ids.shape[0], num_classes, dtype=torch.float32, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float32))
    top = (counts == counts.max(dim=1, keepdim=True).values).float()  # 1 on every tied majority class
    return top / top.sum(dim=1, keepdim=True)


def learned_label_init(class_grid: tuple[int, int], order: list[int], num_classes: int) -> torch.Tensor:
    """float32 [o_y, o_x, n]: one-hot of the class placed in each grid cell (order is row-major)."""
    o_y, o_x = class_grid
    cls = torch.as_tensor(order, dtype=torch.long).reshape(o_y, o_x)
    return torch.nn.functional.one_hot(cls, num_classes).float()


def _cell_overlap(side: int, cells: int, starts: torch.Tensor, length: int) -> torch.Tensor:
    """[P, cells]: pixels of window [start, start+length) that fall in each grid cell along one axis.

    1-D integral image: cumulative one-hot of the row→cell map, differenced at the window ends."""
    onehot = torch.nn.functional.one_hot(
        cell_index(side, cells, starts.device), cells
    ).float()  # [side, cells]
    cum = torch.cat([onehot.new_zeros(1, cells), onehot.cumsum(0)])  # [side+1, cells]
    return cum[starts + length] - cum[starts]


def learned_labels(
    Y: torch.Tensor, poster_hw: tuple[int, int], corners: torch.Tensor, hw: tuple[int, int]
) -> torch.Tensor:
    """[P, n] soft labels, differentiable in Y [o_y, o_x, n]; each row sums to 1.

    Equal to: upsample Y (nearest) to [Hp, Wp, n], average-pool each h × w window, L1-normalise. Since
    the upsampled Y is constant on each grid cell, the window sum is Σ_cells Y[cell] · overlap(cell);
    the overlap area factorises into rows × columns, so no poster-sized label tensor is built.
    The caller clamps Y ≥ 0 after each optimiser step; a window whose Y is all zero gets a zero row.
    """
    o_y, o_x, _ = Y.shape
    corners = corners.to(Y.device).long()
    ay = _cell_overlap(poster_hw[0], o_y, corners[:, 0], hw[0]).to(Y.dtype)  # [P, o_y]
    ax = _cell_overlap(poster_hw[1], o_x, corners[:, 1], hw[1]).to(Y.dtype)  # [P, o_x]
    pooled = torch.einsum("py,px,yxn->pn", ay, ax, Y) / (hw[0] * hw[1])  # window means
    return pooled / pooled.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)


# ---- the reference code's layout (label_layout=reference) ---------------------------------------------
def reference_label_shape(poster_hw: tuple[int, int], num_classes: int, comp_ipc: int = 1) -> tuple[int, int]:
    """(L_y, L_x) of the reference label array: the poster scaled to about n·comp_ipc cells, each side rounded
    up or down; of the four roundings the one with the fewest cells short of the budget wins, and a product
    equal to (or above) the budget never does (the reference's key maps budget − prod ≤ 0 to infinity).
    Ties keep the first of (ceil, ceil), (ceil, floor), (floor, ceil), (floor, floor)."""
    budget = int(num_classes) * int(comp_ipc)
    shrink = 1 / math.sqrt((poster_hw[0] * poster_hw[1]) / budget)
    sy, sx = poster_hw[0] * shrink, poster_hw[1] * shrink
    candidates = [(math.ceil(sy), math.ceil(sx)), (math.ceil(sy), math.floor(sx)),
                  (math.floor(sy), math.ceil(sx)), (math.floor(sy), math.floor(sx))]

    def shortfall(shape):
        gap = budget - shape[0] * shape[1]
        return gap if gap > 0 else math.inf

    return min(candidates, key=shortfall)


def _rounded_linspace(stop: float, num: int) -> np.ndarray:
    # numpy's linspace + round half to even, as the reference computes splits and positions
    return np.linspace(0, stop, num).round().astype(int)


def reference_label_init(label_hw: tuple[int, int], class_grid: tuple[int, int], order: list[int],
                         num_classes: int) -> torch.Tensor:
    """float32 [L_y, L_x, n]: class grid cell (r, c) (row-major `order`) owns the block between the rounded
    linspace splits of each axis and is one-hot there; a zero-width block leaves its class without a cell."""
    o_y, o_x = class_grid
    ys, xs = _rounded_linspace(label_hw[0], o_y + 1), _rounded_linspace(label_hw[1], o_x + 1)
    Y = torch.zeros(*label_hw, num_classes)
    for r in range(o_y):
        for c in range(o_x):
            Y[ys[r]:ys[r + 1], xs[c]:xs[c + 1], order[r * o_x + c]] = 1.0
    return Y


def reference_label_windows(poster_hw: tuple[int, int], label_hw: tuple[int, int], image_hw: tuple[int, int],
                            patch_grid: tuple[int, int]) -> tuple[tuple[int, int], torch.Tensor]:
    """((l_y, l_x), corners [p_y·p_x, 2]): each patch's label window in the label array, row-major like the
    patches (`poster_layout.patch_corners`). Window side floor(img · L / poster side), at least 1; corners at
    round(linspace(0, L − l, p)) on each axis."""
    win, axes = [], []
    for side, cells, img, p in zip(poster_hw, label_hw, image_hw, patch_grid):
        size = max(1, int(np.floor(img * (1 / (side / cells)))))
        win.append(size)
        axes.append(torch.as_tensor(_rounded_linspace(cells - size, int(p)), dtype=torch.long))
    ys, xs = torch.meshgrid(axes[0], axes[1], indexing="ij")
    return (win[0], win[1]), torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)


def reference_labels(Y: torch.Tensor, corners: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """[P, n] labels, differentiable in Y [L_y, L_x, n]: the sum of the window's cells, L1-normalised.
    (The reference divides by the plain sum and gets NaN for an all-zero window; we give it a zero row.)"""
    ly, lx = window
    corners = corners.to(Y.device).long()
    dy = torch.arange(ly, device=Y.device)
    dx = torch.arange(lx, device=Y.device)
    rows = (corners[:, 0, None] + dy)[:, :, None].expand(-1, ly, lx)  # [P, ly, lx]
    cols = (corners[:, 1, None] + dx)[:, None, :].expand(-1, ly, lx)
    summed = Y[rows, cols].sum(dim=(1, 2))  # [P, n]
    return summed / summed.abs().sum(dim=1, keepdim=True).clamp_min(1e-12)
