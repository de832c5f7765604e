"""PNG pictures of synthetic sets (de-whitened, one row per class)."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torchvision.utils import make_grid

from . import atomic


def save_png(pixels: torch.Tensor, path: str | Path) -> Path:
    """[3,H,W] in [0,1] -> PNG, atomically."""
    from PIL import Image

    arr = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
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
