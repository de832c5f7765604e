"""Image helpers shared by every dataset reader: decode one file, stack a list, say what is missing."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def decode_image(path: Path, image_size: int | None = None) -> torch.Tensor:
    """uint8 [3, H, W] RGB (greyscale and RGBA converted), resized to image_size if given."""
    from torchvision.io import ImageReadMode, read_file
    from torchvision.io import decode_image as tv_decode
    from torchvision.transforms.functional import resize

    try:
        img = tv_decode(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as exc:  # torchvision names neither the file nor the cause
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DataError(
            f"Image {path} could not be read ({reason}): the file is corrupt, truncated or not an image. "
            f"Replace or delete it (it sits in the folder of class `{Path(path).parent.name}`) and run again; "
            "nothing was cached from this dataset yet."
        ) from None
    if image_size is not None and tuple(img.shape[1:]) != (image_size, image_size):
        img = resize(img, [image_size, image_size], antialias=True)
    return img


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(images) if images else torch.empty(0, 3, 0, 0, dtype=torch.uint8)


def missing_dataset(name: str, root: Path | None, expected: str, download: bool, extra: str = "") -> DataError:
    how = (
        "`dataset.download=true` was set but the download failed" + (f" ({extra})" if extra else "")
        if download
        else "`dataset.download` is off"
    )
    return DataError(
        f"Dataset `{name}` not found under `dataset.root={root}`: expected {expected}. {how}. "
        f"Point `dataset.root` (or `paths.data_dir`, e.g. `DATA=/path make demo`) at a copy."
    )
