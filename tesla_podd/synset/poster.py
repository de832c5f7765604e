"""PosterSet (PoDD, ALGORITHMS.md §7): one learnable poster [C, Hp, Wp] and a fixed grid of patches.

The algorithms see `num_items` = p_y·p_x overlapping h × w patches; `sample(idx)` crops them with one
index_select, so the gradients of pixels shared by several patches add up on the poster. Labels per
patch come from the class grid (PoDDL): `poddl_fixed` (window majority, ties uniform), `poddl_learned`
(a learnable [o_y, o_x, n] grid Y pooled over each window, Y ≥ 0 after every step) or `hard` (argmax of
the fixed labels; ties go to the smallest class id)."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from .. import atomic
from ..errors import ConfigError, check_choice
from .base import Batch
from .poster_init import POSTER_INITS, cell_bounds, init_poster
from .poster_labels import fixed_labels, learned_label_init, learned_labels
from .poster_layout import (
    class_grid_map,
    default_class_grid,
    default_patch_grid,
    effective_ipc,
    extract_patches,
    patch_corners,
    poster_size,
    window_index,
)

LABELS = ("poddl_fixed", "poddl_learned", "hard")


def poster_to_pixels(poster: torch.Tensor, preprocess, image_hw: tuple[int, int]) -> torch.Tensor:
    """[C, Hp, Wp] model space -> [0, 1] pixels for pictures.

    A ZCA acts on whole h × w images, so the poster is de-whitened tile by tile (the fewest h × w windows
    that cover it, overlaps averaged); KIP-whitened pixels are then stretched to [0, 1] over the whole
    poster at once (one stretch per tile would show the tiles)."""
    x = poster.detach().float().cpu()
    if preprocess.zca is None:  # per-channel mean/std: works at any size
        return preprocess.to_pixels(x[None])[0]
    hp, wp = x.shape[1:]
    tiles = [max(1, -(-side // img)) for side, img in zip((hp, wp), image_hw)]  # ceil(side / img)
    corners = patch_corners((hp, wp), image_hw, tiles)
    patches = preprocess.zca.inverse(extract_patches(x, corners, image_hw))  # [T, C, h, w] pixel space
    idx = window_index(wp, corners, image_hw)
    c = x.shape[0]
    total = torch.zeros(c, hp * wp).index_add_(1, idx, patches.transpose(0, 1).reshape(c, -1))
    count = torch.zeros(hp * wp).index_add_(0, idx, torch.ones(idx.numel()))
    out = (total / count).reshape(c, hp, wp)
    if preprocess.zca.kind == "kip":  # per-image normalisation is not invertible: stretch
        return (out - out.min()) / (out.max() - out.min()).clamp_min(1e-8)
    return out.clamp(0, 1)


class PosterSet:
    def __init__(self, poster: torch.Tensor, image_hw: tuple[int, int], class_grid: tuple[int, int],
                 patch_grid: tuple[int, int], order: list[int], num_classes: int, labels: str = "poddl_fixed"):
        check_choice("synset.labels", labels, LABELS)
        self.poster = poster.detach().clone().requires_grad_(True)  # [C, Hp, Wp], model space
        self.image_hw = tuple(int(s) for s in image_hw)
        self.poster_hw = tuple(int(s) for s in poster.shape[1:])
        self.class_grid = tuple(int(s) for s in class_grid)
        self.patch_grid = tuple(int(s) for s in patch_grid)
        self.order = [int(c) for c in order]
        self.num_classes = int(num_classes)
        self.labels_mode = labels
        self.corners = patch_corners(self.poster_hw, self.image_hw, self.patch_grid).to(poster.device)  # [P, 2]
        self.num_items = int(self.corners.shape[0])
        self.class_map = class_grid_map(self.poster_hw, self.class_grid, self.order)  # [Hp, Wp] class ids
        fixed = fixed_labels(self.class_map, self.corners.cpu(), self.image_hw, self.num_classes)
        dtype, dev = poster.dtype, poster.device
        self.Y = None  # learned label grid [o_y, o_x, n]
        if labels == "poddl_learned":
            init = learned_label_init(self.class_grid, self.order, self.num_classes)
            self.Y = init.to(dev, dtype).requires_grad_(True)
            self.fixed = None
        elif labels == "hard":
            self.fixed = fixed.argmax(dim=1).to(dev)  # int64 [P]
        else:
            self.fixed = fixed.to(dev, dtype)  # [P, n] rows sum to 1

    @classmethod
    def build(cls, real, preprocess, s, ipc, order_fn, gen: torch.Generator, device) -> PosterSet:
        """From a `synset` config node `s`; `order_fn(class_grid) -> order` runs PoCO or natural order."""
        check_choice("synset.init", s.init, POSTER_INITS)
        c, h, w = real.image_shape
        n = real.num_classes
        if (s.class_num_y is None) != (s.class_num_x is None):
            raise ConfigError("Set both `synset.class_num_y` and `synset.class_num_x`, or neither (default grid).")
        grid = (int(s.class_num_y), int(s.class_num_x)) if s.class_num_y is not None else default_class_grid(n)
        if grid[0] * grid[1] != n:
            raise ConfigError(f"Class grid {grid[0]}x{grid[1]} (`synset.class_num_y/x`) has {grid[0] * grid[1]} "
                              f"cells but the dataset has {n} classes.")
        if (s.poster_height is None) != (s.poster_width is None):
            raise ConfigError("Set both `synset.poster_height` and `synset.poster_width`, or neither (from ipc).")
        if s.poster_height is not None:
            hw = (int(s.poster_height), int(s.poster_width))
            if hw[0] < h or hw[1] < w:
                raise ConfigError(f"Poster {hw[0]}x{hw[1]} is smaller than one {h}x{w} image.")
        else:
            hw = poster_size(float(ipc), n, (h, w), grid)
        if (s.patch_num_y is None) != (s.patch_num_x is None):
            raise ConfigError("Set both `synset.patch_num_y` and `synset.patch_num_x`, or neither (default).")
        patches = (int(s.patch_num_y), int(s.patch_num_x)) if s.patch_num_y is not None else \
            default_patch_grid(hw, (h, w), grid)
        order = order_fn(grid)
        poster = init_poster(str(s.init), real, preprocess, hw, grid, order, gen)
        return cls(poster.to(device), (h, w), grid, patches, order, n, str(s.labels))

    # ---- the SyntheticSet protocol ----
    def labels_of(self, idx: torch.Tensor) -> torch.Tensor:
        if self.Y is not None:  # differentiable in Y
            return learned_labels(self.Y, self.poster_hw, self.corners[idx], self.image_hw)
        return self.fixed[idx]

    def param_groups(self) -> dict[str, list[torch.Tensor]]:
        groups = {"images": [self.poster]}
        if self.Y is not None:
            groups["labels"] = [self.Y]
        return groups

    def sample(self, idx: torch.Tensor) -> Batch:
        idx = torch.as_tensor(idx, device=self.corners.device).long()
        return Batch(extract_patches(self.poster, self.corners[idx], self.image_hw), self.labels_of(idx))

    def materialize(self) -> Batch:
        with torch.no_grad():
            b = self.sample(torch.arange(self.num_items))
        return Batch(b.x.detach().clone(), b.y.detach().clone())

    def preview(self) -> torch.Tensor:
        return self.poster.detach()[None]

    def project_(self) -> None:
        if self.Y is not None:
            with torch.no_grad():
                self.Y.clamp_(min=0)

    def state_dict(self) -> dict:
        state = {"poster": self.poster.detach().cpu()}
        if self.Y is not None:
            state["label_grid"] = self.Y.detach().cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.poster.copy_(state["poster"])
            if self.Y is not None:
                self.Y.copy_(state["label_grid"])

    # ---- optional hooks of the distill stage ----
    @property
    def effective_ipc(self) -> float:
        return effective_ipc(self.poster_hw, self.num_classes, self.image_hw)

    def file_extra(self) -> dict:
        """Saved in synset.pt `extra`: enough to rebuild the poster, its patches and labels."""
        extra = {"poster": self.poster.detach().cpu(), "corners": self.corners.cpu(),
                 "poster_hw": list(self.poster_hw), "image_hw": list(self.image_hw),
                 "class_grid": list(self.class_grid), "patch_grid": list(self.patch_grid), "order": list(self.order),
                 "labels": self.labels_mode, "num_patches": self.num_items, "effective_ipc": self.effective_ipc}
        if self.Y is not None:
            extra["label_grid"] = self.Y.detach().cpu()
        return extra

    def save_picture(self, path: str | Path, preprocess, class_names=None) -> Path:
        """The de-whitened poster as a PNG with the class-cell borders drawn (and class names, if given)."""
        from PIL import Image, ImageDraw

        pixels = poster_to_pixels(self.poster, preprocess, self.image_hw)  # [C, Hp, Wp] in [0, 1]
        if pixels.shape[0] == 1:
            pixels = pixels.expand(3, -1, -1)
        hp, wp = self.poster_hw
        scale = max(1, min(8, 640 // max(hp, wp)))  # small posters are upscaled (nearest) to stay visible
        arr = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        img = Image.fromarray(arr).resize((wp * scale, hp * scale), Image.NEAREST)
        draw = ImageDraw.Draw(img)
        rows, cols = cell_bounds(hp, self.class_grid[0]), cell_bounds(wp, self.class_grid[1])
        for y0, _ in rows[1:]:  # one thin line at each inner cell border
            draw.line([(0, y0 * scale), (wp * scale, y0 * scale)], fill=(255, 255, 255), width=1)
        for x0, _ in cols[1:]:
            draw.line([(x0 * scale, 0), (x0 * scale, hp * scale)], fill=(255, 255, 255), width=1)
        if class_names:
            for k, cls in enumerate(self.order):
                (y0, _), (x0, x1) = rows[k // self.class_grid[1]], cols[k % self.class_grid[1]]
                name = str(class_names[cls])[: max(1, (x1 - x0) * scale // 6)]  # ~6 px per glyph
                draw.text((x0 * scale + 2, y0 * scale + 1), name, fill=(255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return atomic.write_bytes(buf.getvalue(), path)
