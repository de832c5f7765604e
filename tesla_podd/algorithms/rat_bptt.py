"""RaT-BPTT (ALGORITHMS.md §6): random-truncated backpropagation through time.

One meta-step: a freshly initialised network (seeded by (seed, iteration)) trains on the synthetic set
for T_end ~ U{min_window … total_window} inner steps with Adam (or SGD); T_end is redrawn once per reference
epoch (a pass over the real train set in real batches, as the reference) or, with window_redraw=step, every
meta-step (the reference's --complete_random). The first T_end − window steps
run without a graph; the last `window` steps are unrolled differentiably on a flat parameter vector
(FlatModel + the hand-written Adam below, plain tensors, no `higher`). The meta loss is the cross-entropy
of the final network on an augmented batch of real images; its gradient flows into the synthetic set's
tensors (pixels or poster, and learned labels). The outer optimiser is Adam; the image gradient is clipped
at clip_coef × an EMA of its past norms. Augmentation (syn_augment / real_augment) follows the reference:
one of flip / rotate per call, affine ops with align_corners=False.

Every random draw of a meta-step is made up front by `draw` (a `Plan`), so tests can replay it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.augment import AugParams, build_augment
from ..errors import ConfigError, check_choice
from ..models import FlatModel
from ..seeding import generator, seeded_init
from ..synset.base import soft_cross_entropy
from ..synset.sampling import BATCH_SAMPLINGS, class_members, per_class_batch
from ..transfer import to_device_all
from .base import learnable_tensors

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, as in the reference implementation
ADAM_EPS = 1e-8


WINDOW_REDRAWS = ("epoch", "step")


def reference_steps_per_epoch(num_train: int, batch_real: int) -> int:
    """Meta-steps in one reference `--epoch`: a DataLoader pass over num_train images in batches of
    batch_real, the last batch kept (ceil). CIFAR 50000/5000 = 10; CUB 5994/3000 = 2; Tiny 100000/500 = 200."""
    return -(-int(num_train) // int(batch_real))


@dataclass
class Plan:
    """The random draws of one meta-step."""

    t_end: int  # inner steps in total; the last `window` of them are differentiated through
    syn_idx: list[torch.Tensor]  # per inner step: indices into the synthetic set
    syn_aug: list[AugParams]  # per inner step: augmentation of that mini-batch
    real_idx: torch.Tensor  # indices into the real train set (on the CPU, where the real images are)
    real_aug: AugParams  # augmentation of the real batch

    def to(self, device) -> Plan:
        """The draws the device uses (synthetic indices, augmentation parameters) there in one pinned,
        non-blocking copy per dtype, so no inner step waits for the GPU."""
        tensors = [*self.syn_idx, *(t for a in self.syn_aug for t in a.tensors()), *self.real_aug.tensors()]
        moved = iter(to_device_all(tensors, device))
        syn_idx = [next(moved) for _ in self.syn_idx]
        syn_aug = [a.with_tensors([next(moved) for _ in a.tensors()]) for a in self.syn_aug]
        real_aug = self.real_aug.with_tensors(list(moved))
        return Plan(self.t_end, syn_idx, syn_aug, self.real_idx, real_aug)


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite (zero) gradient at 0: Adam's second moment is exactly 0 where a parameter
    never got a gradient, and d sqrt/dv = inf there would turn the meta-gradient into NaN."""
    pos = v > 0
    return torch.where(pos, torch.where(pos, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


def adam_update(theta, g, m, v, t: int, lr: float):
    """One Adam step on flat tensors (t counts from 1); differentiable in every input.
    Same maths as torch.optim.Adam without weight decay: θ − lr · m̂ / (√v̂ + eps)."""
    b1, b2 = ADAM_BETAS
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return theta - lr * m_hat / (_safe_sqrt(v_hat) + ADAM_EPS), m, v


class RatBPTT:
    needs_buffer = False

    def __init__(self, acfg, synset, res):
        a = acfg  # this algorithm's own config node; `res`: AlgorithmResources handed in by the run
        self.synset, self.real, self.preprocess, self.device = synset, res.real, res.preprocess, res.device
        self.seed = int(res.seed)
        self.iterations = int(a.iterations)
        self.window = int(a.window)  # ΔT: differentiated inner steps
        self.total_window = int(a.total_window)  # T: the most inner steps
        self.min_window = int(a.min_window) if a.min_window is not None else self.window  # fewest inner steps
        if not 1 <= self.window <= self.total_window or not 1 <= self.min_window <= self.total_window:
            raise ConfigError(f"RaT-BPTT needs 1 <= window ({self.window}) <= total_window ({self.total_window}) "
                              f"and 1 <= min_window ({self.min_window}) <= total_window.")
        check_choice("algorithm.window_redraw", a.window_redraw, WINDOW_REDRAWS)
        self.window_redraw = str(a.window_redraw)
        check_choice("algorithm.inner_optim", a.inner_optim, ["adam", "sgd"])
        self.inner_optim, self.inner_lr = str(a.inner_optim), float(a.inner_lr)
        self.batch_syn = synset.num_items if a.batch_syn is None else min(int(a.batch_syn), synset.num_items)
        self.batch_real = min(int(a.batch_real), int(self.real.train_x.shape[0]))
        # One reference epoch = one pass over the real train set in real batches (the budget unit of --epoch).
        self.steps_per_epoch = reference_steps_per_epoch(int(self.real.train_x.shape[0]), self.batch_real)
        check_choice("algorithm.batch_sampling", a.get("batch_sampling", "uniform"), BATCH_SAMPLINGS)
        # per_class: every inner batch holds batch_syn // classes items of each class (the reference's subsample);
        # classes are read once from the initial labels (class-major pixels; a poster's patches by majority)
        self.members = class_members(synset.materialize().y) if a.get("batch_sampling") == "per_class" else None
        if self.batch_syn < 1 or self.batch_real < 1:
            raise ConfigError(f"`algorithm.batch_syn` ({a.batch_syn}) and `algorithm.batch_real` "
                              f"({a.batch_real}) must be positive.")
        self.syn_aug = build_augment(**a.syn_augment)  # name: dsa|none, strategy, mode
        self.real_aug = build_augment(**a.real_augment)
        self.clip_coef, self.ema_decay = float(a.clip_coef), float(a.ema_decay)
        self.grad_ema: float | None = None  # EMA of the image-gradient norm (None before the first step)

        groups = synset.param_groups()
        self.dtype = groups["images"][0].dtype  # the inner loop runs in the synthetic set's dtype (float64 in tests)
        c, h, w = self.real.image_shape
        self.hw = (h, w)
        self.make_model = res.make_model  # a fresh network of the configured `model` (CPU, current RNG)
        # Only a template for functional calls: every meta-step draws fresh parameters (init_theta).
        self.flat = FlatModel(self.make_model().to(self.device, self.dtype))
        self.opts = [torch.optim.Adam(groups["images"], lr=float(a.lr_img))]
        if "labels" in groups:
            self.opts.append(torch.optim.Adam(groups["labels"], lr=float(a.lr_label)))

    # ---- Distiller protocol ----
    def optimizers(self):
        return self.opts

    def meta_step(self, it: int, gen: torch.Generator) -> dict[str, float]:
        plan = self.draw(gen, it).to(self.device)
        metrics = self.backward(self.init_theta(it), plan)
        metrics.update(self.clip_image_grad())
        return metrics

    def eval_lr(self):
        return None  # nothing learned: evaluate with the inner optimiser (eval=adam, lr 1e-3)

    def final_labels(self):
        return None

    def state_dict(self) -> dict:
        return {"grad_ema": self.grad_ema}

    def load_state_dict(self, state: dict) -> None:
        self.grad_ema = state["grad_ema"]

    # ---- the pieces of a meta-step ----
    def draw_t_end(self, gen: torch.Generator, it: int | None = None) -> int:
        """T_end of meta-step `it`. window_redraw=step: a fresh draw from `gen`. window_redraw=epoch: one draw
        per reference epoch (as the reference, which draws its window at the start of each pass over the real
        set), from a stream keyed by the epoch index, so a resumed run gets the same windows."""
        if self.window_redraw == "epoch" and it is not None:
            gen = generator(self.seed, "rat_bptt-window", it // self.steps_per_epoch)
        return int(torch.randint(self.min_window, self.total_window + 1, (1,), generator=gen))

    def draw(self, gen: torch.Generator, it: int | None = None) -> Plan:
        t_end = self.draw_t_end(gen, it)
        n = self.synset.num_items
        syn_idx, syn_aug = [], []
        for _ in range(t_end):
            if self.members is not None:
                idx = per_class_batch(self.members, self.batch_syn, gen)
            else:
                idx = torch.randperm(n, generator=gen)[: self.batch_syn]
            syn_idx.append(idx)
            syn_aug.append(self.syn_aug.sample(len(idx), self.hw, gen))
        real_idx = torch.randperm(int(self.real.train_x.shape[0]), generator=gen)[: self.batch_real]
        return Plan(t_end, syn_idx, syn_aug, real_idx, self.real_aug.sample(self.batch_real, self.hw, gen))

    def init_theta(self, it: int) -> torch.Tensor:
        """Flat parameters of a fresh network for iteration `it` (the same after a resume)."""
        with seeded_init(self.seed, "rat_bptt", it):
            net = self.make_model()
        return self.flat.flatten(net).to(self.device, self.dtype)

    def real_batch(self, plan: Plan) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented model-space real images and their labels (preprocessed on the device: ZCA is a matmul)."""
        x, y = to_device_all([self.real.train_x[plan.real_idx], self.real.train_y[plan.real_idx]], self.device)
        return self.real_aug.apply(self.preprocess(x).to(self.dtype), plan.real_aug), y

    def _inner_step(self, theta, m, v, t: int, plan: Plan, graph: bool):
        """Inner step t (0-based) of the plan. graph=False: nothing is recorded for the synthetic set."""
        with torch.set_grad_enabled(graph):
            b = self.synset.sample(plan.syn_idx[t])
            x = self.syn_aug.apply(b.x, plan.syn_aug[t])
        if not graph:
            theta = theta.detach().requires_grad_(True)
        loss = soft_cross_entropy(self.flat(theta, x), b.y)
        (g,) = torch.autograd.grad(loss, theta, create_graph=graph)
        with torch.set_grad_enabled(graph):
            if self.inner_optim == "sgd":
                theta = theta - self.inner_lr * g
            else:
                theta, m, v = adam_update(theta, g, m, v, t + 1, self.inner_lr)
        if not graph:
            theta, m, v = theta.detach(), m.detach(), v.detach()
        return theta, m, v, loss.detach()

    def backward(self, theta0: torch.Tensor, plan: Plan) -> dict[str, float]:
        """Run the plan from theta0 and add the truncated meta-gradient to the synthetic set's .grad."""
        theta, m, v = theta0.detach(), torch.zeros_like(theta0), torch.zeros_like(theta0)
        cut = plan.t_end - self.window  # steps before `cut` carry no graph
        inner_loss = torch.tensor(float("nan"))
        for t in range(plan.t_end):
            if t == max(cut, 0):  # start of the differentiated window: θ_cut is a constant leaf
                theta = theta.detach().requires_grad_(True)
            theta, m, v, inner_loss = self._inner_step(theta, m, v, t, plan, graph=t >= cut)
        x, y = self.real_batch(plan)
        logits = self.flat(theta, x)
        loss = F.cross_entropy(logits, y)
        tensors = learnable_tensors(self.synset)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for p, g in zip(tensors, grads):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
        acc = (logits.argmax(1) == y).float().mean().item() * 100
        return {"loss": loss.item(), "meta_acc": acc, "inner_loss": float(inner_loss), "t_end": float(plan.t_end)}

    def clip_image_grad(self) -> dict[str, float]:
        """EMA the image-gradient norm, then clip the gradient at clip_coef × EMA (no clip at the first step:
        the EMA then equals the norm)."""
        grads = [p.grad for p in self.synset.param_groups()["images"] if p.grad is not None]
        norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))) if grads else 0.0
        self.grad_ema = norm if self.grad_ema is None else self.ema_decay * self.grad_ema + (1 - self.ema_decay) * norm
        limit = self.clip_coef * self.grad_ema
        if norm > limit > 0:
            for g in grads:
                g.mul_(limit / norm)
        return {"grad_norm": norm, "grad_ema": self.grad_ema}
