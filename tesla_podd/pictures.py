"""Every picture the runner draws: PNG grids of synthetic images (de-whitened, one row per class),
posters with their class grid, and (through `save_figure`) the matplotlib curves of curves.py."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torchvision.utils import make_grid

from . import atomic
from .synset.poster_init import cell_bounds
from .synset.poster_layout import extract_patches, patch_corners, window_index


def save_png(pixels: torch.Tensor, path: str | Path) -> Path:
    """[3,H,W] in [0,1] -> PNG, atomically."""
    from PIL import Image

    arr = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return atomic.write_bytes(buf.getvalue(), path)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """A matplotlib Figure -> PNG, atomically (a killed run never leaves half a picture)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic.write_bytes(buf.getvalue(), path)


def grid_columns(num_images: int, num_classes: int) -> int:
    """IPC images a row (one row per class); a set with one image per class goes in a single row."""
    ipc = max(1, num_images // max(1, num_classes))
    return num_classes if ipc == 1 else ipc


def save_image_grid(images_model_space: torch.Tensor, preprocess, path: str | Path, per_row: int,
                    upscale_to: int = 64, max_images: int = 400) -> Path:
    """Grid of synthetic images: `per_row` images a row (IPC), upscaled so small images stay visible."""
    x = preprocess.to_pixels(images_model_space[:max_images])
    if x.shape[-1] < upscale_to:
        x = torch.nn.functional.interpolate(x, scale_factor=upscale_to // x.shape[-1], mode="nearest")
    grid = make_grid(x, nrow=max(1, per_row), padding=2, pad_value=1.0)
    return save_png(grid, path)


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


def save_poster_picture(synset, path: str | Path, preprocess, class_names=None) -> Path:
    """The de-whitened poster as a PNG with the class-cell borders drawn (and class names, if given)."""
    from PIL import Image, ImageDraw

    pixels = poster_to_pixels(synset.poster, preprocess, synset.image_hw)  # [C, Hp, Wp] in [0, 1]
    if pixels.shape[0] == 1:
        pixels = pixels.expand(3, -1, -1)
    hp, wp = synset.poster_hw
    scale = max(1, min(8, 640 // max(hp, wp)))  # small posters are upscaled (nearest) to stay visible
    arr = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    img = Image.fromarray(arr).resize((wp * scale, hp * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    rows, cols = cell_bounds(hp, synset.class_grid[0]), cell_bounds(wp, synset.class_grid[1])
    for y0, _ in rows[1:]:  # one thin line at each inner cell border
        draw.line([(0, y0 * scale), (wp * scale, y0 * scale)], fill=(255, 255, 255), width=1)
    for x0, _ in cols[1:]:
        draw.line([(x0 * scale, 0), (x0 * scale, hp * scale)], fill=(255, 255, 255), width=1)
    if class_names:
        for k, cls in enumerate(synset.order):
            (y0, _), (x0, x1) = rows[k // synset.class_grid[1]], cols[k % synset.class_grid[1]]
            name = str(class_names[cls])[: max(1, (x1 - x0) * scale // 6)]  # ~6 px per glyph
            draw.text((x0 * scale + 2, y0 * scale + 1), name, fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic.write_bytes(buf.getvalue(), path)


def save_synset_picture(synset, preprocess, class_names, path: str | Path) -> Path:
    """A poster with its class grid, or a grid of images (one row per class)."""
    if hasattr(synset, "poster"):
        return save_poster_picture(synset, path, preprocess, class_names)
    x = synset.preview()
    return save_image_grid(x, preprocess, path, per_row=grid_columns(x.shape[0], len(class_names)))
