"""One reader per dataset release layout -> dict of uint8 tensors + class names.

Each reader takes (root, download, image_size, cache_dir) and returns
{"train_x", "train_y", "test_x", "test_y", "class_names"} (+ "cacheable": False when the reader
manages its own memory-mapped cache). A root that does not hold the dataset raises DataError
listing what was expected."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ..seeding import generator
from .images import IMAGE_EXTS, decode_image, missing_dataset, stack_images
from .readers_extra import read_cub200, read_imagenet64, read_tinyimagenet


def read_image_folder(split_dir: Path, image_size: int, class_names: list[str] | None = None):
    """`split_dir/<class>/*.jpg` (torchvision ImageFolder layout; classes sorted by name)."""
    classes = class_names or sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    xs, ys = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (split_dir / cls).iterdir() if p.suffix.lower() in IMAGE_EXTS)
        xs += [decode_image(f, image_size) for f in files]
        ys += [label] * len(files)
    return stack_images(xs), torch.tensor(ys, dtype=torch.int64), classes


# torchvision's python-pickle layout: folder, train files, test file, meta file, label key, names key
_CIFAR_PICKLES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names"),
}


def _unpickle(path: Path) -> dict:
    """A CIFAR pickle (Python 2 era) as a dict with str keys; values bytes/ndarray/list as stored."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")  # the format's documented way: keys come back as b"data"
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def read_cifar_pickles(name: str, folder: Path, image_size: int) -> dict:
    """Our own reader for torchvision's CIFAR pickle layout.

    torchvision's CIFAR10/CIFAR100 classes check every file's md5 before reading, so they refuse
    anything but the exact release files (and so tests' tiny files); we use torchvision only to
    download, and read the folder here."""
    _, train_files, test_file, meta_file, label_key, names_key = _CIFAR_PICKLES[name]

    def load(files):
        parts = [_unpickle(folder / f) for f in files]
        x = torch.from_numpy(np.concatenate([np.asarray(p["data"], dtype=np.uint8) for p in parts]))
        x = x.reshape(-1, 3, 32, 32)  # rows: 1024 R, then G, then B values of a 32x32 image, row-major
        if image_size != 32:
            from torchvision.transforms.functional import resize

            x = resize(x, [image_size, image_size], antialias=True)
        y = torch.tensor([int(v) for p in parts for v in p[label_key]], dtype=torch.int64)
        return x, y

    train_x, train_y = load(train_files)
    test_x, test_y = load([test_file])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(folder / meta_file)[names_key]]
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, class_names=names)


def _read_cifar(name: str, tv_cls, root: Path | None, download: bool, image_size: int):
    folder_name, train_files, test_file, meta_file = _CIFAR_PICKLES[name][:4]
    expected = (
        f"`train/<class>/*` + `test/<class>/*` image folders, or torchvision's `{folder_name}/` "
        f"batches ({', '.join(train_files + [test_file, meta_file])})"
    )
    if root is None:
        raise missing_dataset(name, root, expected, download)
    root = Path(root)
    # 1) image-folder layout: root/train/<class>/*, root/test/<class>/*
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_x, train_y, classes = read_image_folder(root / "train", image_size)
        test_x, test_y, _ = read_image_folder(root / "test", image_size, classes)
        return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, class_names=classes)

    # 2) torchvision's python-pickle layout, under root or as root itself; downloaded when allowed
    def pickle_dir():
        for d in (root / folder_name, root):
            if all((d / f).is_file() for f in train_files + [test_file, meta_file]):
                return d
        return None

    error = ""
    if pickle_dir() is None and download:
        try:
            tv_cls(str(root), train=True, download=True)  # fetches + md5-checks the release archive
        except Exception as exc:  # URLError offline, ...
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    folder = pickle_dir()
    if folder is None:
        raise missing_dataset(name, root, expected, download, error)
    return read_cifar_pickles(name, folder, image_size)


def read_cifar10(root, download, image_size, cache_dir):
    from torchvision.datasets import CIFAR10

    return _read_cifar("cifar10", CIFAR10, root, download, image_size)


def read_cifar100(root, download, image_size, cache_dir):
    from torchvision.datasets import CIFAR100

    return _read_cifar("cifar100", CIFAR100, root, download, image_size)


def read_fake(root, download, image_size, cache_dir, num_classes: int = 4, train_per_class: int = 16,
              test_per_class: int = 8):
    """Deterministic, tiny, class-separable data for tests: class c is a coloured blob at its own place."""
    g = generator(0, "fake-dataset")
    s = image_size
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    protos = []
    for c in range(num_classes):
        cy, cx = (s * (0.25 + 0.5 * (c // 2 % 2)), s * (0.25 + 0.5 * (c % 2)))
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (s / 6) ** 2))
        colour = torch.tensor([(c * 0.37) % 1.0, (c * 0.61 + 0.3) % 1.0, (c * 0.13 + 0.6) % 1.0])
        protos.append(0.2 + 0.6 * colour[:, None, None] * blob)

    def make(per_class):
        x = torch.stack([protos[c] for c in range(num_classes) for _ in range(per_class)])
        x = x + 0.08 * torch.randn(x.shape, generator=g)
        y = torch.arange(num_classes).repeat_interleave(per_class)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = make(train_per_class)
    test_x, test_y = make(test_per_class)
    names = ["apple", "bicycle", "cloud", "dolphin", "engine", "forest", "guitar", "house"][:num_classes]
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, class_names=names)


READERS = {
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "cub200": read_cub200,
    "tinyimagenet": read_tinyimagenet,
    "imagenet64": read_imagenet64,
    "fake": read_fake,
}
