"""DD-Ranking's scores (Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset Distillation",
github.com/NUS-HPC-AI-Lab/DD-Ranking), computed with this project's evaluator (`eval=ddranking`).

The `ddranking` package pins numpy < 2, so it cannot share this environment; its formulas are short:

    HLR = Acc(real, hard) - Acc(syn, hard)          hard-label recovery (lower is better)
    IOR = Acc(syn, any)   - Acc(random, any)        improvement over random (higher is better)
    alpha = w * IOR - (1 - w) * HLR,  w = lrs_weight (DD-Ranking's `lrs_lambda`, 0.5 by default)
    LRS = (exp(alpha) - exp(-1)) / (exp(1) - exp(-1))   label-robust score

with accuracies as fractions in [0, 1], so alpha is in [-1, 1] and LRS in [0, 1] (reported x 100 here, HLR and IOR
in percentage points). `any` is the set's own labels (soft when it has soft labels; for hard-label sets any = hard
and IOR compares hard with hard); `random` is a class-balanced draw of real train images with the same budget:
as many images as the set has, or for a PoDD poster as many as its pixels hold (poster area / image area). Under
soft labels the random images get the soft labels of a teacher: the first network trained on the real data.
DD-Ranking pairs the i-th run of each and reports mean and (population) std over runs; so do we, network i of
every variant sharing the seeds of evaluation unit i."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch

from ..seeding import generator


# ---------------------------------------------------------------------------------------- the formulas
def hlr(acc_real_hard: float, acc_syn_hard: float) -> float:
    """Hard-label recovery, in the unit of the accuracies."""
    return acc_real_hard - acc_syn_hard


def ior(acc_syn_any: float, acc_random_any: float) -> float:
    """Improvement over random, in the unit of the accuracies."""
    return acc_syn_any - acc_random_any


def lrs(hlr_fraction: float, ior_fraction: float, weight: float = 0.5) -> float:
    """Label-robust score in [0, 1] from HLR and IOR as fractions (accuracy differences in [-1, 1])."""
    alpha = weight * ior_fraction - (1.0 - weight) * hlr_fraction
    return (math.exp(alpha) - math.exp(-1.0)) / (math.exp(1.0) - math.exp(-1.0))


def scores(acc: dict[str, list[float]], weight: float = 0.5) -> dict:
    """Per-run and aggregated HLR / IOR (percentage points) and LRS (x 100) from per-network accuracies in %:
    acc = {"real_hard": [...], "syn_hard": [...], "syn_any": [...], "random_any": [...]}; run i pairs the i-th
    entries (a single real_hard accuracy is shared by every run)."""
    runs = len(acc["syn_hard"])
    real = acc["real_hard"] if len(acc["real_hard"]) == runs else [acc["real_hard"][0]] * runs
    per_run = []
    for i in range(runs):
        h = hlr(real[i], acc["syn_hard"][i])
        o = ior(acc["syn_any"][i], acc["random_any"][i])
        per_run.append({"hlr": h, "ior": o, "lrs": 100.0 * lrs(h / 100.0, o / 100.0, weight)})

    def stat(key):
        values = [r[key] for r in per_run]
        return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "runs": values}

    return {"hlr": stat("hlr"), "ior": stat("ior"), "lrs": stat("lrs"), "weight": weight,
            "accuracies": {k: list(v) for k, v in acc.items()}}


# ---------------------------------------------------------------------------------------- the baselines
def pixel_budget(num_items: int, extra: dict, image_hw: tuple[int, int]) -> int:
    """Images the set may hold: its item count, or for a poster the images its pixels amount to."""
    if "poster_hw" in extra:
        hp, wp = extra["poster_hw"]
        return max(1, int(hp * wp // (image_hw[0] * image_hw[1])))
    return int(num_items)


def random_subset(train_y: torch.Tensor, num_classes: int, budget: int, seed: int) -> torch.Tensor:
    """`budget` real train indices, class-balanced: budget // classes of every class and one more of
    budget % classes random classes (seeded), class-major."""
    gen = generator(seed, "ddranking-random")
    per, extra = divmod(int(budget), num_classes)
    bonus = set(torch.randperm(num_classes, generator=gen)[:extra].tolist())
    picks = []
    for c in range(num_classes):
        members = torch.nonzero(train_y == c).flatten()
        k = per + (1 if c in bonus else 0)
        picks.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.cat(picks)


@dataclass
class Variant:
    """What run_units needs of a set: model-space images and labels (the preprocessor gives the test images)."""

    images: torch.Tensor
    labels: torch.Tensor
    preprocess: object

    @property
    def soft_labels(self) -> bool:
        return self.labels.is_floating_point()


def hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """Soft labels -> the class of their largest entry (ties: the smallest class id)."""
    return labels.argmax(dim=1) if labels.is_floating_point() else labels


# ---------------------------------------------------------------------------------------- the runs
def run_ddranking(cfg, ctx, syn, report: dict, arch: str, spec, proto, augment, batched: bool, lanes: int) -> dict:
    """DD-Ranking's four accuracies for architecture `arch` (network i of each variant seeded as evaluation unit
    i), then the scores. `report` is the eval.json just built: its final accuracies are Acc(syn, any)."""
    from ..models import build_model
    from ..seeding import seeded_init
    from .data import measure_sets
    from .protocol import protocols_by_arch, resolve_protocol
    from .runner import run_units
    from .trainer import SingleLearner, train_networks
    from .units import plan_units

    d = cfg.eval.ddranking
    real, pre, seed, device = ctx.real, syn.preprocess, int(cfg.seed), ctx.device
    num_models, n = int(cfg.eval.num_models), real.num_classes
    units = plan_units([arch], num_models)
    measure = measure_sets(syn, ctx, False)

    def final_accs(variant: Variant, protocol) -> list[float]:
        out = run_units(units, {arch: spec}, variant, protocol, augment, measure, seed, "eval", device, batched, n,
                        progress=False, lanes=lanes)
        return [out[u]["final"] for u in units]

    syn_any = [m["final"] for m in report["architectures"][arch]["models"]]
    syn_hard = syn_any if not syn.soft_labels else final_accs(Variant(syn.images, hard_labels(syn.labels), pre),
                                                              proto)
    # Real data, hard labels: a known accuracy, or `real_models` networks trained `real_epochs` on the train set.
    teacher, real_accs = None, None
    if d.real_acc is not None:
        real_accs = [float(d.real_acc)]
    else:
        x_real = pre(real.train_x)
        rproto = resolve_protocol(cfg.eval, None, int(x_real.shape[0]), proto.augment, epochs=int(d.real_epochs),
                                  eval_at=[])
        real_accs = []
        for i in range(int(d.real_models)):
            with seeded_init(seed, "ddranking-real", "init", arch, i):
                net = build_model(spec, *real.image_shape[:1], n, real.image_shape[1]).to(device)
            learner = SingleLearner(net)
            curves = train_networks(learner, x_real.to(device), real.train_y.to(device), rproto, augment,
                                    [generator(seed, "ddranking-real", "data", i)], measure, device)
            real_accs.append(curves[0][-1]["test"])
            if teacher is None:  # the first real-data network labels the random images under soft labels
                teacher = net
    # Random real images at the same (pixel) budget, with the set's kind of labels.
    budget = pixel_budget(int(syn.images.shape[0]), syn.extra, tuple(real.image_shape[1:]))
    idx = random_subset(real.train_y, n, budget, seed)
    x_rand = pre(real.train_x[idx])
    y_rand, random_labels = real.train_y[idx], "hard"
    if syn.soft_labels and teacher is not None:
        teacher.eval()
        with torch.no_grad():
            y_rand = torch.softmax(teacher(x_rand.to(device)) / float(d.temperature), dim=1).cpu()
        random_labels = "teacher soft labels"
    rproto = protocols_by_arch(resolve_protocol(cfg.eval, None, int(x_rand.shape[0]), proto.augment), [arch],
                               cfg.eval)[arch]
    random_any = final_accs(Variant(x_rand, y_rand, pre), rproto)
    out = scores({"real_hard": real_accs, "syn_hard": syn_hard, "syn_any": syn_any, "random_any": random_any},
                 float(d.weight))
    out.update(architecture=arch, budget_images=budget, random_labels=random_labels,
               syn_labels="soft" if syn.soft_labels else "hard",
               real_hard="given (eval.ddranking.real_acc)" if d.real_acc is not None else
               f"{len(real_accs)} network(s), {int(d.real_epochs)} epochs on {int(real.train_x.shape[0])} images",
               formulas={"HLR": "Acc(real,hard) - Acc(syn,hard)", "IOR": "Acc(syn,any) - Acc(random,any)",
                         "LRS": "100 (exp(a) - exp(-1)) / (exp(1) - exp(-1)), a = w IOR - (1 - w) HLR (fractions)"})
    return out
