"""Differentiable Siamese Augmentation (DSA) with explicit, replayable random parameters.

`sample` draws every random number (which op, and each sample's parameters) on the CPU from the
caller's generator and returns them as an `AugParams`; `apply` is then a deterministic function of
(x, params), differentiable in x. TESLA's second pass and the exact adjoint pass rebuild a step's
gradient with the *same* augmentation, so they keep the params of pass 1 and call `apply` again.

Semantics follow the MTT/TESLA DSA (see TARGETS.md): per-sample parameters; scale/rotate go through
affine_grid/grid_sample (bilinear, zero padding, align_corners=True); crop and cutout work on
integer pixel offsets with zero fill. RaT-BPTT/PoDD run the same scale/rotate maths with
align_corners=False (their util.py), so `align_corners` is a per-algorithm option.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError, check_choice
from ..transfer import to_device_all
from .bilinear import affine_sample

Params = dict[str, torch.Tensor]


@dataclass
class AugParams:
    """The random draw of one augmentation call: (op name, per-sample CPU tensors) in apply order."""

    steps: list[tuple[str, Params]] = field(default_factory=list)

    @property
    def ops(self) -> list[str]:
        return [name for name, _ in self.steps]

    def tensors(self) -> list[torch.Tensor]:
        return [v for _, p in self.steps for v in p.values()]

    def with_tensors(self, tensors: list[torch.Tensor]) -> AugParams:
        """The same draw holding `tensors` (in the order of `tensors()`), e.g. their copies on the device."""
        it = iter(tensors)
        return AugParams([(op, {k: next(it) for k in p}) for op, p in self.steps])

    def to(self, device) -> AugParams:
        """The draw on `device` in one pinned, non-blocking copy per dtype (transfer.py), so `apply` on CUDA
        images never waits for the GPU; the values are the CPU draw's."""
        return self.with_tensors(to_device_all(self.tensors(), device))


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    # float32 on CPU regardless of torch's default dtype, so a draw never depends on global state.
    return torch.rand(n, generator=g, dtype=torch.float32) * (hi - lo) + lo


