"""Readers for CUB-200-2011, Tiny-ImageNet and downsampled ImageNet 64x64 (registered in readers.READERS).

Shared image helpers come from `.images`."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .images import decode_image, missing_dataset, stack_images

log = logging.getLogger(__name__)


def _decode_many(files: list[Path], image_size: int) -> torch.Tensor:
    """Decode + resize many images in threads (torchvision's JPEG decoder releases the GIL)."""

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return stack_images(list(pool.map(lambda f: decode_image(f, image_size), files)))


def _rows(path: Path) -> list[list[str]]:
    """Whitespace-split, non-empty lines of a release's index file (max 2 fields: id, rest)."""
    return [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]


def _release_dir(root: Path | None, folder: str, marker: str) -> Path | None:
    """`root/folder` or `root` itself, whichever holds `marker`; None when neither does."""
    if root is None:
        return None
    for base in (Path(root) / folder, Path(root)):
        if (base / marker).is_file():
            return base
    return None


# --------------------------------------------------------------------------- CUB-200-2011

_CUB_FILES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")


def read_cub200(root, download, image_size, cache_dir):
    """CUB-200-2011 release: index files + `images/<class>/<file>.jpg`; official train/test split."""

    base = _release_dir(root, "CUB_200_2011", "images.txt")
    if base is None or not all((base / f).is_file() for f in _CUB_FILES) or not (base / "images").is_dir():
        expected = "`CUB_200_2011/` holding " + ", ".join(f"`{f}`" for f in _CUB_FILES) + " and `images/`"
        raise missing_dataset("cub200", root, expected, download, "CUB-200-2011 has no automatic download")
    paths = {i: p for i, p in _rows(base / "images.txt")}
    is_train = {i: s.strip() == "1" for i, s in _rows(base / "train_test_split.txt")}
    label = {i: int(c) - 1 for i, c in _rows(base / "image_class_labels.txt")}  # 1..200 -> 0-based
    classes = sorted(_rows(base / "classes.txt"), key=lambda r: int(r[0]))
    # "001.Black_footed_Albatross" -> "Black footed Albatross"
    names = [re.sub(r"^\d+\.", "", name.strip()).replace("_", " ") for _, name in classes]

    out = {}
    for split, want in (("train", True), ("test", False)):
        ids = sorted((i for i in paths if is_train[i] == want), key=int)
        out[f"{split}_x"] = _decode_many([base / "images" / paths[i].strip() for i in ids], image_size)
        out[f"{split}_y"] = torch.tensor([label[i] for i in ids], dtype=torch.int64)
    return dict(out, class_names=names)


# --------------------------------------------------------------------------- Tiny-ImageNet


def read_tinyimagenet(root, download, image_size, cache_dir):
    """Tiny-ImageNet release: classes in `wnids.txt` order (`dataset.class_order=sorted` renumbers them by wnid,
    data/real.py); the labelled `val/` split is the test split."""

    base = _release_dir(root, "tiny-imagenet-200", "wnids.txt")
    need = ("wnids.txt", "words.txt", "val/val_annotations.txt")
    if base is None or not all((base / f).is_file() for f in need) or not (base / "train").is_dir():
        expected = (
            "`tiny-imagenet-200/` holding `wnids.txt`, `words.txt`, `train/<wnid>/images/*.JPEG`, "
            "`val/images/*.JPEG` and `val/val_annotations.txt`"
        )
        raise missing_dataset("tinyimagenet", root, expected, download, "Tiny-ImageNet has no automatic download")
    wnids = (base / "wnids.txt").read_text().split()
    words = {r[0]: r[1] for r in _rows(base / "words.txt") if len(r) == 2}
    # "goldfish, Carassius auratus" -> "goldfish"
    names = [words.get(w, w).split(",")[0].strip() for w in wnids]
    index = {w: i for i, w in enumerate(wnids)}

    train_files, train_y = [], []
    for w in wnids:
        files = sorted(p for p in (base / "train" / w / "images").glob("*") if p.suffix.lower() == ".jpeg")
        train_files += files
        train_y += [index[w]] * len(files)
    val = sorted((line.split()[:2] for line in (base / "val/val_annotations.txt").read_text().splitlines()
                  if line.strip()), key=lambda r: _natural(r[0]))
    val = [(f, w) for f, w in val if w in index]  # a full-release annotation file on a class subset
    return dict(
        train_x=_decode_many(train_files, image_size),
        train_y=torch.tensor(train_y, dtype=torch.int64),
        test_x=_decode_many([base / "val" / "images" / f for f, _ in val], image_size),
        test_y=torch.tensor([index[w] for _, w in val], dtype=torch.int64),
        class_names=names,
        class_ids=wnids,  # for `dataset.class_order=sorted`
    )


def _natural(name: str):
    """Sort key: "val_10.JPEG" after "val_9.JPEG"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------- ImageNet-1K 64x64


def _find(root: Path, pattern: str) -> list[Path]:
    """Files matching `pattern` in root or one folder below (e.g. `Imagenet64_train_npz/`), natural order."""
    return sorted(list(root.glob(pattern)) + list(root.glob(f"*/{pattern}")), key=lambda p: _natural(p.name))


def _npz_to_npy(sources: list[Path], out_dir: Path, split: str, image_size: int) -> None:
    """Stream npz batches into `<split>_x.npy` [N,3,S,S] uint8 + `<split>_y.npy` int64 (0-based).

    Written batch by batch into an `open_memmap` under a temp name, renamed when complete: a killed
    conversion leaves only a temp file, which the next load overwrites."""
    from torchvision.transforms.functional import resize

    counts = []
    for src in sources:  # npz members load lazily: this reads the labels only
        with np.load(src) as z:
            counts.append(len(z["labels"]))
    x_tmp, y_tmp = out_dir / f".{split}_x.npy.tmp", out_dir / f".{split}_y.npy.tmp"
    shape = (sum(counts), 3, image_size, image_size)
    xs = np.lib.format.open_memmap(x_tmp, mode="w+", dtype=np.uint8, shape=shape)
    ys = np.lib.format.open_memmap(y_tmp, mode="w+", dtype=np.int64, shape=(sum(counts),))
    start = 0
    for src, n in zip(sources, counts):
        with np.load(src) as z:
            data, labels = z["data"], z["labels"]
        side = int(round((data.shape[1] // 3) ** 0.5))  # rows are R, G, B planes of side x side, row-major
        batch = data.reshape(n, 3, side, side)
        for i in range(0, n, 8192):  # chunks: resizing works in float (8192 imgs x 64x64x3 x 4 B = 400 MB)
            chunk = batch[i:i + 8192]
            if side != image_size:  # e.g. image_size=32 from the 64x64 release
                chunk = resize(torch.from_numpy(chunk), [image_size, image_size], antialias=True).numpy()
            xs[start + i:start + i + len(chunk)] = chunk
        ys[start:start + n] = np.asarray(labels, dtype=np.int64) - 1  # labels 1..1000 -> 0-based
        start += n
        del data, batch
    xs.flush()
    ys.flush()
    del xs, ys
    os.replace(y_tmp, out_dir / f"{split}_y.npy")
    os.replace(x_tmp, out_dir / f"{split}_x.npy")  # x last: its presence means both are complete


def _mmap_tensor(path: Path) -> torch.Tensor:
    """Read-only np.memmap wrapped without a copy (never write into it: the pages are read-only)."""
    arr = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():  # torch warns that the array is not writable; we only read it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


def _imagenet64_names(root: Path, n_classes: int) -> list[str]:
    """Class names from `map_clsloc.txt` ("wnid index name", index 1-based = label) or
    `LOC_synset_mapping.txt` ("wnid name, synonyms", taken in line order), else "class_<i>"."""
    names = [f"class_{i}" for i in range(n_classes)]
    clsloc, loc = _find(root, "map_clsloc.txt"), _find(root, "LOC_synset_mapping.txt")
    if clsloc:
        for line in clsloc[0].read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and 1 <= int(parts[1]) <= n_classes:
                names[int(parts[1]) - 1] = " ".join(parts[2:]).replace("_", " ")
    elif loc:
        # The downsampled-ImageNet labels follow map_clsloc.txt's order; line order of this file
        # (sorted wnids) may differ from it, so names may be permuted: prefer map_clsloc.txt.
        log.warning("imagenet64: class names from %s by line order; map_clsloc.txt is authoritative", loc[0])
        for i, (_, rest) in enumerate(r for r in _rows(loc[0]) if len(r) == 2):
            if i < n_classes:
                names[i] = rest.split(",")[0].strip()
    return names


def read_imagenet64(root, download, image_size, cache_dir):
    """Downsampled ImageNet (Chrabaszcz et al. 2017) npz batches -> memory-mapped uint8 tensors.

    The first load converts the batches into `.npy` files under `cache_dir/imagenet64/<key>/` (key:
    root, image size and the batch files' names and sizes); later loads memory-map them."""

    train = _find(Path(root), "train_data_batch_*.npz") if root is not None else []
    val = _find(Path(root), "val_data.npz")[:1] if root is not None else []
    if not train or not val:
        raise missing_dataset(
            "imagenet64", root,
            "`train_data_batch_1.npz` … `train_data_batch_10.npz` and `val_data.npz` "
            "(ImageNet 64x64, npz release) in it or one folder below", download,
            "ImageNet 64x64 has no automatic download (it needs an image-net.org login)",
        )
    # cache key: a different root, size or set of batch files gets its own conversion
    files = [f"{p.name}:{p.stat().st_size}" for p in train + val]
    sig = "|".join([str(Path(root).resolve()), str(image_size), *files])
    out_dir = Path(cache_dir) / "imagenet64" / hashlib.sha1(sig.encode()).hexdigest()[:10]
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, sources in (("train", train), ("test", val)):
        if not (out_dir / f"{split}_x.npy").is_file() or not (out_dir / f"{split}_y.npy").is_file():
            log.info("imagenet64: converting %d %s file(s) into %s (once)", len(sources), split, out_dir)
            _npz_to_npy(sources, out_dir, split, image_size)
    return dict(
        train_x=_mmap_tensor(out_dir / "train_x.npy"),
        train_y=_mmap_tensor(out_dir / "train_y.npy"),
        test_x=_mmap_tensor(out_dir / "test_x.npy"),
        test_y=_mmap_tensor(out_dir / "test_y.npy"),
        class_names=_imagenet64_names(Path(root), 1000),
        cacheable=False,  # already memory-mapped: a torch.save cache would copy 15 GB into RAM
    )
