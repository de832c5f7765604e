"""PosterSet (PoDD, ALGORITHMS.md §7): one learnable poster [C, Hp, Wp] and a fixed grid of patches.

The algorithms see `num_items` = p_y·p_x overlapping h × w patches; `sample(idx)` crops them with one
index_select, so the gradients of pixels shared by several patches add up on the poster. Labels per
patch come from the class grid (PoDDL): `poddl_fixed` (window majority, ties uniform), `poddl_learned`
(a learnable label array Y, Y ≥ 0 after every step; `label_layout` pooled: the paper's [o_y, o_x, n] grid
pooled over each window; reference: the reference code's budget-sized array read through a 1×1 window, see
poster_labels.py) or `hard` (argmax of the fixed labels; ties go to the smallest class id)."""

from __future__ import annotations

import torch

from ..errors import ConfigError, check_choice
from .base import Batch
from .poster_init import POSTER_INITS, init_poster
from .poster_labels import (
    fixed_labels,
    learned_label_init,
    learned_labels,
    reference_label_init,
    reference_label_shape,
    reference_label_windows,
    reference_labels,
)
from .poster_layout import (
    class_grid_map,
    default_class_grid,
    default_patch_grid,
    effective_ipc,
    extract_patches,
    patch_corners,
    poster_size,
)

LABELS = ("poddl_fixed", "poddl_learned", "hard")
LABEL_LAYOUTS = ("pooled", "reference")


class PosterSet:
    def __init__(self, poster: torch.Tensor, image_hw: tuple[int, int], class_grid: tuple[int, int],
                 patch_grid: tuple[int, int], order: list[int], num_classes: int, labels: str = "poddl_fixed",
                 label_layout: str = "pooled"):
        check_choice("synset.labels", labels, LABELS)
        check_choice("synset.label_layout", label_layout, LABEL_LAYOUTS)
        self.label_layout = label_layout
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
        self.label_window, self.label_corners = None, None  # reference layout: window size, [P, 2] corners
        if labels == "poddl_learned" and label_layout == "reference":
            label_hw = reference_label_shape(self.poster_hw, self.num_classes)
            init = reference_label_init(label_hw, self.class_grid, self.order, self.num_classes)
            self.label_window, label_corners = reference_label_windows(self.poster_hw, label_hw, self.image_hw,
                                                                       self.patch_grid)
            self.label_corners = label_corners.to(dev)
            self.Y = init.to(dev, dtype).requires_grad_(True)
            self.fixed = None
        elif labels == "poddl_learned":
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
        return cls(poster.to(device), (h, w), grid, patches, order, n, str(s.labels), str(s.label_layout))

    # ---- the SyntheticSet protocol ----
    def labels_of(self, idx: torch.Tensor) -> torch.Tensor:
        if self.label_corners is not None:  # reference layout, differentiable in Y
            return reference_labels(self.Y, self.label_corners[idx], self.label_window)
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
        extra = {"poster": self.poster.detach().cpu().clone(), "corners": self.corners.cpu(),
                 "poster_hw": list(self.poster_hw), "image_hw": list(self.image_hw),
                 "class_grid": list(self.class_grid), "patch_grid": list(self.patch_grid), "order": list(self.order),
                 "labels": self.labels_mode, "label_layout": self.label_layout, "num_patches": self.num_items,
                 "effective_ipc": self.effective_ipc}
        if self.Y is not None:
            extra["label_grid"] = self.Y.detach().cpu().clone()
        return extra
