"""PoDDL: soft labels for poster patches, fixed (window majority) or learned (pooled label grid Y).

Both read the class grid upsampled to the poster with nearest neighbour (`poster_layout.cell_index`).
Windows are given by top-left corners [P, 2] (y, x) and the image size hw = (h, w)."""

from __future__ import annotations

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
