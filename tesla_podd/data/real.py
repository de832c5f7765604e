"""Real datasets as uint8 tensors: one `load_real(dataset_cfg, cache_dir)` for every dataset.

Readers (in `readers.py`) turn each dataset's release layout into uint8 [N,C,H,W] tensors; here we
add caching (decode once, then load the tensors), the optional class-balanced `train_subset`, and
the normalisation statistics."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import atomic
from ..errors import ConfigError, DataError, check_choice
from ..seeding import generator
from .split import split_validation

log = logging.getLogger(__name__)


@dataclass
class RealData:
    name: str
    train_x: torch.Tensor  # uint8 [N, C, H, W]; may be memory-mapped (ImageNet-1K 64x64)
    train_y: torch.Tensor  # int64 [N]
    test_x: torch.Tensor  # uint8 [M, C, H, W]
    test_y: torch.Tensor  # int64 [M]
    class_names: list[str]
    mean: tuple[float, ...]  # per-channel, of images in [0, 1]
    std: tuple[float, ...]
    # Held-out validation split (data/split.py); None when `dataset.val_size` is 0.
    val_x: torch.Tensor | None = None  # uint8 [V, C, H, W], never part of train_x
    val_y: torch.Tensor | None = None  # int64 [V]
    # Images the ZCA is fit on when not train_x (`dataset.zca_fit=all` with a `train_subset`).
    zca_fit_x: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def indices_of_class(self, c: int) -> torch.Tensor:
        return torch.nonzero(self.train_y == c).flatten()


def _cache_file(cache_dir: Path, name: str, root: Path, image_size: int) -> Path:
    key = hashlib.sha1(f"{Path(root).resolve()}|{image_size}".encode()).hexdigest()[:10]
    return Path(cache_dir) / "datasets" / f"{name}-{image_size}px-{key}.pt"


def load_real(dataset_cfg, cache_dir: str | Path) -> RealData:
    """Load (and cache) the dataset described by a `conf/dataset/*.yaml` node."""
    from .readers import READERS

    name = dataset_cfg.name
    check_choice("dataset.name", name, READERS)
    root = Path(str(dataset_cfg.root)) if dataset_cfg.root else None
    image_size = int(dataset_cfg.image_size)
    reader = READERS[name]
    cache = None if name == "fake" or root is None else _cache_file(Path(cache_dir), name, root, image_size)

    if cache is not None and cache.exists():
        try:
            raw = torch.load(cache, map_location="cpu", weights_only=False, mmap=True)
        except Exception as exc:  # a corrupt cache is rebuilt, never trusted
            log.warning("dataset cache %s unreadable (%s); decoding again", cache, exc)
            raw = None
    else:
        raw = None
    if raw is not None and str(dataset_cfg.get("class_order", "wnids")) == "sorted" and "class_ids" not in raw:
        raw = None  # a cache written before class identifiers were kept: decode again
    if raw is None:
        raw = reader(
            root=root,
            download=bool(dataset_cfg.download),
            image_size=image_size,
            cache_dir=Path(cache_dir),
        )
        if cache is not None and raw.pop("cacheable", True):
            atomic.save_torch(raw, cache)
            log.info("cached decoded %s at %s", name, cache)
    raw.pop("cacheable", None)
    class_ids = raw.pop("class_ids", None)

    data = RealData(
        name=name,
        train_x=raw["train_x"],
        train_y=raw["train_y"].long(),
        test_x=raw["test_x"],
        test_y=raw["test_y"].long(),
        class_names=list(raw["class_names"]),
        mean=tuple(float(m) for m in dataset_cfg.mean),
        std=tuple(float(s) for s in dataset_cfg.std),
    )
    _check_shapes(data, dataset_cfg)
    data = order_classes(data, class_ids, str(dataset_cfg.get("class_order", "wnids")))
    indices_file = dataset_cfg.get("train_indices")
    if indices_file:  # exactly these train images (e.g. another code's subset); validation from the rest
        return select_train_indices(data, indices_file, dataset_cfg)
    # Validation first, so that it is the same whatever train_subset is chosen afterwards.
    data = split_validation(data, dataset_cfg.val_size, seed=int(dataset_cfg.val_seed),
                            mode=str(dataset_cfg.get("val_mode", "held_out")))
    subset = dataset_cfg.train_subset
    if subset:
        pool = data.train_x
        data = class_balanced_subset(data, int(subset), seed=int(dataset_cfg.subset_seed))
        if dataset_cfg.get("zca_fit", "subset") == "all":  # as a reference loader that whitens, then subsets
            data.zca_fit_x = pool
    return data


CLASS_ORDERS = ("wnids", "sorted")


def order_classes(data: RealData, class_ids: list[str] | None, order: str) -> RealData:
    """`dataset.class_order`: wnids keeps the release's order (Tiny-ImageNet: `wnids.txt`); sorted renumbers the
    classes by their sorted identifiers, as torchvision's ImageFolder (MTT, RaT-BPTT, PoDD) numbers them. Only
    the labels and names move; images stay where they are (so `dataset.train_indices` files stay valid)."""
    check_choice("dataset.class_order", order, CLASS_ORDERS)
    if order == "wnids":
        return data
    if not class_ids:
        raise ConfigError(f"`dataset.class_order=sorted` needs class identifiers, which dataset `{data.name}` "
                          "does not have (its classes are already in the order the references use); "
                          "use `dataset.class_order=wnids`.")
    ranking = sorted(range(len(class_ids)), key=lambda i: class_ids[i])  # new class k = old class ranking[k]
    new_of_old = torch.empty(len(ranking), dtype=torch.int64)
    new_of_old[torch.tensor(ranking)] = torch.arange(len(ranking))
    return dataclasses.replace(data, train_y=new_of_old[data.train_y], test_y=new_of_old[data.test_y],
                               class_names=[data.class_names[i] for i in ranking])


def _check_shapes(data: RealData, cfg) -> None:
    c, h, w = data.image_shape
    if (c, h, w) != (int(cfg.channels), int(cfg.image_size), int(cfg.image_size)):
        raise DataError(
            f"Dataset `{cfg.name}` under `dataset.root={cfg.root}` holds images of shape "
            f"{(c, h, w)}, but the config expects {(cfg.channels, cfg.image_size, cfg.image_size)} "
            "(`dataset.channels`, `dataset.image_size`)."
        )
    if data.num_classes != int(cfg.num_classes):
        raise DataError(
            f"Dataset `{cfg.name}` has {data.num_classes} classes, but `dataset.num_classes` is "
            f"{cfg.num_classes}. Set `dataset.num_classes={data.num_classes}` if this copy is a subset."
        )


def read_train_indices(path, num_train: int) -> torch.Tensor:
    """The int64 indices a `dataset.train_indices` .npy file lists (into the full train set, reader order)."""
    import numpy as np

    path = Path(str(path))
    what = (f"`dataset.train_indices={path}` must name a .npy file holding a 1-D array of distinct integer "
            f"indices into the dataset's {num_train} train images (0..{num_train - 1}, in the reader's order: "
            "classes sorted by name, files sorted within each class)")
    if not path.is_file():
        raise ConfigError(f"{what}, but there is no such file.")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ConfigError(f"{what}, but it could not be read as one ({type(exc).__name__}: {exc}).") from None
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ConfigError(f"{what}, but it holds a {arr.dtype} array of shape {arr.shape}.")
    idx = torch.from_numpy(arr.astype(np.int64))
    bad = idx[(idx < 0) | (idx >= num_train)]
    if bad.numel():
        raise ConfigError(f"{what}, but {bad.numel()} of its {idx.numel()} indices are out of range "
                          f"(e.g. {int(bad[0])}).")
    if torch.unique(idx).numel() != idx.numel():
        raise ConfigError(f"{what}, but {idx.numel() - torch.unique(idx).numel()} of its indices are repeated.")
    return idx


def select_train_indices(data: RealData, path, dataset_cfg) -> RealData:
    """The train images a `dataset.train_indices` file lists, in the file's order. A validation split
    (`dataset.val_size` > 0) is drawn from the images the file leaves out, so the two never overlap."""
    if dataset_cfg.get("train_subset"):
        raise ConfigError("`dataset.train_indices` and `dataset.train_subset` both choose the train images: "
                          "set `dataset.train_subset=null` when a train_indices file is given.")
    n = data.train_y.numel()
    idx = read_train_indices(path, n)
    rest = torch.ones(n, dtype=torch.bool)
    rest[idx] = False
    rest = torch.nonzero(rest).flatten()
    chosen = dataclasses.replace(data, train_x=data.train_x[idx], train_y=data.train_y[idx])
    pool = data.train_x
    if float(dataset_cfg.val_size) != 0:
        if rest.numel() == 0:
            raise ConfigError(f"`dataset.train_indices` lists every train image, so no image is left for the "
                              f"validation split of `dataset.val_size={dataset_cfg.val_size}`: set "
                              "`dataset.val_size=0`.")
        left = split_validation(dataclasses.replace(data, train_x=data.train_x[rest], train_y=data.train_y[rest]),
                                dataset_cfg.val_size, seed=int(dataset_cfg.val_seed))
        chosen = dataclasses.replace(chosen, val_x=left.val_x, val_y=left.val_y)
        pool = torch.cat([chosen.train_x, left.train_x])  # every train image but the validation split
    if dataset_cfg.get("zca_fit", "subset") == "all":
        chosen.zca_fit_x = pool
    return chosen


def class_balanced_subset(data: RealData, size: int, seed: int = 0) -> RealData:
    """`size` training images, as equal per class as possible, chosen at random (seeded)."""
    n = data.train_y.numel()
    if size <= 0 or size > n:
        raise ConfigError(f"`dataset.train_subset` is {size}, but must be between 1 and {n} (the train size).")
    g = generator(seed, "train_subset", data.name)
    per_class = [data.indices_of_class(c) for c in range(data.num_classes)]
    base, extra = divmod(size, data.num_classes)
    picks = []
    for c, idx in enumerate(per_class):
        k = min(len(idx), base + (1 if c < extra else 0))
        picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    keep = torch.sort(torch.cat(picks)).values
    return RealData(
        name=data.name,
        train_x=data.train_x[keep],
        train_y=data.train_y[keep],
        test_x=data.test_x,
        test_y=data.test_y,
        class_names=data.class_names,
        mean=data.mean,
        std=data.std,
        val_x=data.val_x,
        val_y=data.val_y,
    )