class DSA:
    OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
    MODES = ("one", "all")

    def __init__(self, strategy: str = "color_crop_cutout_flip_scale_rotate", mode: str = "one",
                 scale: float = 1.2, rotate: float = 15.0, crop: float = 0.125, cutout: float = 0.5,
                 brightness: float = 1.0, saturation: float = 2.0, contrast: float = 0.5, flip: float = 0.5,
                 align_corners: bool = True):
        ops = [op for op in str(strategy).split("_") if op]
        bad = [op for op in ops if op not in self.OPS]
        if not ops or bad:
            raise ConfigError(
                f"Config key `augment.strategy` is {strategy!r}, which is not allowed"
                + (f" (unknown op(s): {', '.join(map(repr, bad))})" if bad else " (no ops)")
                + "; join one or more of " + ", ".join(map(repr, self.OPS))
                + " with '_'. Example: `augment.strategy=color_crop_cutout_flip_scale_rotate`."
            )
        check_choice("augment.mode", mode, self.MODES)
        self.strategy, self.ops, self.mode = str(strategy), ops, mode
        # scale: max zoom factor; rotate: degrees; crop/cutout: fractions of the side;
        # brightness: width of the shift; saturation: max factor; contrast: half-width around 1.
        self.scale, self.rotate = float(scale), float(rotate)
        self.crop, self.cutout, self.flip = float(crop), float(cutout), float(flip)
        self.brightness, self.saturation = float(brightness), float(saturation)
        self.contrast = float(contrast)
        # grid convention of scale/rotate: True = MTT/TESLA DSA, False = RaT-BPTT/PoDD augmentation
        self.align_corners = bool(align_corners)

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, mode={self.mode!r})"

    # ---- sampling (CPU, caller's generator only) ----
    def sample(self, n: int, size: tuple[int, int], generator: torch.Generator) -> AugParams:
        """Draw the parameters for a batch of n images of spatial size (H, W)."""
        if self.mode == "one":  # DSA: a single op for the whole batch, uniform over the strategy
            ops = [self.ops[int(torch.randint(len(self.ops), (1,), generator=generator))]]
        else:
            ops = list(self.ops)
        return AugParams([(op, self._sample_op(op, n, size, generator)) for op in ops])

    def _sample_op(self, op: str, n: int, size: tuple[int, int], g: torch.Generator) -> Params:
        h, w = int(size[0]), int(size[1])
        if op == "color":  # brightness shift, saturation factor, contrast factor (one each per sample)
            return {"brightness": _uniform(n, -0.5, 0.5, g) * self.brightness,
                    "saturation": _uniform(n, 0.0, self.saturation, g),
                    "contrast": _uniform(n, 1.0 - self.contrast, 1.0 + self.contrast, g)}
        if op == "crop":  # integer shift in pixels, uniform in [-s, s], s = round(side * crop)
            sy, sx = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
            return {"dy": torch.randint(-sy, sy + 1, (n,), generator=g),
                    "dx": torch.randint(-sx, sx + 1, (n,), generator=g)}
        if op == "cutout":  # square of side round(side * cutout) centred at an integer position
            ch, cw = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
            cy = torch.randint(0, h + (1 - ch % 2), (n,), generator=g)
            cx = torch.randint(0, w + (1 - cw % 2), (n,), generator=g)
            # Store the (possibly off-image) top-left corner and side; apply clips at the borders.
            return {"y0": cy - ch // 2, "x0": cx - cw // 2,
                    "h": torch.full((n,), ch, dtype=torch.long), "w": torch.full((n,), cw, dtype=torch.long)}
        if op == "flip":  # horizontal flip with probability self.flip
            return {"flip": torch.rand(n, generator=g, dtype=torch.float32) < self.flip}
        if op == "scale":  # independent x and y zoom factors in [1/scale, scale]
            return {"sx": _uniform(n, 1.0 / self.scale, self.scale, g),
                    "sy": _uniform(n, 1.0 / self.scale, self.scale, g)}
        if op == "rotate":  # angle in degrees, uniform in [-rotate, rotate]
            return {"degrees": _uniform(n, -self.rotate, self.rotate, g)}
        raise AssertionError(op)

    # ---- application (deterministic, differentiable in x) ----
    def apply(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        # Params already on x's device (AugParams.to, once per plan) make these casts device-side: no sync.
        for op, p in params.steps:
            p = {k: v.to(x.device, x.dtype if v.is_floating_point() else v.dtype) for k, v in p.items()}
            x = getattr(self, f"_apply_{op}")(x, p)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], tuple(x.shape[-2:]), generator).to(x.device))

    @staticmethod
    def _apply_color(x: torch.Tensor, p: Params) -> torch.Tensor:
        # Same order as DSA: brightness, then saturation (about the per-pixel channel mean), then
        # contrast (about the per-image mean over C, H, W).
        x = x + p["brightness"].view(-1, 1, 1, 1)
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * p["saturation"].view(-1, 1, 1, 1) + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - m) * p["contrast"].view(-1, 1, 1, 1) + m

    @staticmethod
    def _apply_crop(x: torch.Tensor, p: Params) -> torch.Tensor:
        # out[b, :, i, j] = x[b, :, i + dy, j + dx], zero where the source is off the image.
        n, c, h, w = x.shape
        rows = torch.arange(h, device=x.device).view(1, h) + p["dy"].view(n, 1)  # [n, H]
        cols = torch.arange(w, device=x.device).view(1, w) + p["dx"].view(n, 1)  # [n, W]
        inside = ((rows >= 0) & (rows < h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
        out = x.gather(2, rows.clamp(0, h - 1).view(n, 1, h, 1).expand(n, c, h, w))
        out = out.gather(3, cols.clamp(0, w - 1).view(n, 1, 1, w).expand(n, c, h, w))
        return torch.where(inside, out, torch.zeros((), dtype=x.dtype, device=x.device))

    @staticmethod
    def _apply_cutout(x: torch.Tensor, p: Params) -> torch.Tensor:
        n, _, h, w = x.shape
        r = torch.arange(h, device=x.device).view(1, h)
        c = torch.arange(w, device=x.device).view(1, w)
        in_r = (r >= p["y0"].view(n, 1)) & (r < (p["y0"] + p["h"]).view(n, 1))  # [n, H]
        in_c = (c >= p["x0"].view(n, 1)) & (c < (p["x0"] + p["w"]).view(n, 1))  # [n, W]
        hole = in_r.view(n, 1, h, 1) & in_c.view(n, 1, 1, w)
        return torch.where(hole, torch.zeros((), dtype=x.dtype, device=x.device), x)

    @staticmethod
    def _apply_flip(x: torch.Tensor, p: Params) -> torch.Tensor:
        return torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(3), x)

    def _affine(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        if torch.are_deterministic_algorithms_enabled():  # `deterministic=true`: grid_sample's backward is not
            return affine_sample(x, theta, self.align_corners)  # the same interpolation, transposed by matmuls
        grid = F.affine_grid(theta, list(x.shape), align_corners=self.align_corners)
        return F.grid_sample(x, grid, align_corners=self.align_corners)

    def _apply_scale(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        zero = torch.zeros_like(p["sx"])
        theta = torch.stack([torch.stack([p["sx"], zero, zero], 1), torch.stack([zero, p["sy"], zero], 1)], 1)
        return self._affine(x, theta)

    def _apply_rotate(self, x: torch.Tensor, p: Params) -> torch.Tensor:
        a = p["degrees"] * (math.pi / 180.0)
        cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        return self._affine(x, theta)


class NoAugment:
    """Identity with the DSA interface (sample returns no steps)."""

    def sample(self, n: int, size: tuple[int, int], generator: torch.Generator) -> AugParams:
        return AugParams([])

    def apply(self, x: torch.Tensor, params: AugParams) -> torch.Tensor:
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        return "NoAugment()"


def build_augment(name: str, **kwargs) -> DSA | NoAugment:
    """`augment.name` -> augmenter; the other `augment.*` keys are DSA's constructor arguments."""
    check_choice("augment.name", name, ("dsa", "none"))
    if name == "none":
        return NoAugment()
    known = set(inspect.signature(DSA.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(
            f"Config key `augment.{unknown[0]}` is not a DSA setting; known keys: "
            + ", ".join(sorted(known)) + "."
        )
    return DSA(**kwargs)
