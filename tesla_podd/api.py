"""A Python API for notebooks: the same runner as `python -m tesla_podd.train`, without a command line.

    from tesla_podd import api
    syn = api.load_synset("outputs/run/synset.pt")                        # ours
    syn = api.load_synset("logged_files/CIFAR10/run", "mtt", "dataset=cifar10")  # MTT/TESLA's images_best.pt
    report = api.evaluate(syn.images, syn.labels, syn.lr, dataset="cifar10", protocol="default")
    results = api.distill("experiment=tesla_cifar10_ipc1_cpu")
    api.export(syn, "exported/", formats=("mtt", "folder", "safetensors"))

Every function takes Hydra overrides (strings, as on the command line); runs go to `run_dir` (a fresh folder
under `outputs/api/` when not given), W&B is off unless an override turns it on. docs/interop.md has a runnable
example."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from .data.preprocess import Preprocessor
from .synset.file import SynsetFile
from .synset.interop import EXPORT_FORMATS, export_synset, synset_for_eval, to_model_space

PROTOCOLS = ("default", "adam", "cross_arch", "ddranking")  # conf/eval/<name>.yaml

__all__ = ["compose", "load_synset", "evaluate", "distill", "export", "context", "PROTOCOLS"]


def _config_dir() -> Path:
    try:
        from .conf_dir import config_dir

        return config_dir()
    except ImportError:
        return Path(__file__).resolve().parent.parent / "conf"


def compose(*overrides: str) -> DictConfig:
    """`conf/train.yaml` composed with `overrides`, as the command line would (W&B off unless overridden)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(_config_dir())):
        cfg = hydra_compose("train", overrides=["wandb=off", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # some keys resolve ${hydra:...}
    return cfg


def _run_dir(run_dir, kind: str) -> Path:
    if run_dir is not None:
        return Path(run_dir)
    root = Path("outputs") / "api"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=root))


def context(*overrides: str, run_dir=None):
    """A run context (dataset, preprocessor, device) for `overrides`, e.g. `api.context("dataset=cifar10").real`."""
    from .stages.context import RunContext, resolve_device
    from .tracking import Tracker

    cfg = compose(*overrides)
    rd = _run_dir(run_dir, "context")
    return RunContext(cfg=cfg, run_dir=rd, device=resolve_device(cfg.device), tracker=Tracker.start(cfg, rd, []))


def load_synset(path, format: str = "tesla_podd", *overrides: str, **import_options) -> SynsetFile:  # noqa: A002
    """A synthetic set from `path`: our synset.pt, or another code's (`format`: mtt, datm, rat_bptt, podd) read
    in the dataset the overrides name (`"dataset=cifar10"`); `import_options` as `eval.synset_import`
    (space="pixels", zca_from=..., lr=..., softmax_labels=True, check=False, class_grid=[r, c], ...)."""
    if format == "tesla_podd":
        return SynsetFile.load(path)
    ctx = context(*overrides)
    ecfg = {"synset_format": format, "synset_import": {**dict(ctx.cfg.eval.synset_import), **import_options}}
    return synset_for_eval(ecfg, ctx, path)


def evaluate(images: torch.Tensor, labels: torch.Tensor | None = None, lr: float | None = None, *,
             dataset: str = "cifar10", protocol: str = "default", overrides=(), space: str = "model",
             preprocess: Preprocessor | None = None, run_dir=None) -> dict:
    """Train the protocol's networks on (images, labels) and return eval.json as a dict.

    images: [N, C, H, W] in the dataset's model space (`space="model"`, normalised / whitened as the
    dataset's config says, or by `preprocess`) or [0, 1] pixels (`space="pixels"`). labels: [N] class ids,
    [N, classes] soft labels, or None (class-major). lr: the learned lr (None: eval.fallback_lr, or the
    protocol's fixed lr). protocol: conf/eval/<name>.yaml (default = MTT/TESLA, adam = RaT-BPTT/PoDD,
    cross_arch, ddranking)."""
    from .errors import check_choice
    from .train import run

    check_choice("protocol", protocol, PROTOCOLS)
    rd = _run_dir(run_dir, "evaluate")
    base = [f"dataset={dataset}", f"eval={protocol}", *overrides]
    ctx = context(*base, run_dir=rd)
    pre = preprocess or ctx.preprocess
    images = images.detach().cpu().float()
    if space == "pixels":
        images = to_model_space(images, pre, "the images given to api.evaluate")
    syn = _as_synset(images, labels, lr, pre, ctx)
    path = syn.save(rd / "input_synset.pt")
    run(compose(*base, "stages=[eval]", f"eval.synset_path={path}"), run_dir=rd)
    return json.loads((rd / "eval.json").read_text())


def _as_synset(images, labels, lr, preprocess, ctx) -> SynsetFile:
    """The arrays as a SynsetFile of the context's dataset (shapes and classes checked as for imports)."""
    from .synset.interop import _check_images, _check_labels

    real = ctx.real
    images = _check_images(images, real.image_shape, "the images given to api.evaluate")
    labels = _check_labels(None if labels is None else labels.detach().cpu(), images.shape[0], real.num_classes,
                           "the set given to api.evaluate", False)
    return SynsetFile(images=images, labels=labels, lr=None if lr is None else float(lr), preprocess=preprocess,
                      class_names=list(real.class_names), dataset=real.name, meta={"source": "api.evaluate"})


def distill(*overrides: str, run_dir=None) -> dict:
    """Run the configured stages (buffer/distill/eval) for `overrides`; returns results.json as a dict."""
    from .train import run

    rd = _run_dir(run_dir, "distill")
    run(compose(*overrides), run_dir=rd)
    return json.loads((rd / "results.json").read_text())


def export(syn: SynsetFile, out_dir, formats=EXPORT_FORMATS) -> dict:
    """Write `syn` as MTT-layout tensors (images.pt, labels.pt, lr.pt), a per-class PNG folder and/or
    safetensors under `out_dir`; returns {format: path}."""
    return export_synset(syn, out_dir, formats)
