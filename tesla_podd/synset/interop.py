"""Synthetic sets in and out of other codes' layouts.

Import (`import_synset`, eval stage: `eval.synset_path=<file or folder> eval.synset_format=<format>`, options
under `eval.synset_import`):
- `mtt`   MTT / TESLA `distill.py`: `images_best.pt` [N,C,H,W] (model space: normalised, or ZCA-whitened under
          `--zca`), `labels_best.pt` ([N] class ids; TESLA soft-label runs [N, classes]), the learned lr in
          `syn_lr_best.pt` / `syn_lr.pt` / `lr_best.pt` when present (MTT logs it only to W&B: pass `lr`).
- `datm`  DATM: the same layout with `lr_best.pt`.
- `rat_bptt` RaT-BPTT `framework/base.py`: the checkpoint `<name>.pth` ({'model_state_dict':
          {'module.data.weight': [N, C*H*W]}}, 'label_state_dict' {'module.label.weight': [N, classes]} with
          `--train_y`) or the `<name>.h5` file ('data', 'label'; needs h5py). Unlabelled sets are class-major.
- `podd`  PoDD `src/base.py`: `checkpoints/<run>_poster.pt` ([1,C,Hp,Wp] or [C,Hp,Wp], model space) and, with
          learned labels, `<run>_label.pt` (the reference label array). The poster is cut into patches as our
          PoDD does (poster_layout.py), with the dataset's default class/patch grids unless given.
- `tesla_podd` our own synset.pt.
`space` says what the images are: `model` (the dataset's model space: normalised by its mean/std, or whitened
by its ZCA, refit on the dataset as `dataset.zca` says, or given with `zca_from`) or `pixels` ([0,1] RGB,
passed through the preprocessor here). Mismatched shapes, class counts and normalisations stop with one
paragraph naming the file and what was expected.

Export (`export_synset`): `mtt` (images.pt / labels.pt / lr.pt, the layout MTT, DATM and DD-Ranking load),
`folder` (one PNG per image under <index>_<class>/, torchvision ImageFolder order), `safetensors`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from .. import atomic
from ..data.preprocess import Preprocessor
from ..errors import ConfigError, DataError, check_choice
from .file import SynsetFile

IMPORT_FORMATS = ("tesla_podd", "mtt", "datm", "rat_bptt", "podd")
EXPORT_FORMATS = ("mtt", "folder", "safetensors")
SPACES = ("model", "pixels")
LR_FILES = ("syn_lr_best.pt", "syn_lr.pt", "lr_best.pt", "lr.pt")


# ---------------------------------------------------------------------------------------------- import
def import_synset(path, fmt: str, *, preprocess: Preprocessor, class_names: list[str], dataset: str,
                  image_shape: tuple[int, int, int], space: str = "model", lr: float | None = None,
                  softmax_labels: bool = False, check: bool = True, reference_images: torch.Tensor | None = None,
                  poster: dict | None = None) -> SynsetFile:
    """A SynsetFile from another code's saved set (see the module docstring for the layouts).

    `reference_images`: a few real train images as uint8, for the normalisation check (`check`): the
    imported images must have a spread within 16x of the real images' in the same model space."""
    check_choice("eval.synset_format", fmt, IMPORT_FORMATS)
    check_choice("eval.synset_import.space", space, SPACES)
    path = Path(path)
    if fmt == "tesla_podd":
        return SynsetFile.load(path)
    if not path.exists():
        raise DataError(f"`{path}` does not exist: `eval.synset_path` must name the {fmt} file or its folder.")
    extra, n = {}, len(class_names)
    if fmt in ("mtt", "datm"):
        images, labels, file_lr = _read_mtt(path)
    elif fmt == "rat_bptt":
        images, labels, file_lr = _read_rat_bptt(path, image_shape)
    else:
        images, labels, extra = _read_podd(path, image_shape, n, poster or {})
        file_lr = None
    source = f"{fmt} set `{path}`"
    images = _check_images(images, image_shape, source)
    if space == "pixels":
        images = to_model_space(images, preprocess, source)
    if check and reference_images is not None:
        check_normalisation(images, preprocess, reference_images, source)
    labels = _check_labels(labels, images.shape[0], n, source, softmax_labels)
    lr = lr if lr is not None else file_lr
    meta = {"imported_from": str(path), "import_format": fmt, "import_space": space}
    syn = SynsetFile(images=images, labels=labels, lr=None if lr is None else float(lr), preprocess=preprocess,
                     class_names=list(class_names), dataset=dataset, meta=meta, extra=extra)
    syn.check_finite(f"`{path}`")
    return syn


