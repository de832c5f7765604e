"""Dataset readers on tiny files written in each release's real format, plus `load_real` caching.

The `realdata` tests read ../shared/data (relative to the repo) when it exists."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tesla_podd.data.readers import READERS, read_cifar10, read_cifar100, read_image_folder
from tesla_podd.data.readers_extra import read_cub200, read_imagenet64, read_tinyimagenet
from tesla_podd.data.real import load_real
from tesla_podd.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _jpeg(path: Path, colour, size=(40, 30), mode="RGB"):
    """A flat-colour JPEG (flat so that JPEG loss and resizing keep the colour within a few levels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, quality=95)


def _colour(c: int) -> tuple[int, int, int]:
    return (20 + 50 * c, 200 - 40 * c, 100)


def _mean_rgb(x: torch.Tensor) -> list[float]:
    return x.float().mean(dim=(-1, -2)).tolist()


# --------------------------------------------------------------------------- CUB-200-2011


def _write_cub(base: Path):
    """3 classes x 3 images; ids 1..9, every third image is test; one greyscale image."""
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
    images, split, labels = [], [], []
    for i in range(9):
        c, img_id = i // 3, i + 1
        rel = f"{names[c]}/img_{img_id:04d}.jpg"
        if img_id == 5:
            _jpeg(base / "images" / rel, 128, mode="L")
        else:
            _jpeg(base / "images" / rel, _colour(c), size=(50 + 7 * i, 40))  # non-square, varied sizes
        images.append(f"{img_id} {rel}")
        split.append(f"{img_id} {0 if i % 3 == 2 else 1}")
        labels.append(f"{img_id} {c + 1}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))


def test_cub200_layout_split_resize_and_names(tmp_path):
    _write_cub(tmp_path / "CUB_200_2011")
    for root in (tmp_path, tmp_path / "CUB_200_2011"):  # parent or the release folder itself
        d = read_cub200(root, False, 32, tmp_path / "cache")
        assert d["train_x"].shape == (6, 3, 32, 32) and d["test_x"].shape == (3, 3, 32, 32)
        assert d["train_x"].dtype == torch.uint8 and d["train_y"].dtype == torch.int64
        assert d["train_y"].tolist() == [0, 0, 1, 1, 2, 2] and d["test_y"].tolist() == [0, 1, 2]
        assert d["class_names"] == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
        # train ids 1,2,4,5,7,8: id 5 (4th train image) is the greyscale one -> equal RGB channels
        grey = _mean_rgb(d["train_x"][3])
        assert max(grey) - min(grey) < 2 and abs(grey[0] - 128) < 3
        for img, y in zip(d["test_x"], d["test_y"]):
            assert np.allclose(_mean_rgb(img), _colour(int(y)), atol=4)
    assert read_cub200(tmp_path, False, 16, tmp_path / "cache")["train_x"].shape[-2:] == (16, 16)


def test_cub200_missing_files(tmp_path):
    _write_cub(tmp_path / "CUB_200_2011")
    (tmp_path / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match=r"train_test_split\.txt.*download"):
        read_cub200(tmp_path, False, 32, tmp_path / "cache")
    with pytest.raises(DataError, match="images.txt"):
        read_cub200(None, False, 32, tmp_path / "cache")


# --------------------------------------------------------------------------- Tiny-ImageNet


def _write_tiny(base: Path, per_class=3, val_per_class=2):
    wnids = ["n02124075", "n01443537"]
    (base / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text(
        "n01443537\tgoldfish, Carassius auratus\nn02124075\tEgyptian cat\nn99999999\tunused, thing\n"
    )
    for c, w in enumerate(wnids):
        for k in range(per_class):
            _jpeg(base / "train" / w / "images" / f"{w}_{k}.JPEG", _colour(c), size=(64, 64))
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for k in range(val_per_class * len(wnids)):
        c = k % len(wnids)
        mode, colour = ("L", 77) if k == 0 else ("RGB", _colour(c))
        _jpeg(base / "val" / "images" / f"val_{k}.JPEG", colour, size=(64, 64), mode=mode)
        lines.append(f"val_{k}.JPEG\t{wnids[c]}\t0\t0\t63\t63")
    lines.append("val_99.JPEG\tn99999999\t0\t0\t63\t63")  # a class not in wnids.txt is skipped
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tinyimagenet_layout(tmp_path):
    _write_tiny(tmp_path / "tiny-imagenet-200")
    for root in (tmp_path, tmp_path / "tiny-imagenet-200"):
        d = read_tinyimagenet(root, False, 64, tmp_path / "cache")
        assert d["train_x"].shape == (6, 3, 64, 64) and d["test_x"].shape == (4, 3, 64, 64)
        assert d["train_x"].dtype == torch.uint8 and d["test_y"].dtype == torch.int64
        assert d["class_names"] == ["Egyptian cat", "goldfish"]  # wnids.txt order, first synonym
        assert d["train_y"].tolist() == [0, 0, 0, 1, 1, 1] and d["test_y"].tolist() == [0, 1, 0, 1]
        grey = _mean_rgb(d["test_x"][0])  # val_0 is a greyscale JPEG -> 3 equal channels
        assert max(grey) - min(grey) < 2 and abs(grey[0] - 77) < 3
        assert np.allclose(_mean_rgb(d["train_x"][4]), _colour(1), atol=4)
    assert read_tinyimagenet(tmp_path, False, 32, tmp_path / "cache")["test_x"].shape == (4, 3, 32, 32)


def test_tinyimagenet_missing(tmp_path):
    with pytest.raises(DataError, match=r"wnids\.txt.*val_annotations\.txt.*`dataset\.download` is off"):
        read_tinyimagenet(tmp_path, False, 64, tmp_path / "cache")


# --------------------------------------------------------------------------- ImageNet 64x64


def _write_imagenet64(root: Path, batches=(5, 3), n_val=4, side=64):
    """npz batches: `data` [n, 3*side*side] uint8 as R, G, B planes; `labels` 1..1000."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name, n in [(f"train_data_batch_{i + 1}", n) for i, n in enumerate(batches)] + [("val_data", n_val)]:
        data = rng.integers(0, 256, size=(n, 3 * side * side), dtype=np.uint8)
        labels = rng.integers(1, 1001, size=n).tolist()
        np.savez(root / f"{name}.npz", data=data, labels=labels)
        truth[name] = (data, labels)
    return truth


def test_imagenet64_converts_once_then_memory_maps(tmp_path, monkeypatch):
    truth = _write_imagenet64(tmp_path / "in64", batches=(5, 3, 2))
    cache = tmp_path / "cache"
    first = read_imagenet64(tmp_path / "in64", False, 64, cache)
    assert first["cacheable"] is False
    assert first["train_x"].shape == (10, 3, 64, 64) and first["train_x"].dtype == torch.uint8
    assert first["test_x"].shape == (4, 3, 64, 64) and first["train_y"].dtype == torch.int64
    assert first["class_names"][:2] == ["class_0", "class_1"] and len(first["class_names"]) == 1000
    # values equal the source, batches concatenated in numeric order, labels 0-based
    src = [truth[f"train_data_batch_{i}"] for i in (1, 2, 3)]
    want_x = np.concatenate([d for d, _ in src]).reshape(-1, 3, 64, 64)
    assert np.array_equal(first["train_x"].numpy(), want_x)
    assert first["train_y"].tolist() == [v - 1 for _, ls in src for v in ls]
    assert np.array_equal(first["test_x"].numpy()[2, 1], truth["val_data"][0][2, 4096:8192].reshape(64, 64))

    # second load: no conversion, np.load(mmap_mode="r") -> tensors backed by np.memmap
    out_files = list((cache / "imagenet64").rglob("*.npy"))
    assert len(out_files) == 4 and not list((cache / "imagenet64").rglob("*.tmp"))
    import tesla_podd.data.readers_extra as rx

    monkeypatch.setattr(rx, "_npz_to_npy", lambda *a: pytest.fail("converted again"))
    seen = []
    real_load = np.load

    def spy(path, *a, **k):
        arr = real_load(path, *a, **k)
        seen.append(arr)
        return arr

    monkeypatch.setattr(rx.np, "load", spy)
    second = read_imagenet64(tmp_path / "in64", False, 64, cache)
    assert len(seen) == 4 and all(isinstance(a, np.memmap) and a.mode == "r" for a in seen)
    assert np.shares_memory(second["train_x"].numpy(), seen[0])  # wrapped without a copy
    assert torch.equal(second["train_x"], first["train_x"]) and torch.equal(second["test_y"], first["test_y"])


def test_imagenet64_killed_conversion_is_redone_and_names(tmp_path):
    _write_imagenet64(tmp_path / "in64", batches=(2,), n_val=2)
    (tmp_path / "in64" / "map_clsloc.txt").write_text("n02119789 1 kit_fox\nn02100735 2 English_setter\n")
    cache = tmp_path / "cache"
    d = read_imagenet64(tmp_path / "in64", False, 64, cache)
    assert d["class_names"][:3] == ["kit fox", "English setter", "class_2"]
    # simulate a kill: the final file is missing, only a (garbage) temp file is left
    out = next((cache / "imagenet64").iterdir())
    (out / "train_x.npy").rename(out / ".train_x.npy.tmp")
    (out / ".train_x.npy.tmp").write_bytes(b"junk")
    again = read_imagenet64(tmp_path / "in64", False, 64, cache)
    assert torch.equal(again["train_x"], d["train_x"])
    assert read_imagenet64(tmp_path / "in64", False, 32, cache)["train_x"].shape == (2, 3, 32, 32)


def test_imagenet64_missing(tmp_path):
    _write_imagenet64(tmp_path / "in64", batches=(), n_val=2)
    with pytest.raises(DataError, match=r"train_data_batch_1\.npz.*val_data\.npz.*download"):
        read_imagenet64(tmp_path / "in64", False, 64, tmp_path / "cache")
    with pytest.raises(DataError, match="train_data_batch_1"):
        read_imagenet64(None, False, 64, tmp_path / "cache")


# --------------------------------------------------------------------------- CIFAR pickles


def _pickle(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _cifar_batch(rng, n, labels_key, n_classes):
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return {b"batch_label": b"x", labels_key: [int(v) for v in rng.integers(0, n_classes, n)], b"data": data}


def test_cifar10_pickle_layout(tmp_path):
    rng = np.random.default_rng(1)
    base = tmp_path / "cifar-10-batches-py"
    batches = [_cifar_batch(rng, 3, b"labels", 10) for _ in range(5)]
    for i, b in enumerate(batches):
        _pickle(base / f"data_batch_{i + 1}", b)
    test = _cifar_batch(rng, 2, b"labels", 10)
    _pickle(base / "test_batch", test)
    names = [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()]
    _pickle(base / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    for root in (tmp_path, base):
        d = read_cifar10(root, False, 32, tmp_path / "cache")
        assert d["train_x"].shape == (15, 3, 32, 32) and d["train_x"].dtype == torch.uint8
        assert d["train_y"].tolist() == [v for b in batches for v in b[b"labels"]]
        assert d["test_y"].tolist() == test[b"labels"] and d["class_names"][0] == "airplane"
        # row layout: 1024 red values, then green, then blue, each 32x32 row-major
        assert np.array_equal(d["test_x"][1, 2].numpy(), test[b"data"][1, 2048:].reshape(32, 32))
    assert read_cifar10(tmp_path, False, 16, tmp_path / "cache")["train_x"].shape == (15, 3, 16, 16)


def test_cifar100_pickle_layout(tmp_path):
    rng = np.random.default_rng(2)
    base = tmp_path / "cifar-100-python"
    train = _cifar_batch(rng, 6, b"fine_labels", 100) | {b"coarse_labels": [0] * 6}
    test = _cifar_batch(rng, 4, b"fine_labels", 100) | {b"coarse_labels": [0] * 4}
    _pickle(base / "train", train)
    _pickle(base / "test", test)
    names = [f"c{i}".encode() for i in range(100)]
    _pickle(base / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20})
    d = read_cifar100(tmp_path, False, 32, tmp_path / "cache")
    assert d["train_x"].shape == (6, 3, 32, 32) and d["test_x"].shape == (4, 3, 32, 32)
    assert d["train_y"].tolist() == train[b"fine_labels"] and d["test_y"].tolist() == test[b"fine_labels"]
    assert d["class_names"][:2] == ["c0", "c1"] and len(d["class_names"]) == 100
    assert np.array_equal(d["train_x"][5].numpy().reshape(-1), train[b"data"][5])


def test_cifar_missing_without_download(tmp_path):
    with pytest.raises(DataError, match=r"cifar-100-python.*meta.*`dataset\.download` is off"):
        read_cifar100(tmp_path, False, 32, tmp_path / "cache")


def test_cifar_image_folder_layout(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        for c, cls in enumerate(["cat", "airplane"]):
            for k in range(n):
                _jpeg(tmp_path / split / cls / f"{k}.jpg", _colour(c), size=(32, 32))
    d = read_cifar10(tmp_path, False, 32, tmp_path / "cache")
    assert d["class_names"] == ["airplane", "cat"] and d["train_y"].tolist() == [0, 0, 1, 1]
    assert np.allclose(_mean_rgb(d["train_x"][0]), _colour(1), atol=4)


# --------------------------------------------------------------------------- load_real


def _cfg(name, root, num_classes, image_size, **extra):
    node = dict(name=name, root=str(root), download=False, num_classes=num_classes, image_size=image_size,
                channels=3, mean=[0.5] * 3, std=[0.25] * 3, train_subset=None, subset_seed=0,
                val_size=0, val_seed=0)
    return OmegaConf.create(node | extra)


def test_load_real_caches_and_reloads(tmp_path, monkeypatch):
    _write_tiny(tmp_path / "tiny-imagenet-200", per_class=4)
    cfg = _cfg("tinyimagenet", tmp_path, 2, 64)
    first = load_real(cfg, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "datasets").glob("tinyimagenet-64px-*.pt"))) == 1
    monkeypatch.setitem(READERS, "tinyimagenet", lambda **k: pytest.fail("decoded again, cache unused"))
    second = load_real(cfg, tmp_path / "cache")
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, key), getattr(second, key))
    assert second.class_names == first.class_names and second.image_shape == (3, 64, 64)


def test_load_real_imagenet64_is_not_torch_cached(tmp_path):
    _write_imagenet64(tmp_path / "in64", batches=(4,), n_val=2)
    data = load_real(_cfg("imagenet64", tmp_path / "in64", 1000, 64), tmp_path / "cache")
    assert data.train_x.shape == (4, 3, 64, 64) and not (tmp_path / "cache" / "datasets").exists()


def test_train_subset_is_class_balanced(tmp_path):
    _write_tiny(tmp_path / "tiny-imagenet-200", per_class=5)
    data = load_real(_cfg("tinyimagenet", tmp_path, 2, 64, train_subset=6), tmp_path / "cache")
    assert torch.bincount(data.train_y).tolist() == [3, 3] and data.train_x.shape[0] == 6
    assert data.test_x.shape[0] == 4  # the test split is untouched


def test_zca_fit_all_whitens_with_every_train_image_before_the_subset(tmp_path):
    """`dataset.zca_fit=all`: ZCA fit on the whole train pool, then the subset (a reference loader's order)."""
    from conftest import compose_cfg

    from tesla_podd.data.preprocess import build_preprocessor
    from tesla_podd.data.zca import ZCA
    from tesla_podd.expert_store import buffer_key

    rng = np.random.default_rng(3)
    base = tmp_path / "cifar-10-batches-py"
    for i in range(5):
        _pickle(base / f"data_batch_{i + 1}", _cifar_batch(rng, 12, b"labels", 10))
    _pickle(base / "test_batch", _cifar_batch(rng, 4, b"labels", 10))
    _pickle(base / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072})
    cache = tmp_path / "cache"
    cfg = {k: _cfg("cifar10", tmp_path, 10, 16, train_subset=20, zca="kornia", zca_eps=0.1, zca_fit=k)
           for k in ("subset", "all")}
    used, pool = (load_real(cfg[k], cache) for k in ("subset", "all"))
    assert used.zca_fit_x is None and pool.zca_fit_x.shape == (60, 3, 16, 16)
    assert torch.equal(used.train_x, pool.train_x)  # the same subset either way
    x = pool.test_x.float() / 255
    whiten = {k: build_preprocessor(cfg[k], d, cache).zca.transform(x) for k, d in (("subset", used), ("all", pool))}
    direct = ZCA.fit(pool.zca_fit_x.float() / 255, kind="kornia", eps=0.1).transform(x)
    assert torch.allclose(whiten["all"], direct, atol=1e-5)
    assert not torch.allclose(whiten["subset"], direct, atol=1e-2)
    # The experts see other inputs, so the buffer is another one; the default keeps existing buffer names.
    assert "zca_fit" not in buffer_key(compose_cfg("experiment=tesla_cifar10_ipc1_cpu"))
    assert buffer_key(compose_cfg("experiment=tesla_cifar10_ipc1_cpu", "dataset.zca_fit=all"))["zca_fit"] == "all"


# --------------------------------------------------------------------------- real data (shared)


@pytest.mark.realdata
def test_real_tinyimagenet10(tmp_path):
    root = SHARED / "tiny-imagenet-10"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    d = read_tinyimagenet(root, False, 64, tmp_path)
    assert d["train_x"].shape == (5000, 3, 64, 64) and d["test_x"].shape == (500, 3, 64, 64)
    assert len(d["class_names"]) == 10 and d["class_names"][0] == "Egyptian cat"
    assert torch.bincount(d["train_y"]).tolist() == [500] * 10
    assert torch.bincount(d["test_y"]).tolist() == [50] * 10


@pytest.mark.realdata
def test_real_cifar10_sample(tmp_path):
    src = SHARED / "cifar10" / "train"
    if not src.is_dir():
        pytest.skip(f"{src} absent")
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    assert classes[0] == "airplane" and classes[-1] == "truck" and len(classes) == 10
    for cls in classes:  # symlinks to 20 files per class: decoding all 60k would be slow
        (tmp_path / cls).mkdir()
        for f in sorted((src / cls).iterdir())[:20]:
            (tmp_path / cls / f.name).symlink_to(f)
    x, y, names = read_image_folder(tmp_path, 32)
    assert names == classes and x.shape == (200, 3, 32, 32)
    assert y.tolist() == [c for c in range(10) for _ in range(20)]
    mean = x.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.08)
