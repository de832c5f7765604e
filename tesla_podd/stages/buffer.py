"""Buffer stage (ALGORITHMS.md section 1): train experts on real data, save parameters every epoch.

One file per expert; this job builds the experts `buffer.experts` / `buffer.worker` of `buffer.num_workers`
select (all by default), skipping those already on disk and those another job is building right now
(it waits for them at the end, and takes over if that job died). Resumable at epoch granularity: expert k
continues from `partial_expert_<k>.pt`. Killing the process at any moment loses at most the current epoch."""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from .. import atomic
from ..classifier import accuracy, train_classifier
from ..errors import check_choice, check_positive
from ..expert_store import DTYPES, check_finite, open_store, select_experts
from ..models import FlatModel, build_model
from ..seeding import generator, seeded_init
from ..transfer import to_device, to_device_all

log = logging.getLogger(__name__)


def kept_epochs(b) -> int:
    """Epochs stored per expert: `buffer.keep_epochs` (what the recipe can reach) or all of them."""
    if b.keep_epochs is None:
        return int(b.train_epochs)
    check_positive("buffer.keep_epochs", b.keep_epochs, integer=True)
    return min(int(b.keep_epochs), int(b.train_epochs))


def run_buffer(cfg, ctx) -> dict:
    b = cfg.buffer
    check_positive("buffer.num_experts", b.num_experts, integer=True)
    check_positive("buffer.train_epochs", b.train_epochs, integer=True)
    check_choice("buffer.amp", b.amp, ["none", "bf16"])
    check_choice("buffer.dtype", b.dtype, list(DTYPES))
    mine = select_experts(int(b.num_experts), b.experts, int(b.worker), int(b.num_workers))
    epochs = kept_epochs(b)
    store = open_store(cfg)
    if b.get("import_from"):
        return _import_buffer(cfg, ctx, store, epochs)
    if b.repair:
        m = store.repair()
        log.info("buffer %s repaired: %d valid experts on disk", store.dir, m["num_experts"])
    else:
        store.read_manifest()  # refuses a folder of other settings or format before any work
    todo = [k for k in mine if not store.has_expert(k, epochs)]
    log.info("buffer %s: this job's experts %s, %d to train", store.dir, _short(mine), len(todo))
    trainer = _ExpertTrainer(cfg, ctx, store, epochs, len(todo)) if todo else None
    built, deferred = [], []
    for k in todo:
        with store.lock(f"expert_{k}", blocking=False) as held:
            if not held:
                deferred.append(k)  # another job is on it; come back at the end
                continue
            if not store.has_expert(k, epochs):  # it may have finished between the scan and the lock
                trainer.train(k)
                built.append(k)
    for k in deferred:
        with store.lock(f"expert_{k}"):  # wait for that job; if it died, its partial file is resumed here
            if store.has_expert(k, epochs):
                log.info("expert %d: built by another job", k)
            else:
                trainer.train(k)
                built.append(k)
    if trainer is not None:
        trainer.close()
    m = store.refresh_manifest()
    accs = [e["test_acc"] for e in m["experts"].values()]
    print(f"buffer {store.dir}: {m['num_experts']} of {b.num_experts} experts on disk, {len(built)} trained by this "
          "job", flush=True)
    return {"buffer/num_experts": m["num_experts"], "buffer/built": len(built),
            "buffer/expert_acc_mean": sum(accs) / len(accs) if accs else float("nan"), "buffer/dir": str(store.dir)}


