"""Poster geometry for PoDD: poster size from an IPC budget, class grid, patch corners, patch crops.

Conventions (all sizes in pixels, all pairs in (y, x) = (rows, cols) order):
  * `image_hw` = (h, w): size of one source image, e.g. (32, 32).
  * `class_grid` = (o_y, o_x): classes stacked vertically × horizontally on the poster. The PoDD README
    writes grids and posters as x × y (W × H): its CIFAR-10 "5×2" grid with a "153×60" poster is our
    class_grid (2, 5) and poster_hw (60, 153), i.e. a wide poster, 2 rows of 5 classes.
  * `patch_grid` = (p_y, p_x): number of overlapping h × w windows per column / row.
  * corners are top-left (y, x) of each window, row-major (all x for y=0 first).
Only pure functions here: the learnable poster lives in the PosterSet built on top of them.
"""

from __future__ import annotations

import math

import torch

from tesla_podd.errors import ConfigError

# Posters used by the PoDD reference runs at 0.9 IPC (README), keyed by (num_classes, image_hw, class_grid).
# No single rounding rule reproduces all four (they look hand-tuned: the Tiny one is not even maximal),
# so `poster_size` returns these exactly at IPC 0.9 and applies the rule below everywhere else.
REFERENCE_IPC = 0.9
REFERENCE_POSTERS: dict[tuple[int, tuple[int, int], tuple[int, int]], tuple[int, int]] = {
    (10, (32, 32), (2, 5)): (60, 153),  # CIFAR-10 (the rule gives this too)
    (100, (32, 32), (10, 10)): (303, 303),  # CIFAR-100 (rule: 303 x 304)
    (200, (32, 32), (10, 20)): (302, 610),  # CUB-200 at 32² (rule: 303 x 608)
    (200, (64, 64), (10, 20)): (608, 1211),  # Tiny-ImageNet (rule: 607 x 1214)
}
# Reference patch counts (p_y, p_x); the README writes them x × y (16×6, 20×20, 60×30, 40×20).
REFERENCE_PATCH_GRIDS: dict[tuple[int, tuple[int, int], tuple[int, int]], tuple[int, int]] = {
    (10, (32, 32), (2, 5)): (6, 16),
    (100, (32, 32), (10, 10)): (20, 20),
    (200, (32, 32), (10, 20)): (30, 60),
    (200, (64, 64), (10, 20)): (20, 40),
}
_EPS = 1e-9  # absorbs float error in IPC·n·h·w (e.g. 0.3·10·1024) before flooring


def pixel_budget(ipc: float, num_classes: int, image_hw: tuple[int, int]) -> float:
    """Poster pixels allowed by an IPC budget: IPC × classes × h × w."""
    return ipc * num_classes * image_hw[0] * image_hw[1]


def poster_size(
    ipc: float,
    num_classes: int,
    image_hw: tuple[int, int],
    class_grid: tuple[int, int],
    use_reference: bool = True,
) -> tuple[int, int]:
    """(poster_h, poster_w) for an IPC budget.

    Rule: H = floor(√IPC · o_y · h), then W = floor(budget / H), budget = IPC · n · h · w. So H is the
    ideal height rounded down and W takes whatever width the budget still allows (W ≥ the ideal
    √IPC · o_x · w), which keeps H·W ≤ budget and as close to it as the integer height permits.
    At IPC 0.9 on the four reference layouts the README's sizes are returned instead (`use_reference`).
    """
    o_y, o_x = class_grid
    h, w = image_hw
    if o_y * o_x != num_classes:
        raise ConfigError(
            f"class_grid {class_grid} has {o_y * o_x} cells but there are {num_classes} classes."
        )
    if ipc <= 0:
        raise ConfigError(f"Poster IPC must be positive, got {ipc!r}.")
    key = (num_classes, tuple(image_hw), tuple(class_grid))
    if use_reference and abs(ipc - REFERENCE_IPC) < 1e-9 and key in REFERENCE_POSTERS:
        return REFERENCE_POSTERS[key]
    budget = pixel_budget(ipc, num_classes, image_hw)
    ph = math.floor(math.sqrt(ipc) * o_y * h + _EPS)
    pw = math.floor(budget / ph + _EPS) if ph > 0 else 0
    if ph < h or pw < w:
        raise ConfigError(
            f"A poster for IPC {ipc} with class grid {class_grid} would be {ph}x{pw} pixels, smaller than "
            f"one {h}x{w} image; raise the IPC or use a grid with more classes along the short side."
        )
    return ph, pw


def effective_ipc(poster_hw: tuple[int, int], num_classes: int, image_hw: tuple[int, int]) -> float:
    """Poster pixels ÷ (classes · h · w): the IPC a poster actually spends."""
    return poster_hw[0] * poster_hw[1] / (num_classes * image_hw[0] * image_hw[1])