def _load(path: Path, what: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DataError(f"{what} `{path}` is unreadable ({type(exc).__name__}: {exc}).") from None


def _as_tensor(value, path: Path, what: str) -> torch.Tensor:
    if isinstance(value, torch.nn.Parameter):
        value = value.data
    if not isinstance(value, torch.Tensor):
        raise DataError(f"`{path}` should hold the {what} as one tensor, but holds a {type(value).__name__}.")
    return value.detach().cpu()


def _read_mtt(path: Path):
    """(images, labels or None, lr or None) from a folder or the images file; labels/lr files beside it."""
    if path.is_dir():
        names = [n for n in ("images_best.pt", "images.pt") if (path / n).is_file()]
        if not names:
            raise DataError(f"Folder `{path}` has no `images_best.pt` or `images.pt` (MTT/TESLA/DATM layout).")
        images_file = path / names[0]
    else:
        images_file = path
    folder = images_file.parent
    labels_file = folder / images_file.name.replace("images", "labels")
    images = _as_tensor(_load(images_file, "Images file"), images_file, "images")
    labels = _as_tensor(_load(labels_file, "Labels file"), labels_file, "labels") if labels_file.is_file() else None
    lr = None
    for name in LR_FILES:
        if (folder / name).is_file():
            value = _load(folder / name, "Learning-rate file")
            lr = float(value.detach().reshape(-1)[0]) if isinstance(value, torch.Tensor) else float(value)
            break
    return images, labels, lr


def _read_rat_bptt(path: Path, image_shape):
    if path.suffix == ".h5":
        try:
            import h5py
        except ImportError:
            raise DataError(f"`{path}` is a RaT-BPTT .h5 file, which needs the h5py package (not installed); "
                            "import the `.pth` checkpoint saved beside it instead.") from None
        with h5py.File(path, "r") as f:
            data = torch.tensor(f["data"][:])
            labels = torch.tensor(f["label"][:]) if "label" in f else None
    else:
        ckpt = _load(path, "RaT-BPTT checkpoint")
        try:
            data = ckpt["model_state_dict"]["module.data.weight"]
        except (KeyError, TypeError):
            raise DataError(f"`{path}` is not a RaT-BPTT checkpoint: no `model_state_dict['module.data.weight']` "
                            "(framework/base.py saves it as <name>.pth).") from None
        labels = (ckpt.get("label_state_dict") or {}).get("module.label.weight")
        data = _as_tensor(data, path, "images")
    c, h, w = image_shape
    if data.dim() == 2:
        if data.shape[1] != c * h * w:
            raise DataError(f"RaT-BPTT set `{path}` stores {data.shape[1]} values per image, but the dataset's "
                            f"images have {c}x{h}x{w} = {c * h * w}: evaluate it with the dataset it was distilled "
                            "from.")
        data = data.reshape(-1, c, h, w)
    return data.float(), None if labels is None else _as_tensor(labels, path, "labels").float(), None


def _read_podd(path: Path, image_shape, num_classes: int, options: dict):
    from .poster import PosterSet
    from .poster_labels import reference_label_shape
    from .poster_layout import default_class_grid, default_patch_grid

    poster_file = path if path.is_file() else next(iter(sorted(path.glob("*_poster.pt"))), None)
    if poster_file is None:
        raise DataError(f"Folder `{path}` has no `*_poster.pt` (PoDD saves checkpoints/<run>_poster.pt).")
    poster = _as_tensor(_load(poster_file, "PoDD poster"), poster_file, "poster").float()
    if poster.dim() == 4 and poster.shape[0] == 1:
        poster = poster[0]
    c, h, w = image_shape
    if poster.dim() != 3 or poster.shape[0] != c or poster.shape[1] < h or poster.shape[2] < w:
        raise DataError(f"PoDD poster `{poster_file}` has shape {tuple(poster.shape)}; expected [1, {c}, H, W] or "
                        f"[{c}, H, W] with H >= {h} and W >= {w} (the dataset's images are {c}x{h}x{w}).")
    hw = tuple(int(s) for s in poster.shape[1:])
    grid = tuple(options.get("class_grid") or default_class_grid(num_classes))
    patches = tuple(options.get("patch_grid") or default_patch_grid(hw, (h, w), grid))
    order = list(options.get("order") or range(num_classes))
    label_file = poster_file.with_name(poster_file.name.replace("_poster.pt", "_label.pt"))
    learned = label_file.is_file() and label_file != poster_file
    syn = PosterSet(poster, (h, w), grid, patches, order, num_classes,
                    labels="poddl_learned" if learned else "poddl_fixed", label_layout="reference")
    if learned:
        y = _as_tensor(_load(label_file, "PoDD labels"), label_file, "labels").float()
        want = (*reference_label_shape(hw, num_classes), num_classes)
        if tuple(y.shape) != tuple(syn.Y.shape):
            raise DataError(f"PoDD labels `{label_file}` have shape {tuple(y.shape)}, but a {hw[0]}x{hw[1]} poster "
                            f"of {num_classes} classes has a {want} label array in the reference layout.")
        syn.load_state_dict({"poster": poster, "label_grid": y})
    batch = syn.materialize()
    return batch.x, batch.y, syn.file_extra()


def _check_images(images: torch.Tensor, image_shape, source: str) -> torch.Tensor:
    c, h, w = image_shape
    if images.dim() == 4 and tuple(images.shape[1:]) == (h, w, c) and c != h:
        raise DataError(f"Images of {source} are channels-last {tuple(images.shape)}; expected [N, {c}, {h}, {w}] "
                        "(permute them with images.permute(0, 3, 1, 2)).")
    if images.dim() != 4 or tuple(images.shape[1:]) != (c, h, w):
        raise DataError(f"Images of {source} have shape {tuple(images.shape)}, but the dataset's images are "
                        f"[N, {c}, {h}, {w}]: evaluate the set with the dataset (and resolution) it was distilled on.")
    if not images.is_floating_point():
        images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return images.float()


def _check_labels(labels, n_images: int, num_classes: int, source: str, softmax: bool) -> torch.Tensor:
    if labels is None:  # every reference stores its images class-major, ipc per class
        if n_images % num_classes:
            raise DataError(f"{source} has no labels and {n_images} images, not a multiple of the dataset's "
                            f"{num_classes} classes, so the class-major layout cannot be assumed; give its labels "
                            "file.")
        return torch.arange(num_classes).repeat_interleave(n_images // num_classes)
    if labels.shape[0] != n_images:
        raise DataError(f"{source} has {n_images} images but {labels.shape[0]} labels.")
    if labels.dim() == 1 and not labels.is_floating_point():
        labels = labels.long()
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(f"Labels of {source} run from {int(labels.min())} to {int(labels.max())}, but the dataset "
                            f"has {num_classes} classes (0..{num_classes - 1}): a set of another dataset?")
        return labels
    if labels.dim() == 2:
        if labels.shape[1] != num_classes:
            raise DataError(f"Soft labels of {source} have {labels.shape[1]} classes, the dataset {num_classes}.")
        labels = labels.float()
        return torch.softmax(labels, dim=1) if softmax else labels
    raise DataError(f"Labels of {source} have shape {tuple(labels.shape)} ({labels.dtype}); expected [N] class ids "
                    f"or [N, {num_classes}] soft labels.")


def to_model_space(images: torch.Tensor, preprocess: Preprocessor, source: str = "the set") -> torch.Tensor:
    """[0,1] pixels -> model space (the preprocessor's normalisation or ZCA), without uint8 rounding."""
    lo, hi = float(images.min()), float(images.max())
    if lo < -0.01 or hi > 1.01:
        raise DataError(f"Images of {source} range over [{lo:.3g}, {hi:.3g}], not [0, 1] pixels: they look already "
                        "normalised or whitened; import them with `eval.synset_import.space=model`.")
    if preprocess.zca is not None:
        return preprocess.zca.transform(images)
    return (images - preprocess.mean) / preprocess.std


def check_normalisation(images: torch.Tensor, preprocess: Preprocessor, reference_uint8: torch.Tensor,
                        source: str) -> None:
    """Refuse a set whose spread is far from the real images' in this model space (wrong normalisation,
    uint8 values given as floats, a wrong scale). Distilled images drift far: a TESLA IPC-1 set in ZCA space ends
    at ~4.5x the real images' spread, the same set on the full image gradient at ~8x, so only 16x apart fails."""
    real_std = float(preprocess(reference_uint8).std())
    syn_std = float(images.std())
    ratio = syn_std / max(real_std, 1e-12)
    if not 1 / 16 <= ratio <= 16.0:
        hint = ("were they whitened with a ZCA (then set `dataset.zca` as their code did, or give "
                "`eval.synset_import.zca_from`), or saved as [0,1] pixels (`eval.synset_import.space=pixels`)?")
        raise DataError(f"Images of {source} have a spread (std) of {syn_std:.3g}, but real images in this run's "
                        f"model space ({preprocess.description}) have {real_std:.3g}: {hint} "
                        "`eval.synset_import.check=false` skips this check.")


def preprocessor_from(path) -> Preprocessor:
    """`eval.synset_import.zca_from`: the preprocessor (ZCA included) of a tesla-podd synset.pt, or a saved
    Preprocessor / ZCA state (`{"mean", "std", "zca"}` or a ZCA state dict)."""
    from ..data.zca import ZCA

    path = Path(path)
    state = _load(path, "ZCA file") if path.is_file() else None
    if isinstance(state, dict) and "preprocess" in state:
        return Preprocessor.from_state_dict(state["preprocess"])
    if isinstance(state, dict) and {"mean", "std", "zca"} <= set(state):
        return Preprocessor.from_state_dict(state)
    if isinstance(state, dict) and "transform" in state:
        zca = ZCA.from_state_dict(state)
        return Preprocessor([0.0] * 3, [1.0] * 3, zca)
    raise ConfigError(f"`eval.synset_import.zca_from={path}` must name a tesla-podd synset.pt or a saved "
                      "preprocessor/ZCA state (torch file); it is missing or holds neither.")


def import_into_run(path, fmt: str, ctx, preprocess: Preprocessor | None = None, **options) -> SynsetFile:
    """Another code's set in this run's dataset (classes, image shape, model space; the normalisation checked
    against a fixed sample of its train images): the eval stage's `eval.synset_format` and `synset.init_from`."""
    real = ctx.real
    sample = real.train_x[torch.randperm(real.train_x.shape[0], generator=torch.Generator().manual_seed(0))[:256]]
    return import_synset(path, fmt, preprocess=preprocess or ctx.preprocess, class_names=real.class_names,
                         dataset=real.name, image_shape=real.image_shape, reference_images=sample, **options)


def synset_for_eval(ecfg, ctx, path) -> SynsetFile:
    """The eval stage's set: our synset.pt, or another code's (`eval.synset_format`) in this run's dataset."""
    fmt = str(ecfg.get("synset_format") or "tesla_podd")
    if fmt == "tesla_podd":
        return SynsetFile.load(path)
    opts = dict(ecfg.get("synset_import") or {})
    preprocess = preprocessor_from(opts["zca_from"]) if opts.get("zca_from") else None
    poster = {k: opts.get(k) for k in ("class_grid", "patch_grid", "order")}
    return import_into_run(path, fmt, ctx, preprocess, space=str(opts.get("space", "model")), lr=opts.get("lr"),
                           softmax_labels=bool(opts.get("softmax_labels", False)),
                           check=bool(opts.get("check", True)), poster=poster)


# ---------------------------------------------------------------------------------------------- export
def export_synset(syn: SynsetFile, out_dir, formats=EXPORT_FORMATS) -> dict[str, Path]:
    """Write `syn` in each format under `out_dir` (created; a format's files appear complete or not at all)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in formats:
        check_choice("export format", fmt, EXPORT_FORMATS)
        written[fmt] = {"mtt": _export_mtt, "folder": _export_folder, "safetensors": _export_safetensors}[fmt](syn, out)
    return written


def _export_mtt(syn: SynsetFile, out: Path) -> Path:
    atomic.save_torch(syn.images.detach().cpu().clone(), out / "images.pt")
    atomic.save_torch(syn.labels.detach().cpu().clone(), out / "labels.pt")
    if syn.lr is not None:  # MTT/DATM keep the learned lr as a 0-d tensor (float64 here: exact round trips)
        atomic.save_torch(torch.tensor(float(syn.lr), dtype=torch.float64), out / "lr.pt")
    atomic.write_json(_description(syn), out / "synset.json")
    return out / "images.pt"


def _class_dir(i: int, name: str, n: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"
    return f"{i:0{len(str(n - 1))}d}_{safe}"  # zero-padded: sorted folder order = class order


def _export_folder(syn: SynsetFile, out: Path) -> Path:
    from ..pictures import save_png

    final = out / "images"
    tmp = out / "images.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    pixels = syn.preprocess.to_pixels(syn.images)
    classes = syn.labels.argmax(dim=1) if syn.soft_labels else syn.labels
    n = len(syn.class_names)
    counts = [0] * n
    for img, c in zip(pixels, classes.tolist()):
        folder = tmp / _class_dir(c, syn.class_names[c], n)
        folder.mkdir(parents=True, exist_ok=True)
        save_png(img, folder / f"{counts[c]:05d}.png")
        counts[c] += 1
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def _export_safetensors(syn: SynsetFile, out: Path) -> Path:
    try:
        from safetensors.torch import save
    except ImportError:
        raise DataError("Export format `safetensors` needs the safetensors package (`pip install safetensors`); "
                        "the other formats (`mtt`, `folder`) need nothing extra.") from None
    tensors = {"images": syn.images.detach().cpu().contiguous().float(),
               "labels": syn.labels.detach().cpu().contiguous()}
    if syn.lr is not None:
        tensors["lr"] = torch.tensor([float(syn.lr)], dtype=torch.float64)
    if syn.preprocess.zca is not None:  # the whitening travels with the set
        tensors["zca_mean"] = syn.preprocess.zca.mean.float().contiguous()
        tensors["zca_transform"] = syn.preprocess.zca.transform_matrix.float().contiguous()
    meta = {k: json.dumps(v) for k, v in _description(syn).items()}
    return atomic.write_bytes(save(tensors, metadata=meta), out / "synset.safetensors")


def _description(syn: SynsetFile) -> dict:
    p = syn.preprocess
    return {"dataset": syn.dataset, "class_names": list(syn.class_names), "num_images": int(syn.images.shape[0]),
            "labels": "soft" if syn.soft_labels else "hard", "lr": syn.lr,
            "space": p.description, "mean": p.mean.flatten().tolist(), "std": p.std.flatten().tolist(),
            "zca": None if p.zca is None else p.zca.kind}