class _ExpertTrainer:
    """Trains expert k as a pure function of (buffer key, k): init and data order seeded by k alone."""

    def __init__(self, cfg, ctx, store, epochs: int, num_experts: int):
        self.cfg, self.ctx, self.store, self.epochs = cfg, ctx, store, epochs
        b, real, pre, device = cfg.buffer, ctx.real, ctx.preprocess, ctx.device
        self.shape = real.image_shape
        self.flat = FlatModel(build_model(cfg.model, self.shape[0], real.num_classes, self.shape[1]))
        # Train data in model space: kept as floats when small, else preprocessed batch by batch.
        small = real.train_x.numel() * 4 <= 4 * 2**30
        train_x = pre(real.train_x).to(device) if small else real.train_x
        train_y = real.train_y.to(device)

        def fetch(idx):  # CPU batch indices (seeded draws) reach the device without a sync (transfer.py)
            if small:
                idx = to_device(idx, device)
                return train_x[idx], train_y[idx]
            x, idx = to_device_all([train_x[idx], idx], device)
            return pre(x), train_y[idx]

        self.fetch = fetch
        self.augment = ctx.augment if b.augment else (lambda x, gen: x)
        self.bar = tqdm(total=num_experts * epochs, desc="expert epochs", mininterval=2.0)

    def train(self, k: int) -> None:
        cfg, store, b, device = self.cfg, self.store, self.cfg.buffer, self.ctx.device
        c, h, _ = self.shape
        with seeded_init(b.seed, "expert", k):
            model = build_model(cfg.model, c, self.ctx.real.num_classes, h).to(device)
        gen = generator(b.seed, "expert-data", k)
        for name in (store.expert_path(k).name, store.partial_path(k).name):  # we hold expert k's lock
            store.clean_orphans(name)
        trajectory = [self.flat.flatten(model).cpu()]
        first_epoch, opt_state = 0, None
        partial = _load_partial(store, k)
        if partial is not None:  # continue the expert a killed job left half-done
            self.flat.load_(partial["trajectory"][-1].to(device), model)
            trajectory = list(partial["trajectory"])
            first_epoch, opt_state = partial["epochs_done"], partial["optimizer"]
            gen.set_state(partial["gen_state"])
            self.bar.update(first_epoch)  # the bar counts this job's epochs, resumed ones included
            log.info("expert %d: resuming after epoch %d", k, first_epoch)

        def save_epoch(epoch, m, opt):
            trajectory.append(self.flat.flatten(m).cpu())
            if not torch.isfinite(trajectory[-1]).all():
                check_finite(torch.stack(trajectory), k, float(b.lr_teacher))  # raises: never saved
            atomic.save_torch({"expert": k, "epochs_done": epoch + 1, "trajectory": torch.stack(trajectory),
                               "optimizer": opt.state_dict(), "gen_state": gen.get_state()}, store.partial_path(k))

        train_classifier(
            model, self.fetch, self.ctx.real.train_y.numel(), epochs=self.epochs, lr=float(b.lr_teacher),
            batch_size=int(b.batch_size), momentum=float(b.momentum), weight_decay=float(b.weight_decay),
            augment=self.augment, gen=gen, amp=b.amp, on_epoch_end=save_epoch, start_epoch=first_epoch,
            optimizer_state=opt_state, progress=self.bar,
            channels_last=bool(b.channels_last), compile=bool(b.compile),
        )
        stacked = torch.stack(trajectory)
        check_finite(stacked, k, float(b.lr_teacher))
        acc = accuracy(model, *self.ctx.test_set)
        store.save_expert(k, stacked, acc, b.dtype)
        store.partial_path(k).unlink(missing_ok=True)
        store.refresh_manifest()
        self.ctx.tracker.log({"buffer/expert_acc": acc, "buffer/expert": k})
        log.info("expert %d: test accuracy %.2f%% after %d epochs", k, acc, self.epochs)

    def close(self) -> None:
        self.bar.close()


def _import_buffer(cfg, ctx, store, epochs: int) -> dict:
    """`buffer.import_from`: experts from MTT/TESLA replay_buffer files instead of training (buffer_import.py)."""
    from ..buffer_import import import_experts, source_files

    b = cfg.buffer
    if b.repair:
        store.repair()
    else:
        store.read_manifest()
    if not all(store.has_expert(k, epochs) for k in range(int(b.num_experts))):
        c, h, _ = ctx.real.image_shape
        module = build_model(cfg.model, c, ctx.real.num_classes, h).to(ctx.device)
        import_experts(store, source_files(b.import_from), FlatModel(module), module, ctx.test_set, epochs, b.dtype,
                       need=int(b.num_experts))
    m = store.refresh_manifest()
    accs = [e["test_acc"] for e in m["experts"].values()]
    print(f"buffer {store.dir}: {m['num_experts']} imported experts (test accuracy "
          f"{', '.join(f'{a:.2f}%' for a in accs)})", flush=True)
    return {"buffer/num_experts": m["num_experts"], "buffer/built": 0,
            "buffer/expert_acc_mean": sum(accs) / len(accs), "buffer/dir": str(store.dir)}


def _short(ks: list[int]) -> str:
    return str(ks) if len(ks) <= 8 else f"[{ks[0]}, {ks[1]}, ..., {ks[-1]}] ({len(ks)})"


def _load_partial(store, k: int):
    path = store.partial_path(k)
    if not path.exists():
        return None
    try:
        p = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        log.warning("ignoring unreadable %s", path)
        return None
    return p if p.get("expert") == k else None