def default_class_grid(num_classes: int) -> tuple[int, int]:
    """(o_y, o_x): the reference grids (10 → 2×5, 100 → 10×10, 200 → 10×20) are exactly the most
    square factorisation with o_y ≤ o_x, so that rule is used for every class count."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}.")
    o_y = max(d for d in range(1, math.isqrt(num_classes) + 1) if num_classes % d == 0)
    return o_y, num_classes // o_y


def default_patch_grid(
    poster_hw: tuple[int, int], image_hw: tuple[int, int], class_grid: tuple[int, int]
) -> tuple[int, int]:
    """(p_y, p_x) when the config gives none.

    The reference layouts (matched by class count, image size and grid) use the README counts at every
    IPC, as the paper does. Otherwise: two windows per class cell along each axis (stride ≈ half a cell,
    close to the reference's 2–3), at least enough to cover every pixel. Always capped at the number of
    distinct offsets (side − img + 1) so small posters get no duplicate windows.
    """
    num_classes = class_grid[0] * class_grid[1]
    key = (num_classes, tuple(image_hw), tuple(class_grid))
    wanted = REFERENCE_PATCH_GRIDS.get(key)
    if wanted is None:
        wanted = tuple(
            max(2 * cells, math.ceil(side / img)) for side, img, cells in zip(poster_hw, image_hw, class_grid)
        )
    return tuple(max(1, min(p, side - img + 1)) for p, side, img in zip(wanted, poster_hw, image_hw))


def patch_corners(
    poster_hw: tuple[int, int], image_hw: tuple[int, int], patch_grid: tuple[int, int]
) -> torch.Tensor:
    """LongTensor [p_y·p_x, 2] of window top-left (y, x), row-major.

    Along each axis: linspace(0, side − img, p) rounded (torch.round: half to even), so the first window
    touches the top/left edge, the last the bottom/right edge, and the stride is regular up to rounding.
    """
    axes = []
    for side, img, p in zip(poster_hw, image_hw, patch_grid):
        if side < img:
            raise ConfigError(f"Poster side {side} is smaller than the image side {img}.")
        if p < 1:
            raise ConfigError(f"Patch grid {patch_grid} must be positive.")
        axes.append(torch.linspace(0, side - img, int(p), dtype=torch.float64).round().long())
    ys, xs = torch.meshgrid(axes[0], axes[1], indexing="ij")
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)


def window_index(poster_w: int, corners: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[P·h·w] indices into a row-major flattened poster plane, window by window (each row-major)."""
    h, w = hw
    corners = corners.long()
    dy = torch.arange(h, device=corners.device)
    dx = torch.arange(w, device=corners.device)
    rows = corners[:, 0, None, None] + dy[None, :, None]  # [P, h, 1]
    cols = corners[:, 1, None, None] + dx[None, None, :]  # [P, 1, w]
    return (rows * poster_w + cols).reshape(-1)


def extract_patches(poster: torch.Tensor, corners: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[P, C, h, w] crops of a [C, Hp, Wp] poster at `corners` (any subset, e.g. corners[idx]).

    One index_select over the flattened poster: no Python loop per patch, and autograd's backward
    (index_add) sums the gradients of pixels shared by overlapping windows onto the poster.
    """
    c, _, pw = poster.shape
    idx = window_index(pw, corners.to(poster.device), hw)
    flat = poster.reshape(c, -1).index_select(1, idx)  # [C, P·h·w]
    return flat.reshape(c, -1, hw[0], hw[1]).transpose(0, 1)


def coverage(poster_hw: tuple[int, int], corners: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """float32 [Hp, Wp]: how many windows cover each poster pixel (0 = pixel never trained)."""
    idx = window_index(poster_hw[1], corners, hw)
    cov = torch.zeros(poster_hw[0] * poster_hw[1], dtype=torch.float32, device=idx.device)
    cov.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
    return cov.reshape(poster_hw)


def cell_index(side: int, cells: int, device=None) -> torch.Tensor:
    """LongTensor [side]: the class-grid cell of each poster row/column under nearest upsampling.

    Taken from F.interpolate(mode="nearest") itself, so it is bit-for-bit what upsampling the grid with
    torch gives, float32 rounding included: e.g. for 20 cells over 610 columns pixel 61 (exactly on a
    cell border, 61·20/610 = 2) lands in cell 1, not 2. Shared by the class map and the learned labels.
    """
    ramp = torch.arange(cells, dtype=torch.float32, device=device).reshape(1, 1, cells)
    return torch.nn.functional.interpolate(ramp, size=side, mode="nearest").reshape(side).long()


def class_grid_map(poster_hw: tuple[int, int], class_grid: tuple[int, int], order: list[int]) -> torch.Tensor:
    """LongTensor [Hp, Wp]: class id at each poster pixel; order[k] = class of grid cell k (row-major)."""
    o_y, o_x = class_grid
    if len(order) != o_y * o_x:
        raise ConfigError(
            f"Class order has {len(order)} entries but the grid {class_grid} has {o_y * o_x} cells."
        )
    grid = torch.as_tensor(order, dtype=torch.long).reshape(o_y, o_x)
    return grid[cell_index(poster_hw[0], o_y)][:, cell_index(poster_hw[1], o_x)]
