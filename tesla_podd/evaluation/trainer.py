"""Train K evaluation networks of one architecture on a synthetic set, measuring accuracy along the way.

Two learners with one training loop, so their maths cannot drift apart:
- `SingleLearner`: one `nn.Module` (any architecture, BatchNorm included);
- `StackedLearner`: K networks of one architecture as stacked parameters, one `vmap(functional_call)`
  forward for all of them (torch.func). Small sets leave a single network's kernels mostly idle, so K
  networks cost far less than K times one.
Each network k has its own generator: its batch order and augmentation draws are the same whether it is
trained alone or stacked with others, and so is its initialisation (built by the caller). The optimiser
update (SGD with momentum and weight decay, Adam) is elementwise, so one optimiser over the stacked tensors
performs exactly the K separate updates.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..synset.base import soft_cross_entropy
from ..synset.sampling import class_members, per_class_batch
from ..transfer import to_device_all
from .protocol import Protocol

Curve = list[dict]  # [{"length": L, "test": acc %, "val": acc % | None}, ...]


class SingleLearner:
    def __init__(self, model: nn.Module):
        self.model = model
        self.num_models = 1

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def logits(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.model(xs[0])]

    def shared_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).unsqueeze(0)

    def state(self, k: int = 0) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.model.named_parameters()}


class StackedLearner:
    def __init__(self, models: Sequence[nn.Module]):
        self.base = copy.deepcopy(models[0]).to("meta")  # structure only; weights come from the stacks
        params, buffers = stack_module_state(list(models))
        self.params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        self.buffers = buffers
        self.num_models = len(models)

        def call(p, b, x):
            return functional_call(self.base, (p, b), (x,))

        self._per_model = vmap(call)  # each network its own batch
        self._shared = vmap(call, in_dims=(0, 0, None))  # every network on the same images

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)

    def logits(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self._per_model(self.params, self.buffers, torch.stack(list(xs)))

    def shared_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared(self.params, self.buffers, x)

    def state(self, k: int) -> dict[str, torch.Tensor]:
        return {n: p.detach()[k] for n, p in self.params.items()}


def can_stack(model: nn.Module) -> bool:
    """Stacking needs a stateless forward: no running statistics (BatchNorm) to update in place."""
    return not any(True for _ in model.buffers())


def make_optimizer(proto: Protocol, params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if proto.optimizer == "adam":  # torch defaults, as the references' optim.Adam(lr=...)
        return torch.optim.Adam(params, lr=lr, weight_decay=proto.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=proto.momentum, weight_decay=proto.weight_decay)


def unit_batches(num_items: int, proto: Protocol, gen: torch.Generator,
                 members: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Index batches of one unit: a shuffled pass (epoch) or one random batch without replacement (step);
    `per_class` sampling (step unit): one batch of equal class shares drawn from `members`."""
    if proto.batch_sampling == "per_class":
        return [per_class_batch(members, proto.batch_size, gen)]
    perm = torch.randperm(num_items, generator=gen)
    if proto.length_unit == "epoch":
        return list(perm.split(proto.batch_size))
    return [perm[: proto.batch_size]]


@torch.no_grad()
def accuracies(learner, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> list[float]:
    """Top-1 accuracy (%) of every network on model-space images x (eval mode, chunked)."""
    learner.train(False)
    # CPU: small chunks stay in cache (chunks of 32 measured 1.1-1.6x faster than 256 on ConvNet, ResNet-18,
    # VGG-11 and ViT: scripts/bench_speed.py --accuracy-models); CUDA wants large ones.
    chunk = max(8, 32 // learner.num_models) if device.type == "cpu" else max(32, 256 // learner.num_models)
    # Counted on the device, read once at the end (x, y are there already when run_units placed them).
    correct = torch.zeros(learner.num_models, dtype=torch.long, device=device)
    for i in range(0, x.shape[0], chunk):
        pred = learner.shared_logits(x[i : i + chunk].to(device)).argmax(-1)  # [K, B]
        correct += (pred == y[i : i + chunk].to(device).view(1, -1)).sum(1)
    learner.train(True)
    return [100.0 * c / max(1, x.shape[0]) for c in correct.tolist()]


def train_networks(learner, x: torch.Tensor, y: torch.Tensor, proto: Protocol, augment,
                   gens: Sequence[torch.Generator], measure: dict[str, tuple[torch.Tensor, torch.Tensor] | None],
                   device: torch.device, progress=None,
                   on_step: Callable[[int], None] | None = None) -> list[Curve]:
    """Train every network of `learner` by `proto`; return one accuracy curve per network.

    `measure` maps a name ("test", "val") to model-space (images, labels), or None when absent; each is
    measured at every length in `proto.eval_at`."""
    k_models, n = learner.num_models, x.shape[0]
    if len(gens) != k_models:
        raise ValueError(f"{len(gens)} generators for {k_models} networks")
    lr = proto.lr
    opt = make_optimizer(proto, learner.parameters(), lr)
    curves: list[Curve] = [[] for _ in range(k_models)]
    learner.train(True)
    members = class_members(y) if proto.batch_sampling == "per_class" else None
    for done in range(1, proto.length + 1):
        # drawn on the CPU (seeded), then on x's device in one non-blocking copy per network: no sync per batch
        plans = [to_device_all(unit_batches(n, proto, g, members), x.device) for g in gens]
        for b in range(len(plans[0])):
            xs = [augment(x[plan[b]], g) for plan, g in zip(plans, gens)]
            logits = learner.logits(xs)
            loss = sum(soft_cross_entropy(logits[k], y[plans[k][b]]) for k in range(k_models))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_step is not None:
            on_step(done)
        if done == proto.decay_after:
            lr *= 0.1
            if proto.recreate_optimizer:  # MTT: a new SGD, momentum buffers start from zero
                opt = make_optimizer(proto, learner.parameters(), lr)
            else:
                for group in opt.param_groups:
                    group["lr"] = lr
        if done in proto.eval_at:
            accs = {name: (accuracies(learner, *data, device) if data is not None else [None] * k_models)
                    for name, data in measure.items()}
            for k in range(k_models):
                curves[k].append({"length": done, **{name: accs[name][k] for name in measure}})
        if progress is not None:
            progress.update(k_models)
    return curves
