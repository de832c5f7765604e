"""Run evaluation units: build each architecture's networks (seeded per unit), train them stacked when the
architecture allows it, and return one result per unit. Used by the eval stage and by distillation's quick
evaluations (through `stages.evaluate.evaluate_synset`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..lanes import side_by_side_threads
from ..models import build_model, canonical_name, model_tag
from ..seeding import generator, seeded_init
from ..transfer import to_device_all
from .protocol import Protocol
from .selection import per_model
from .trainer import SingleLearner, StackedLearner, can_stack, train_networks
from .units import Unit

log = logging.getLogger(__name__)


def architectures(cfg) -> dict[str, object]:
    """{name: what build_model takes}: `eval.models` (names) or, when null, the distillation's `model` node.
    A listed name equal to the distillation's model uses its config node (its width/depth/norm overrides)."""
    own = canonical_name(cfg.model.name)
    names = [own] if cfg.eval.models is None else [canonical_name(n, "eval.models") for n in cfg.eval.models]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"`eval.models` is {list(cfg.eval.models or [])}: give a non-empty list of distinct "
                          "architecture names (e.g. [convnet, resnet18_ap, vgg11, alexnet, vit]) or null.")
    return {n: (cfg.model if n == own else n) for n in names}


def check_architectures(specs: dict, syn, num_classes: int) -> None:
    """Build one network of each architecture before any training, so a misfit (e.g. a resolution an
    architecture cannot take) stops the stage at once instead of after hours of other units."""
    c, h = syn.images.shape[1], syn.images.shape[2]
    for spec in specs.values():
        with seeded_init(0, "eval-check"):
            build_model(spec, c, num_classes, h, key="eval.models")


def stackable(model: nn.Module) -> bool:
    """Stacked (vmap) training needs no running statistics and no dropout (whose draws would differ)."""
    return can_stack(model) and not _dropout(model)


def _networks(arch_spec, units: Sequence[Unit], syn, num_classes: int, seed: int, stream: str,
              device: torch.device) -> list[nn.Module]:
    c, h = syn.images.shape[1], syn.images.shape[2]
    nets = []
    for u in units:
        with seeded_init(seed, stream, "init", u.arch, u.index):
            nets.append(build_model(arch_spec, c, num_classes, h, key="eval.models").to(device))
    return nets


def run_units(units: Sequence[Unit], arch_specs: dict, syn, proto: Protocol | dict[str, Protocol], augment,
              measure: dict,
              seed: int, stream: str, device: torch.device, batched: bool, num_classes: int,
              progress: bool = True, lanes: int = 1,
              on_done: Callable[[Unit, dict], None] | None = None) -> dict[Unit, dict]:
    """Train and measure every unit; stacked per architecture when `batched` and the architecture allows,
    else `lanes` networks side by side (CPU threads, one intra-op thread each) where none uses dropout.
    `on_done(unit, result)` runs as soon as a unit's network is trained (the eval stage stores it then, so a
    job killed mid-way keeps the units it finished). `proto`: one protocol, or one per architecture
    (`eval.lr_by_model`)."""
    protos = proto if isinstance(proto, dict) else {u.arch: proto for u in units}
    x, y = syn.images.detach().to(device), syn.labels.detach().to(device)
    # The measured sets (test, val) go to the device once and stay there for every unit and every measurement.
    measure = {k: None if v is None else tuple(to_device_all(v, device)) for k, v in measure.items()}
    results: dict[Unit, dict] = {}
    bar = tqdm(total=sum(protos[u.arch].length for u in units), desc=f"{stream} {len(units)} nets",
               disable=not progress, leave=False, mininterval=2.0)
    for arch in dict.fromkeys(u.arch for u in units):
        group = [u for u in units if u.arch == arch]
        nets = _networks(arch_specs[arch], group, syn, num_classes, seed, stream, device)
        tag = model_tag(arch_specs[arch], int(syn.images.shape[2]))
        stacked = batched and len(nets) > 1 and stackable(nets[0])
        batches = [group] if stacked else [[u] for u in group]
        side_by_side = not stacked and lanes > 1 and len(group) > 1 and device.type == "cpu" and not _dropout(nets[0])
        how = "stacked" if stacked else "side by side" if side_by_side else "alone"

        def finished(part, curves, seconds, arch=arch, tag=tag, how=how):
            for u, curve in zip(part, curves):
                results[u] = {"arch": arch, "index": u.index, "model": tag, "curve": curve, **per_model(curve),
                              "trained": how, "seconds": seconds}
                log.info("%s %s model %d: final %.2f%% (best_val %s, best_test %.2f%%)", stream, arch, u.index,
                         results[u]["final"], _fmt(results[u]["best_val"]), results[u]["best_test"])
                if on_done is not None:
                    on_done(u, results[u])

        train = partial(_train_part, nets=dict(zip(group, nets)), stacked=stacked, arch=arch, x=x, y=y,
                        proto=protos[arch],
                        augment=augment, measure=measure, seed=seed, stream=stream, device=device, bar=bar,
                        finished=finished)
        if side_by_side:  # no dropout: nothing draws from the global RNG, which the threads would share
            side_by_side_threads(partial(train, seeded=False), batches, workers_for(len(batches), lanes))
        else:
            for part in batches:
                train(part)
    bar.close()
    return {u: results[u] for u in units}


def _train_part(part, *, nets, stacked, arch, x, y, proto, augment, measure, seed, stream, device, bar, finished,
                seeded: bool = True) -> None:
    """Train one learner (one network, or the part's networks stacked), then `finished(part, curves, seconds
    per network)`."""
    start = time.perf_counter()
    gens = [generator(seed, stream, "data", u.index) for u in part]
    learner = StackedLearner([nets[u] for u in part]) if stacked else SingleLearner(nets[part[0]])
    # Dropout draws from the global RNG: seed it per unit so a unit's result never depends on what ran before it
    # in this process (parallel jobs merge to the serial result). Side by side (seeded=False) it is left alone.
    with seeded_init(seed, stream, "train", arch, part[0].index) if seeded else nullcontext():
        curves = train_networks(learner, x, y, proto, augment, gens, measure, device, progress=bar)
    finished(part, curves, (time.perf_counter() - start) / len(part))


def workers_for(networks: int, lanes: int) -> int:
    """Threads for `networks` equal jobs on `lanes` cores: `lanes`, unless they do not divide evenly; then all
    at once (at most 16), one intra-op thread each, so no core idles through a last, partial round (5 networks
    on 2 cores: 1.08-1.19x faster than rounds of 2; README Benchmarks). Same results either way."""
    return lanes if networks % lanes == 0 or networks > 16 else networks


def _dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}%"
