"""Initial poster contents (model space) for PoDD.

  * noise       N(0, 1) on every pixel: the PoDD paper's initialisation (§4.1, Alg. 1 line 1).
  * reference   what the reference code runs (AsafShul/PoDD src/base.py): n class areas of one image size,
                drawn as RaT-BPTT's `init_gaussian` (class means N(0, I), samples mean + (min pairwise
                distance / 4)·N(0, I)), each projected to unit L2 norm (≈ 1/√(C·h·w) ≈ 0.018 per pixel on
                CIFAR), placed at rounded-linspace corners of the o_y × o_x grid and cross-faded linearly where
                neighbours overlap. As there, the areas are placed in dataset order (they are random, so the
                class of an area carries no meaning); a gap between areas (posters above ~1 IPC) stays 0.
  * unit_noise  N(0, σ²) with σ = 1/√(C·h·w), so an h × w patch has unit L2 norm on average: the scale
                RaT-BPTT gives its pixel images ("N(0,1) projected to the unit ball").
  * gaussian    a per-class Gaussian: each class cell gets the per-pixel mean + std·ε of its class's real
                images (model space, resized to the cell), with ε ~ N(0, 1) one poster-wide draw.
  * real        each class cell shows one random real image of its class, resized to the cell.
For gaussian and real the class cells are blended across their borders (`blend_cells`), so a patch that
straddles two cells starts as a mix of both classes instead of a hard seam.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .poster_layout import cell_index

POSTER_INITS = ("noise", "reference", "unit_noise", "gaussian", "real")


def cell_bounds(side: int, cells: int) -> list[tuple[int, int]]:
    """[start, stop) of each grid cell along one poster axis (same nearest-neighbour map as the labels)."""
    idx = cell_index(side, cells)
    bounds = []
    for k in range(cells):
        where = torch.nonzero(idx == k).flatten()
        if where.numel() == 0:
            raise ConfigError(f"A poster side of {side} pixels cannot hold {cells} class cells.")
        bounds.append((int(where[0]), int(where[-1]) + 1))
    return bounds


def _ramp(side: int, start: int, stop: int, margin: int) -> torch.Tensor:
    """[side] weight of one cell along one axis: 1 inside [start, stop), falling linearly to 0 over
    `margin` pixels outside it (so at a border the two neighbours weigh about the same)."""
    pos = torch.arange(side, dtype=torch.float32)
    dist = torch.clamp(start - pos, min=0) + torch.clamp(pos - (stop - 1), min=0)  # pixels outside the cell
    return torch.clamp(1.0 - dist / (margin + 1), min=0.0)


def blend_cells(per_class: torch.Tensor, poster_hw: tuple[int, int], class_grid: tuple[int, int],
                order: list[int], margin: int) -> torch.Tensor:
    """Paint class pictures onto the poster with soft borders.

    per_class: [n, C, h, w] one picture per class (model space); cell k (row-major) shows
    per_class[order[k]] resized to the cell grown by `margin` pixels on each side. Returns [C, Hp, Wp]:
    Σ_k w_k · picture_k / Σ_k w_k with the separable ramps of `_ramp`."""
    hp, wp = poster_hw
    rows, cols = cell_bounds(hp, class_grid[0]), cell_bounds(wp, class_grid[1])
    c = per_class.shape[1]
    acc = torch.zeros(c, hp, wp, dtype=per_class.dtype)
    wsum = torch.zeros(1, hp, wp, dtype=per_class.dtype)
    for k, cls in enumerate(order):
        (y0, y1), (x0, x1) = rows[k // class_grid[1]], cols[k % class_grid[1]]
        # The picture covers the grown cell [y0-m, y1+m) x [x0-m, x1+m); crop what lies off the poster.
        big = F.interpolate(per_class[cls][None], size=(y1 - y0 + 2 * margin, x1 - x0 + 2 * margin),
                            mode="bilinear", align_corners=False)[0]
        ya, yb, xa, xb = max(0, y0 - margin), min(hp, y1 + margin), max(0, x0 - margin), min(wp, x1 + margin)
        w = (_ramp(hp, y0, y1, margin)[:, None] * _ramp(wp, x0, x1, margin)[None, :]).to(acc.dtype)
        part = big[:, ya - (y0 - margin): yb - (y0 - margin), xa - (x0 - margin): xb - (x0 - margin)]
        acc[:, ya:yb, xa:xb] += w[ya:yb, xa:xb] * part
        wsum[:, ya:yb, xa:xb] += w[ya:yb, xa:xb]
    return acc / wsum  # every pixel lies in some cell, so wsum >= 1


def class_stats(real, preprocess, max_per_class: int = 500, gen: torch.Generator | None = None):
    """Per-class per-pixel mean and std in model space: two [n, C, h, w] tensors (≤ max_per_class
    images per class, chosen at random, keep the cost bounded on big datasets)."""
    means, stds = [], []
    for c in range(real.num_classes):
        idx = real.indices_of_class(c)
        idx = idx[torch.randperm(len(idx), generator=gen)[:max_per_class]]
        x = preprocess(real.train_x[idx])
        means.append(x.mean(0))
        stds.append(x.std(0) if len(idx) > 1 else torch.ones_like(x[0]))
    return torch.stack(means), torch.stack(stds)


def init_poster(init: str, real, preprocess, poster_hw: tuple[int, int], class_grid: tuple[int, int],
                order: list[int], gen: torch.Generator) -> torch.Tensor:
    """[C, Hp, Wp] float32 initial poster in model space (see module doc)."""
    c, h, w = real.image_shape
    hp, wp = poster_hw
    margin = max(1, min(h, w) // 4)  # blend over a quarter image on each side of a border
    if init == "noise":
        return torch.randn(c, hp, wp, generator=gen)
    if init == "reference":
        return reference_poster(c, (h, w), poster_hw, class_grid, gen)
    if init == "unit_noise":
        return torch.randn(c, hp, wp, generator=gen) / (c * h * w) ** 0.5
    if init == "gaussian":
        mean, std = class_stats(real, preprocess, gen=gen)
        eps = torch.randn(c, hp, wp, generator=gen)
        return blend_cells(mean, poster_hw, class_grid, order, margin) + \
            blend_cells(std, poster_hw, class_grid, order, margin) * eps
    if init == "real":
        picks = []
        for k in range(real.num_classes):
            idx = real.indices_of_class(k)
            if len(idx) == 0:
                raise ConfigError(f"class {k} ({real.class_names[k]!r}) has no training image to initialise from.")
            picks.append(idx[torch.randint(len(idx), (1,), generator=gen)])
        return blend_cells(preprocess(real.train_x[torch.cat(picks)]), poster_hw, class_grid, order, margin)
    raise ConfigError(f"`synset.init={init}` is not a poster initialisation; use one of {', '.join(POSTER_INITS)}.")


# ---- the reference code's initialisation (init=reference) ---------------------------------------------
def unit_gaussian_areas(n: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """[n, dim]: per-class Gaussian samples (class means N(0, I), spread = min distance between means / 4),
    each scaled to unit L2 norm."""
    means = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    spread = torch.cdist(means, means).masked_fill(torch.eye(n, dtype=torch.bool), float("inf")).min()
    areas = means + spread / 4 * torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return (areas / areas.norm(dim=1, keepdim=True)).float()


def fade_weights(side: int, area: int, cells: int) -> torch.Tensor:
    """[cells, side]: weight of each area along one poster axis. Area k covers [a_k, a_k + area) with
    a_k = round(linspace(0, side − area, cells)); where it overlaps its right neighbour by o pixels its
    weight falls as 1 − linspace(0, 1, o) and the neighbour's rises as the complement."""
    starts = np.linspace(0, side - area, cells).round().astype(int)
    w = torch.zeros(cells, side)
    for k, a in enumerate(starts):
        w[k, a:a + area] = 1.0
    for k in range(cells - 1):
        lo, hi = int(starts[k + 1]), int(starts[k]) + area  # the overlap [lo, hi)
        if hi > lo:
            fade = 1.0 - torch.linspace(0, 1, hi - lo)
            w[k, lo:hi], w[k + 1, lo:hi] = fade, 1.0 - fade
    return w


def reference_poster(channels: int, area_hw: tuple[int, int], poster_hw: tuple[int, int],
                     class_grid: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """[C, Hp, Wp] poster of unit-norm class areas, cross-faded (see module doc, init=reference)."""
    (h, w), (hp, wp), (o_y, o_x) = area_hw, poster_hw, class_grid
    areas = unit_gaussian_areas(o_y * o_x, channels * h * w, gen).reshape(o_y, o_x, channels, h, w)
    wy, wx = fade_weights(hp, h, o_y), fade_weights(wp, w, o_x)
    ys = np.linspace(0, hp - h, o_y).round().astype(int)
    xs = np.linspace(0, wp - w, o_x).round().astype(int)
    poster = torch.zeros(channels, hp, wp)
    for r in range(o_y):
        for c in range(o_x):
            y0, x0 = int(ys[r]), int(xs[c])
            weight = wy[r, y0:y0 + h, None] * wx[c, None, x0:x0 + w]  # [h, w]
            poster[:, y0:y0 + h, x0:x0 + w] += weight * areas[r, c]
    return poster
