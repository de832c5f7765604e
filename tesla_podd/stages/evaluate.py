"""Eval stage (ALGORITHMS.md section 8): train `eval.num_models` fresh networks on a synthetic set and
report test accuracy mean +- std (population std, as the references' np.std). Writes eval.json."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from tqdm.auto import tqdm

from .. import atomic
from ..errors import ConfigError, DataError, check_choice
from ..models import build_model, model_tag
from ..pictures import grid_columns, save_image_grid
from ..seeding import generator, seeded_init
from ..synset.file import SynsetFile
from ..training import accuracy, train_classifier

log = logging.getLogger(__name__)


def eval_lr(ecfg, syn: SynsetFile) -> float:
    if str(ecfg.lr) == "learned":
        if syn.lr is None:
            log.info("synthetic set has no learned lr: training with eval.fallback_lr=%s", ecfg.fallback_lr)
            return float(ecfg.fallback_lr)
        return float(syn.lr)
    try:
        return float(ecfg.lr)
    except ValueError:
        raise ConfigError(f"`eval.lr` is {ecfg.lr!r}; use `learned` or a number such as 0.01.") from None


def eval_optimizer(ecfg) -> str:
    name = str(ecfg.get("optimizer", "sgd"))  # configs written before the key existed meant SGD
    check_choice("eval.optimizer", name, ["sgd", "adam"])
    return name


def evaluate_synset(syn: SynsetFile, cfg, ctx, num_models: int, epochs: int, stream: str = "eval",
                    progress: bool = True) -> list[float]:
    """Test accuracies (%) of `num_models` networks trained on `syn` (seeded per model index)."""
    ecfg, real = cfg.eval, ctx.real
    if len(syn.class_names) != real.num_classes:
        raise DataError(f"synthetic set has {len(syn.class_names)} classes but dataset `{real.name}` has "
                        f"{real.num_classes}: evaluate it with the dataset it was distilled from.")
    # The test set must live in the synthetic set's own model space (its ZCA / normalisation).
    test_x = syn.preprocess(real.test_x)
    x, y = syn.images.to(ctx.device), syn.labels.to(ctx.device)
    lr = eval_lr(ecfg, syn)
    augment = ctx.augment if ecfg.augment else (lambda images, gen: images)
    c, h, _ = syn.images.shape[1:]
    optimizer = eval_optimizer(ecfg)
    accs = []
    bar = tqdm(total=num_models * epochs, desc=f"{stream} {num_models}x{epochs}ep", disable=not progress,
               leave=False, mininterval=2.0)
    for i in range(num_models):
        with seeded_init(cfg.seed, stream, "init", i):
            model = build_model(cfg.model, c, real.num_classes, h).to(ctx.device)
        train_classifier(
            model, lambda idx: (x[idx], y[idx]), x.shape[0], epochs=epochs, lr=lr,
            batch_size=int(ecfg.batch_size), momentum=float(ecfg.momentum),
            weight_decay=float(ecfg.weight_decay), augment=augment, gen=generator(cfg.seed, stream, "data", i),
            lr_decay_at_half=bool(ecfg.decay_at_half), progress=bar, optimizer=optimizer,
        )
        accs.append(accuracy(model, test_x, real.test_y))
        log.info("%s model %d/%d: test accuracy %.2f%%", stream, i + 1, num_models, accs[-1])
    bar.close()
    return accs


def run_eval(cfg, ctx) -> dict:
    ecfg = cfg.eval
    path = Path(ecfg.synset_path) if ecfg.synset_path else ctx.run_dir / "synset.pt"
    syn = SynsetFile.load(path)
    accs = evaluate_synset(syn, cfg, ctx, int(ecfg.num_models), int(ecfg.epochs))
    mean = statistics.fmean(accs)
    std = statistics.pstdev(accs)
    c, h, _ = syn.images.shape[1:]
    report = {
        "accs": accs,
        "mean": mean,
        "std": std,
        "num_models": len(accs),
        "model": model_tag(cfg.model, h),
        "protocol": {
            "optimizer": eval_optimizer(ecfg),
            "epochs": int(ecfg.epochs), "lr": eval_lr(ecfg, syn), "batch_size": int(ecfg.batch_size),
            "momentum": float(ecfg.momentum), "weight_decay": float(ecfg.weight_decay),
            "augment": cfg.augment.name if ecfg.augment else "none", "decay_at_half": bool(ecfg.decay_at_half),
            "labels": "soft" if syn.soft_labels else "hard", "preprocess": syn.preprocess.description,
            "reported": "final-epoch test accuracy, population std over models",
        },
        "synset_path": str(path),
        "num_images": int(syn.images.shape[0]),  # patches for a poster
        "dataset": syn.dataset,
        "meta": syn.meta,
    }
    if "poster_hw" in syn.extra:  # PoDD: what the patches were cut from
        report["poster"] = {k: syn.extra[k] for k in ("poster_hw", "class_grid", "patch_grid", "num_patches",
                                                      "effective_ipc", "labels") if k in syn.extra}
    atomic.write_json(report, ctx.run_dir / "eval.json")
    png = save_image_grid(syn.images, syn.preprocess, ctx.run_dir / "eval_synset.png",
                          per_row=grid_columns(syn.images.shape[0], len(syn.class_names)))
    ctx.tracker.log({"eval/acc_mean": mean, "eval/acc_std": std})
    ctx.tracker.log_image("eval/synset", png)
    ctx.tracker.summary({"eval/acc_mean": mean, "eval/acc_std": std, "eval/num_models": len(accs)})
    log.info("eval: %.2f +- %.2f %% over %d models (%s)", mean, std, len(accs), path)
    print(f"eval accuracy: {mean:.2f} +- {std:.2f} % over {len(accs)} models", flush=True)
    return {"eval/acc_mean": mean, "eval/acc_std": std}

