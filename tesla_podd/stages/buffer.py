"""Buffer stage (ALGORITHMS.md section 1): train experts on real data, save parameters every epoch.

Resumable at epoch granularity: finished experts are skipped, the expert in progress continues from
`partial_expert.pt`. Killing the process at any moment loses at most the current epoch."""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from .. import atomic
from ..buffers import open_store
from ..errors import check_choice, check_positive
from ..models import FlatModel, build_model
from ..seeding import generator, seeded_init
from ..training import accuracy, train_classifier

log = logging.getLogger(__name__)


def run_buffer(cfg, ctx) -> dict:
    b = cfg.buffer
    check_positive("buffer.num_experts", b.num_experts, integer=True)
    check_positive("buffer.train_epochs", b.train_epochs, integer=True)
    check_choice("buffer.amp", b.amp, ["none", "bf16"])
    store = open_store(cfg)
    real, pre, device = ctx.real, ctx.preprocess, ctx.device
    c, h, _ = real.image_shape
    flat = FlatModel(build_model(cfg.model, c, real.num_classes, h))
    manifest = store.read_manifest() or store.new_manifest(flat.num_params)
    start = manifest["num_experts"]
    if start >= b.num_experts:
        log.info("buffer %s already holds %d experts: nothing to train", store.dir, start)
        return {"buffer/num_experts": start, "buffer/dir": str(store.dir)}
    log.info("training experts %d..%d into %s", start, b.num_experts - 1, store.dir)

    # Train data in model space: kept as floats when small, else preprocessed batch by batch.
    small = real.train_x.numel() * 4 <= 4 * 2**30
    train_x = pre(real.train_x).to(device) if small else real.train_x
    train_y = real.train_y.to(device)

    def fetch(idx):
        if small:
            return train_x[idx.to(device)], train_y[idx.to(device)]
        return pre(train_x[idx].to(device)), train_y[idx.to(device)]

    test_x, test_y = ctx.test_set
    augment = ctx.augment if b.augment else (lambda x, gen: x)
    epochs = int(b.train_epochs)
    bar = tqdm(total=(b.num_experts - start) * epochs, desc="experts", mininterval=2.0)
    for k in range(start, int(b.num_experts)):
        with seeded_init(b.seed, "expert", k):
            model = build_model(cfg.model, c, real.num_classes, h).to(device)
        gen = generator(b.seed, "expert-data", k)
        trajectory = [flat.flatten(model).cpu()]
        first_epoch, opt_state = 0, None
        partial = _load_partial(store, k)
        if partial is not None:  # continue the expert a killed run left half-done
            flat.load_(partial["trajectory"][-1].to(device), model)
            trajectory = list(partial["trajectory"])
            first_epoch, opt_state = partial["epochs_done"], partial["optimizer"]
            gen.set_state(partial["gen_state"])
            bar.update(first_epoch)
            log.info("expert %d: resuming after epoch %d", k, first_epoch)

        def save_epoch(epoch, m, opt, k=k, trajectory=trajectory, gen=gen):
            trajectory.append(flat.flatten(m).cpu())
            atomic.save_torch({"expert": k, "epochs_done": epoch + 1, "trajectory": torch.stack(trajectory),
                               "optimizer": opt.state_dict(), "gen_state": gen.get_state()}, store.partial_path)

        train_classifier(
            model, fetch, real.train_y.numel(), epochs=epochs, lr=float(b.lr_teacher),
            batch_size=int(b.batch_size), momentum=float(b.momentum), weight_decay=float(b.weight_decay),
            augment=augment, gen=gen, amp=b.amp, on_epoch_end=save_epoch, start_epoch=first_epoch,
            optimizer_state=opt_state, progress=bar,
        )
        acc = accuracy(model, test_x, test_y)
        manifest = store.append_expert(manifest, torch.stack(trajectory), acc, int(b.experts_per_shard))
        store.partial_path.unlink(missing_ok=True)
        ctx.tracker.log({"buffer/expert_acc": acc, "buffer/expert": k})
        log.info("expert %d: test accuracy %.2f%% after %d epochs", k, acc, epochs)
    bar.close()
    accs = manifest["expert_test_acc"]
    return {"buffer/num_experts": manifest["num_experts"], "buffer/expert_acc_mean": sum(accs) / len(accs),
            "buffer/dir": str(store.dir)}


def _load_partial(store, k: int):
    if not store.partial_path.exists():
        return None
    try:
        p = torch.load(store.partial_path, map_location="cpu", weights_only=False)
    except Exception:
        log.warning("ignoring unreadable %s", store.partial_path)
        return None
    return p if p.get("expert") == k else None
