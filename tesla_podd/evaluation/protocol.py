"""The evaluation protocol as plain numbers: how long, which optimiser, when the lr decays, where we measure.

Two reference protocols (FIDELITY.md F7, F13):
- MTT/TESLA `evaluate_synset` (schedule `mtt`, unit `epoch`): `range(Epoch+1)` = epochs+1 shuffled passes of
  batch 256, SGD momentum 0.9 / wd 5e-4; after the pass with index Epoch//2+1 the lr is multiplied by 0.1 and
  the optimiser is created anew (momentum buffers dropped). With Epoch = 1000: 502 passes at lr, 499 at lr/10.
- RaT-BPTT/PoDD `test()` (unit `step`, schedule `constant`): Adam, each step one random batch of the inner
  batch size, test accuracy measured at cumulative step counts (300/600/1000/2000|3000).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

from ..errors import ConfigError, check_choice
from ..synset.sampling import BATCH_SAMPLINGS

log = logging.getLogger(__name__)

SCHEDULES = ("mtt", "half", "constant")
UNITS = ("epoch", "step")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Protocol:
    optimizer: str  # sgd | adam
    lr: float
    momentum: float  # SGD only
    weight_decay: float
    batch_size: int  # images (or patches) per optimiser step
    length_unit: str  # epoch: shuffled passes over the set | step: one random batch per step
    length: int  # total units trained
    schedule: str  # mtt | half | constant
    decay_after: int | None  # units completed when the lr drops x0.1 (None: never)
    recreate_optimizer: bool  # at the decay: a fresh optimiser (MTT) or the same one (momentum kept)
    eval_at: tuple[int, ...]  # lengths (ascending, the final one included) where accuracies are measured
    augment: str  # augmentation name (or "none")
    # step unit: uniform (batch_size items without replacement) | per_class (batch_size // classes items of
    # every class, the RaT-BPTT reference's `subsample`)
    batch_sampling: str = "uniform"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["eval_at"] = list(self.eval_at)
        if self.batch_sampling == "uniform":  # unit files stored before the option keep their plan
            del d["batch_sampling"]
        return d


def schedule_lengths(schedule: str, epochs: int) -> tuple[int, int | None, bool]:
    """(units trained, units done at the decay, re-create the optimiser) for a schedule and `epochs`."""
    check_choice("eval.schedule", schedule, SCHEDULES)
    if schedule == "mtt":  # for ep in range(Epoch+1): train; if ep == Epoch//2+1: lr *= 0.1, new optimiser
        return epochs + 1, epochs // 2 + 2, True
    if schedule == "half":  # the project's first schedule: x0.1 before pass epochs//2, momentum kept
        return epochs, epochs // 2, False
    return epochs, None, False


def learned_or_fixed_lr(ecfg, syn_lr: float | None) -> float:
    if str(ecfg.lr) == "learned":
        if syn_lr is None:
            log.info("synthetic set has no learned lr: training with eval.fallback_lr=%s", ecfg.fallback_lr)
            return float(ecfg.fallback_lr)
        return float(syn_lr)
    try:
        return float(ecfg.lr)
    except ValueError:
        raise ConfigError(f"`eval.lr` is {ecfg.lr!r}; use `learned` or a number such as 0.01.") from None


def resolve_protocol(ecfg, syn_lr: float | None, num_items: int, augment_name: str,
                     epochs: int | None = None, eval_at: list | None = None) -> Protocol:
    """The protocol for a set of `num_items` images; `epochs`/`eval_at` override the config (quick evals)."""
    unit = str(ecfg.length_unit)
    check_choice("eval.length_unit", unit, UNITS)
    optimizer = str(ecfg.optimizer)
    check_choice("eval.optimizer", optimizer, OPTIMIZERS)
    base = int(epochs if epochs is not None else (ecfg.epochs if unit == "epoch" else ecfg.steps))
    if base < 1:
        raise ConfigError(f"`eval.{'epochs' if unit == 'epoch' else 'steps'}` is {base}; it must be >= 1.")
    length, decay_after, recreate = schedule_lengths(str(ecfg.schedule), base)
    if decay_after is not None and decay_after >= length:
        decay_after = None  # too short to reach the decay
    batch = num_items if ecfg.batch_size is None else int(ecfg.batch_size)
    if batch < 1:
        raise ConfigError(f"`eval.batch_size` is {ecfg.batch_size}; use a positive number or null (the whole set).")
    if _batch_sampling(ecfg) == "per_class" and unit != "step":
        raise ConfigError("`eval.batch_sampling=per_class` draws one batch per optimiser step, so it needs "
                          "`eval.length_unit=step`; with `epoch` every pass already visits every image.")
    points = list(ecfg.eval_at or []) if eval_at is None else list(eval_at)
    if any(not isinstance(p, int) or p < 1 for p in points):
        raise ConfigError(f"`eval.eval_at` is {points}: every entry must be a whole number of {unit}s >= 1 "
                          "(the final length is always evaluated).")
    if any(p >= base for p in points):  # e.g. the default list under a short preset: measure what exists
        # >= base: the final measurement stands for the configured length (MTT's schedule trains base + 1)
        log.info("eval.eval_at %s: dropping lengths from the configured length %d on", points, base)
        points = [p for p in points if p < base]
    return Protocol(
        optimizer=optimizer, lr=learned_or_fixed_lr(ecfg, syn_lr), momentum=float(ecfg.momentum),
        weight_decay=float(ecfg.weight_decay), batch_size=min(batch, num_items),
        length_unit=unit, length=length, schedule=str(ecfg.schedule), decay_after=decay_after,
        recreate_optimizer=recreate, eval_at=tuple(sorted({*points, length})),
        augment=augment_name if bool(ecfg.augment) else "none",
        batch_sampling=_batch_sampling(ecfg),
    )


def _batch_sampling(ecfg) -> str:
    value = str(ecfg.get("batch_sampling", "uniform"))
    check_choice("eval.batch_sampling", value, BATCH_SAMPLINGS)
    return value


def lr_overrides(ecfg) -> dict[str, float]:
    """`eval.lr_by_model` keyed by registry name (MTT spellings accepted): architectures trained at a fixed lr
    whatever `eval.lr` says (DC-BENCH trains every cross-architecture network at 0.01, evaluator.py)."""
    from ..models import canonical_name

    out = {}
    for name, lr in dict(ecfg.get("lr_by_model") or {}).items():
        try:
            value = float(lr)
        except (TypeError, ValueError):
            value = float("nan")
        if not value > 0:
            raise ConfigError(f"`eval.lr_by_model.{name}` is {lr!r}; give a learning rate > 0, e.g. "
                              "`eval.lr_by_model={resnet18: 0.01, vit: 0.01}`.")
        out[canonical_name(str(name), f"eval.lr_by_model.{name}")] = value
    return out


def protocols_by_arch(base: Protocol, archs, ecfg) -> dict[str, Protocol]:
    """{arch: protocol}: `base` for every architecture, with the lr of `eval.lr_by_model` where it names one."""
    over = lr_overrides(ecfg)
    return {a: replace(base, lr=over[a]) if a in over else base for a in archs}
